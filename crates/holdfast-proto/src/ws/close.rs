//! Close codes (RFC 6455 §7.4, with the IANA registry's later additions) and encoding close
//! frames (§5.5.1).
//!
//! What it does not own: reading a peer's close frame (see [`super::codec`]) and the close
//! handshake's timing (the server's).

use bytes::BytesMut;

use super::frame::{self, OpCode, MAX_CONTROL_PAYLOAD};

/// 1000: the purpose of the connection has been fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutdown, page navigated away).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a message of a type the endpoint cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: a message's data is inconsistent with its type (non-UTF-8 text).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message violates the endpoint's policy.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message is too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1012: the server is restarting (IANA registry); clients may reconnect.
pub const SERVICE_RESTART: u16 = 1012;

/// The longest close reason: a control payload is at most 125 bytes, 2 of which are the code
/// (RFC 6455 §5.5, §5.5.1).
pub const MAX_REASON_BYTES: usize = MAX_CONTROL_PAYLOAD - 2;

/// Whether a peer may send `code` in a close frame.
///
/// Valid: 1000–1003 and 1007–1014 (RFC 6455 §7.4.1 and the IANA registry), 3000–3999 (registered
/// by libraries and frameworks) and 4000–4999 (private use), §7.4.2. Invalid: 0–999 (unused),
/// 1004 (reserved), 1005, 1006 and 1015 (RFC 6455 §7.4.1: "MUST NOT be set as a status code in a
/// Close control frame"), 1016–2999 (reserved for future protocol revisions) and 5000 and up.
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends a close frame holding `code` and `reason` to `out`. The reason is cut at a character
/// boundary to fit [`MAX_REASON_BYTES`], so the frame is always a valid control frame.
pub fn put_close(out: &mut BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let (head, head_len) = frame::header(true, OpCode::Close, 2 + reason.len() as u64);
    out.reserve(head_len + 2 + reason.len());
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_table() {
        let cases: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1008, true),
            (1009, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (1100, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (u16::MAX, false),
        ];
        for &(code, valid) in cases {
            assert_eq!(is_valid_code(code), valid, "{code}");
        }
        for code in [NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_PAYLOAD, POLICY_VIOLATION] {
            assert!(is_valid_code(code), "{code}");
        }
        for code in [MESSAGE_TOO_BIG, INTERNAL_ERROR, SERVICE_RESTART] {
            assert!(is_valid_code(code), "{code}");
        }
    }

    #[test]
    fn put_close_writes_code_and_reason() {
        let mut out = BytesMut::new();
        put_close(&mut out, NORMAL, "bye");
        assert_eq!(&out[..], b"\x88\x05\x03\xe8bye");
        let mut out = BytesMut::new();
        put_close(&mut out, GOING_AWAY, "");
        assert_eq!(&out[..], b"\x88\x02\x03\xe9");
    }

    #[test]
    fn put_close_cuts_a_long_reason_at_a_char_boundary() {
        // 122 ASCII bytes then a 3-byte character: 125 would not fit, so the character goes.
        let reason = format!("{}€tail", "a".repeat(122));
        let mut out = BytesMut::new();
        put_close(&mut out, SERVICE_RESTART, &reason);
        assert_eq!(out[1] as usize, 2 + 122);
        assert_eq!(&out[4..], "a".repeat(122).as_bytes());
        // Exactly 123 bytes fits whole.
        let reason = "é".repeat(61) + "a";
        let mut out = BytesMut::new();
        put_close(&mut out, NORMAL, &reason);
        assert_eq!(out[1] as usize, 125);
        assert_eq!(&out[4..], reason.as_bytes());
        // Anything longer is cut to at most 123 bytes and stays UTF-8.
        for extra in 0..8 {
            let reason = format!("{}{}", "b".repeat(extra), "😀".repeat(40));
            let mut out = BytesMut::new();
            put_close(&mut out, NORMAL, &reason);
            assert!(out.len() - 4 <= MAX_REASON_BYTES && out.len() - 4 > MAX_REASON_BYTES - 4);
            assert!(std::str::from_utf8(&out[4..]).is_ok());
        }
    }
}
