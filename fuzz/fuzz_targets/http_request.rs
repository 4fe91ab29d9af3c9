//! `parse_request` on arbitrary bytes, with small limits and with the defaults.
//!
//! Checks: it never panics; every accessor of a parsed head works; and the answer does not depend
//! on how the bytes arrived. The first input byte picks an offset; the rest is fed in two parts
//! split there. A head found in the first part, an error on the first part, or the answer after
//! the second part must equal the answer for the whole input at once (same method, target,
//! version, framing and headers, same bytes left over; same error variant).
#![no_main]

use bytes::BytesMut;
use holdfast_proto::http1::{parse_request, RequestHead};
use holdfast_proto::{Limits, ParseError};
use libfuzzer_sys::fuzz_target;

/// What two parses must agree on: the head's fields, or the error.
type Outcome = Result<Option<String>, ParseError>;

fuzz_target!(|data: &[u8]| {
    let Some((&split_byte, input)) = data.split_first() else { return };
    // Scale the byte over the whole input, so long inputs can be split late too.
    let split = split_byte as usize * (input.len() + 1) / 256;
    let small = Limits { max_header_bytes: 1024, max_uri_bytes: 256, max_headers: 16, ..Limits::default() };
    for limits in [small, Limits::default()] {
        check(input, split, &limits);
    }
});

fn check(input: &[u8], split: usize, limits: &Limits) {
    let mut buf = BytesMut::from(input);
    let whole = outcome(parse_request(&mut buf, limits), &buf);

    let mut buf = BytesMut::from(&input[..split]);
    let first = parse_request(&mut buf, limits);
    buf.extend_from_slice(&input[split..]);
    // A head or an error from the first part stands; "need more" parses again with everything.
    let got = match first {
        Ok(None) => parse_request(&mut buf, limits),
        done => done,
    };
    assert_eq!(outcome(got, &buf), whole, "split at {split}");
}

/// Summarizes a parse (calling every accessor of the head) with the bytes it left behind.
fn outcome(parsed: Result<Option<RequestHead>, ParseError>, rest: &[u8]) -> Outcome {
    Ok(parsed?.map(|head| format!("{} | rest {rest:?}", summary(&head))))
}

fn summary(head: &RequestHead) -> String {
    let headers: Vec<_> = head.headers().collect();
    let hosts: Vec<_> = head.headers_named("host").collect();
    assert!(hosts.len() <= 1, "more than one Host accepted");
    assert_eq!(head.header("host"), hosts.first().copied());
    assert!(head.target().starts_with(head.path()));
    if let Some(query) = head.query() {
        assert!(head.target().ends_with(query));
    }
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} wire_len={} {:?} {:?}",
        head.method(),
        head.method_str(),
        head.target(),
        head.path(),
        head.query(),
        head.version(),
        head.framing,
        head.connection,
        head.expects_continue,
        head.wire_len(),
        head.header("host"),
        headers,
    )
}
