//! Percent-decoding of path segments and query parameters (RFC 3986 §2.1), just what routing needs.

use std::borrow::Cow;

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, as in form-encoded queries).
/// `None` when the result is not UTF-8 or an escape is malformed.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !text.contains(['%', '+']) {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(value);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The first value of a query parameter, decoded. `Some(Err(()))` when present but undecodable.
pub(crate) fn param<'a>(query: Option<&'a str>, name: &str) -> Option<Result<Cow<'a, str>, ()>> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value, true).ok_or(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(percent_decode("room%3A1", false).unwrap(), "room:1");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(percent_decode("%4", false), None);
    }

    #[test]
    fn finds_parameters() {
        let query = Some("transport=sse&cursor=AQ-_&history=5&flag");
        assert_eq!(param(query, "cursor").unwrap().unwrap(), "AQ-_");
        assert_eq!(param(query, "history").unwrap().unwrap(), "5");
        assert_eq!(param(query, "flag").unwrap().unwrap(), "");
        assert!(param(query, "missing").is_none());
        assert!(param(None, "cursor").is_none());
        assert!(param(Some("callback=%zz"), "callback").unwrap().is_err());
    }
}
