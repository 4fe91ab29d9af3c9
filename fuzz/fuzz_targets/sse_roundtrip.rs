//! SSE encoder → parser round trip on any event type and payload, with the stream split at a
//! fuzzer-chosen byte.
//!
//! Checks: the parser yields exactly one event; its data equals the payload with CRLF and CR
//! turned into LF (the WHATWG line rules); its id is the id written; its type is the one written
//! (with CR/LF/NUL replaced) or `message`; and nothing the payload holds can add a field or a
//! second event.
#![no_main]

use bytes::BytesMut;
use holdfast_proto::sse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (event, payload) = match text.split_once('\u{0}') {
        Some((event, payload)) => (Some(event), payload),
        None => (None, text.as_ref()),
    };
    let mut wire = BytesMut::new();
    sse::put_id_line(&mut wire, b"AQID-_x");
    sse::put_event_body(&mut wire, event, payload);

    let at = (split as usize * wire.len() / 256).min(wire.len());
    let mut parser = sse::Parser::default();
    let mut events = parser.feed(&wire[..at]);
    events.extend(parser.feed(&wire[at..]));
    assert_eq!(events.len(), 1, "{wire:?}");
    let got = &events[0];
    assert_eq!(got.id, "AQID-_x");
    assert_eq!(got.data, payload.replace("\r\n", "\n").replace('\r', "\n"));
    let want_event = match event {
        Some(e) if !e.is_empty() && e != "message" => e.replace(['\r', '\n', '\0'], " "),
        _ => "message".to_string(),
    };
    // An event type of spaces only still names a type; the parser keeps it as written.
    assert_eq!(got.event, want_event);
});
