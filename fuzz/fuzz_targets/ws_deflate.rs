//! permessage-deflate: `inflate` on arbitrary bytes, and compress → inflate round trips.
//!
//! Input: one byte choosing the window (9 + n % 7 bits) and the cap, one byte splitting the rest
//! into a prefix and a message. Checks: `inflate` of the raw bytes never panics, never returns
//! more than the cap, and fails only with 1007 or 1009; a message compressed by
//! `MessageDeflater` (when it compresses) inflates back to itself, and behind a stored block
//! holding the prefix (how the push path sends a subscriber's own cursor) to prefix + message;
//! over a cap smaller than that, it fails with 1009.
#![no_main]

use holdfast_proto::ws::close;
use holdfast_proto::ws::deflate::{inflate, put_stored_block, MessageDeflater, STORED_BLOCK_OVERHEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [choice, split, rest @ ..] = data else { return };
    let cap = [16, 1024, 1 << 20][usize::from(*choice / 7) % 3];
    match inflate(rest, cap) {
        Ok(out) => assert!(out.len() <= cap),
        Err(e) => assert!(matches!(e.code, close::INVALID_PAYLOAD | close::MESSAGE_TOO_BIG), "{e:?}"),
    }

    let window = 9 + choice % 7;
    let cut = usize::from(*split).min(rest.len());
    let (prefix, message) = rest.split_at(cut);
    let Some(compressed) = MessageDeflater::new(window).deflate(message, STORED_BLOCK_OVERHEAD + prefix.len()) else {
        return;
    };
    assert!(compressed.len() + STORED_BLOCK_OVERHEAD + prefix.len() < message.len());
    assert_eq!(inflate(&compressed, message.len()).expect("own output inflates"), message);
    let mut framed = Vec::new();
    put_stored_block(&mut framed, prefix);
    framed.extend_from_slice(&compressed);
    let whole = [prefix, message].concat();
    assert_eq!(inflate(&framed, whole.len()).expect("prefixed output inflates"), whole);
    assert_eq!(inflate(&framed, whole.len() - 1).unwrap_err().code, close::MESSAGE_TOO_BIG);
});
