//! The cursor decoder on any text, and the encoder on any positions.
//!
//! Checks: `Cursor::decode` never panics; a cursor it accepts encodes back to text that decodes
//! to the same cursor; and a cursor built from arbitrary (name, epoch, seq) triples survives
//! encode → decode with every position intact.
#![no_main]

use holdfast_hub::{Cursor, Position};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cursor) = Cursor::decode(&text) {
        let again = Cursor::decode(&cursor.encode()).expect("an encoded cursor decodes");
        assert_eq!(again, cursor);
    }

    // Positions from the bytes: 13 bytes each (1 name byte, 4 epoch, 8 seq), at most 64 channels.
    let names: Vec<String> = (0..64).map(|i| format!("channel-{i}")).collect();
    let mut positions = Vec::new();
    for chunk in data.chunks_exact(13).take(64) {
        let name = &names[chunk[0] as usize % names.len()];
        let epoch = u32::from_le_bytes(chunk[1..5].try_into().unwrap());
        let seq = u64::from_le_bytes(chunk[5..13].try_into().unwrap());
        positions.retain(|(n, _): &(&str, Position)| *n != name.as_str());
        positions.push((name.as_str(), Position { epoch, seq }));
    }
    let cursor = Cursor::new(positions.iter().copied());
    let text = cursor.encode();
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "not URL-safe: {text}");
    let back = Cursor::decode(&text).expect("an encoded cursor decodes");
    for (name, position) in &positions {
        assert_eq!(back.position(name), Some(*position));
    }
});
