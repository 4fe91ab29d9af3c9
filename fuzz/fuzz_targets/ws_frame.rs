//! The WebSocket `Decoder` on client frames, fed in pieces the fuzzer chooses.
//!
//! Input: one byte `n`, then `n % 8` piece lengths (one byte each, 0 = an empty feed), then the
//! bytes on the wire; what is left after the last length is the final piece. Checks, with
//! `max_message` 64 KiB and 16 bytes, each without and with permessage-deflate (RSV1 messages
//! inflated): never a panic; a call never adds to the buffer; the events,
//! the error and (when input runs out) the bytes left and whether a message is in progress are
//! the same fed whole, in the chosen pieces and one byte at a time; every `Text` is valid UTF-8;
//! messages fit `max_message`, control payloads 125 bytes, close codes are valid; and errors carry
//! 1002, 1007 or 1009.
#![no_main]

use bytes::BytesMut;
use holdfast_proto::ws::close;
use holdfast_proto::ws::{Decoder, Event, ProtocolError};
use libfuzzer_sys::fuzz_target;

#[path = "common/pieces.rs"]
mod pieces;

/// Everything one run produced: the events, then the error, or on running out of input the bytes
/// still buffered and whether a fragmented message was in progress.
type Outcome = (Vec<Event>, Result<(Vec<u8>, bool), ProtocolError>);

fuzz_target!(|data: &[u8]| {
    let Some((wire, pieces)) = pieces::split(data) else { return };

    for (max_message, deflate) in [(64 * 1024, false), (16, false), (64 * 1024, true), (16, true)] {
        let decoder = if deflate { Decoder::with_deflate(max_message) } else { Decoder::new(max_message) };
        let decode = |pieces: &[&[u8]]| decode(decoder.clone(), pieces, max_message);
        let whole = decode(&[wire]);
        assert_eq!(
            decode(&pieces),
            whole,
            "pieces of {:?} bytes",
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(&bytes), whole, "one byte at a time");
    }
});

fn decode(mut decoder: Decoder, pieces: &[&[u8]], max_message: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pieces = pieces.iter();
    loop {
        let before = buf.len();
        let result = decoder.decode(&mut buf);
        assert!(buf.len() <= before, "decode added to the buffer");
        match result {
            Ok(Some(event)) => {
                check(&event, max_message);
                events.push(event);
            }
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return (events, Ok((buf.to_vec(), decoder.is_assembling()))),
            },
            Err(e) => {
                assert!(
                    matches!(e.code, close::PROTOCOL_ERROR | close::INVALID_PAYLOAD | close::MESSAGE_TOO_BIG),
                    "{e:?}"
                );
                return (events, Err(e));
            }
        }
    }
}

fn check(event: &Event, max_message: usize) {
    match event {
        Event::Text(text) => {
            assert!(std::str::from_utf8(text).is_ok(), "Text is not UTF-8");
            assert!(text.len() <= max_message);
        }
        Event::Binary(data) => assert!(data.len() <= max_message),
        Event::Ping(data) | Event::Pong(data) => assert!(data.len() <= 125),
        Event::Close { code, reason } => {
            assert!(code.is_some() || reason.is_empty());
            assert!(code.is_none_or(close::is_valid_code));
            assert!(reason.len() <= 123);
        }
    }
}
