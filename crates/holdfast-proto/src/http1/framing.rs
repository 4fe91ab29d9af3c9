//! How long a request body is: RFC 9112 §6, and the request-smuggling rules, in one place.
//!
//! Holdfast is stricter than the RFC where the RFC permits a guess: a request carrying both
//! Content-Length and Transfer-Encoding is refused rather than decoded as chunked, because an
//! intermediary in front of us may have framed it the other way (RFC 9112 §6.3 ¶3, §11.2).

use super::request::{trim_ows, Version};
use crate::ParseError;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length, no Transfer-Encoding: RFC 9112 §6.3 ¶7).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// The chunked transfer coding (RFC 9112 §7.1).
    Chunked,
}

/// Decides the framing of a request body from its header fields, or refuses the request.
pub fn request_framing<'a>(
    version: Version,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<BodyFraming, ParseError> {
    let mut content_length: Option<u64> = None;
    let mut has_transfer_encoding = false;
    let mut chunked_count = 0u32;
    let mut last_is_chunked = false;
    let mut unknown_coding = false;

    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of identical values may be accepted; anything else is an error.
            for element in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(element)).ok_or(ParseError::InvalidContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(ParseError::InvalidContentLength),
                    _ => content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_transfer_encoding = true;
            for element in value.split(|&b| b == b',') {
                let coding = trim_ows(element);
                if coding.is_empty() {
                    // RFC 9110 §5.6.1: empty list elements are ignored.
                    continue;
                }
                let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
                if is_chunked {
                    chunked_count += 1;
                } else {
                    // gzip, deflate, compress and anything unknown: none is implemented here.
                    unknown_coding = true;
                }
                last_is_chunked = is_chunked;
            }
        }
    }

    if has_transfer_encoding {
        // RFC 9112 §6.1 ¶15: a 1.0 message with Transfer-Encoding is faulty framing; close after.
        if version == Version::Http10 {
            return Err(ParseError::TransferEncodingInHttp10);
        }
        if content_length.is_some() {
            return Err(ParseError::ContentLengthWithTransferEncoding);
        }
        // RFC 9112 §6.3 ¶4: the final coding must be chunked, and chunked applies once (§7).
        if !last_is_chunked || chunked_count > 1 {
            return Err(ParseError::ChunkedNotFinal);
        }
        // RFC 9112 §6.1 ¶13: a coding we do not understand is a 501.
        if unknown_coding {
            return Err(ParseError::UnsupportedTransferCoding);
        }
        return Ok(BodyFraming::Chunked);
    }
    Ok(match content_length {
        Some(0) | None => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
    })
}

/// `1*DIGIT` as a u64: no sign, no whitespace inside, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(version: Version, fields: &[(&'static str, &'static str)]) -> Result<BodyFraming, ParseError> {
        request_framing(version, fields.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn framing_table() {
        use BodyFraming::*;
        use ParseError::*;
        let v11 = Version::Http11;
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(Fields, Result<BodyFraming, ParseError>)] = &[
            (&[], Ok(None)),
            (&[("Content-Length", "0")], Ok(None)),
            (&[("Content-Length", "42")], Ok(Length(42))),
            (&[("content-length", " 42 ")], Ok(Length(42))),
            (&[("Content-Length", "42, 42")], Ok(Length(42))),
            (&[("Content-Length", "42"), ("Content-Length", "42")], Ok(Length(42))),
            (&[("Content-Length", "42"), ("Content-Length", "43")], Err(InvalidContentLength)),
            (&[("Content-Length", "42, 43")], Err(InvalidContentLength)),
            (&[("Content-Length", "+42")], Err(InvalidContentLength)),
            (&[("Content-Length", "-1")], Err(InvalidContentLength)),
            (&[("Content-Length", "4 2")], Err(InvalidContentLength)),
            (&[("Content-Length", "0x10")], Err(InvalidContentLength)),
            (&[("Content-Length", "")], Err(InvalidContentLength)),
            (&[("Content-Length", "99999999999999999999")], Err(InvalidContentLength)),
            (&[("Transfer-Encoding", "chunked")], Ok(Chunked)),
            (&[("Transfer-Encoding", "Chunked")], Ok(Chunked)),
            (&[("Transfer-Encoding", "chunked"), ("Content-Length", "5")], Err(ContentLengthWithTransferEncoding)),
            (&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")], Err(ContentLengthWithTransferEncoding)),
            (&[("Transfer-Encoding", "gzip")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", "chunked, gzip")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", "chunked, chunked")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", "gzip, chunked")], Err(UnsupportedTransferCoding)),
            (&[("Transfer-Encoding", "foo"), ("Transfer-Encoding", "chunked")], Err(UnsupportedTransferCoding)),
            (&[("Transfer-Encoding", "")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", "chunked;q=1")], Err(ChunkedNotFinal)),
            (&[("Transfer-Encoding", " , chunked")], Ok(Chunked)),
        ];
        for (fields, want) in cases {
            assert_eq!(framing(v11, fields), *want, "{fields:?}");
        }
    }

    #[test]
    fn http10_with_transfer_encoding_is_refused() {
        assert_eq!(
            framing(Version::Http10, &[("Transfer-Encoding", "chunked")]),
            Err(ParseError::TransferEncodingInHttp10)
        );
        assert_eq!(framing(Version::Http10, &[("Content-Length", "3")]), Ok(BodyFraming::Length(3)));
    }
}
