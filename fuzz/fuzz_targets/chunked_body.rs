//! `BodyDecoder` for a chunked body, fed in pieces the fuzzer chooses.
//!
//! Input: one byte `n`, then `n % 8` piece lengths (one byte each, 0 = an empty feed), then the
//! bytes on the wire; what is left after the last length is the final piece. Checks, with small
//! limits and with the defaults: never a panic; every `decode` call makes progress (a non-empty
//! `Data`, `NeedMore`, `End` or an error, so no endless loop); the body decoded, the error and the
//! bytes left after `End` are the same fed whole, in the chosen pieces and one byte at a time; and
//! the body never exceeds `max_body_bytes`.
#![no_main]

use bytes::BytesMut;
use holdfast_proto::http1::{BodyDecoder, BodyFraming, Decoded};
use holdfast_proto::{Limits, ParseError};
use libfuzzer_sys::fuzz_target;

#[path = "common/pieces.rs"]
mod pieces;

/// How a body ended: `Ok(Some(rest))` after `End` with the bytes left over, `Ok(None)` when the
/// input ran out first, or the error; with the body bytes decoded until then.
type Outcome = (Vec<u8>, Result<Option<Vec<u8>>, ParseError>);

fuzz_target!(|data: &[u8]| {
    let Some((wire, pieces)) = pieces::split(data) else { return };

    let small = Limits { max_body_bytes: 64, max_chunk_ext_bytes: 16, max_trailer_bytes: 32, ..Limits::default() };
    for limits in [small, Limits::default()] {
        let whole = decode(&[wire], &limits);
        assert_eq!(
            decode(&pieces, &limits),
            whole,
            "pieces of {:?} bytes",
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(&bytes, &limits), whole, "one byte at a time");
    }
});

fn decode(pieces: &[&[u8]], limits: &Limits) -> Outcome {
    let mut decoder = BodyDecoder::new(BodyFraming::Chunked, limits).expect("chunked never fails up front");
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = pieces.iter();
    let end = loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "empty Data would loop forever");
                assert!(buf.len() + data.len() <= before, "data not taken from the buffer");
                body.extend_from_slice(&data);
                assert!(body.len() as u64 <= limits.max_body_bytes, "body over max_body_bytes");
                assert!(decoder.received() <= limits.max_body_bytes);
            }
            Ok(Decoded::End) => {
                assert!(decoder.is_done());
                // A second call stays at End and takes nothing.
                assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
                let mut rest = buf.to_vec();
                pieces.for_each(|piece| rest.extend_from_slice(piece));
                break Ok(Some(rest));
            }
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break Ok(None),
            },
            Err(e) => break Err(e),
        }
    };
    (body, end)
}
