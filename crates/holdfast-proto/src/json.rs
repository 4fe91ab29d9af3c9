//! JSON string escaping (RFC 8259 §7) for envelopes built without a serializer, so one message's
//! envelope is written once, straight into the bytes every subscriber shares.

use bytes::{BufMut, BytesMut};

/// Writes `value` as a JSON string literal, quotes included.
///
/// Besides what JSON requires, `<`, `>`, `&`, U+2028 and U+2029 are written as `\uXXXX`: the
/// iframe transport places envelopes inside `<script>`, where `</script>` in a payload would end
/// the script and the two separators end a line in older JavaScript engines.
pub fn put_string(out: &mut BytesMut, value: &str) {
    out.put_u8(b'"');
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => b"",
            _ => continue,
        };
        out.put_slice(&value.as_bytes()[start..i]);
        if short.is_empty() {
            out.put_slice(format!("\\u{:04x}", c as u32).as_bytes());
        } else {
            out.put_slice(short);
        }
        start = i + c.len_utf8();
    }
    out.put_slice(&value.as_bytes()[start..]);
    out.put_u8(b'"');
}

/// Writes `value`, a JSON text already checked to be valid, so it can sit inside an envelope on
/// every transport: `<`, `>`, `&`, U+2028 and U+2029 (which valid JSON holds only inside
/// strings) become `\uXXXX` as in [`put_string`], and CR/LF (only ever whitespace between tokens)
/// become spaces, so an NDJSON envelope stays on one line. The value it denotes is unchanged.
pub fn put_json(out: &mut BytesMut, value: &str) {
    out.reserve(value.len());
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let replacement: &[u8] = match c {
            '\n' | '\r' => b" ",
            '<' => b"\\u003c",
            '>' => b"\\u003e",
            '&' => b"\\u0026",
            '\u{2028}' => b"\\u2028",
            '\u{2029}' => b"\\u2029",
            _ => continue,
        };
        out.put_slice(&value.as_bytes()[start..i]);
        out.put_slice(replacement);
        start = i + c.len_utf8();
    }
    out.put_slice(&value.as_bytes()[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = BytesMut::new();
        put_string(&mut out, value);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// A minimal JSON string reader for the round-trip check (proto has no serde).
    fn serde_json_free_parse(literal: &str) -> String {
        let inner = &literal[1..literal.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next().unwrap() {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn escapes_quotes_controls_and_line_separators() {
        assert_eq!(escaped("plain"), "\"plain\"");
        assert_eq!(escaped("a\"b\\c\nd\re\tf\u{1}g"), "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\"");
        assert_eq!(escaped("x\u{2028}y\u{2029}é"), "\"x\\u2028y\\u2029é\"");
        assert_eq!(escaped("</script>&"), "\"\\u003c/script\\u003e\\u0026\"");
        // Whatever is escaped, a JSON parser reads back the original.
        let tricky = "a\u{2028}<b>\"\\\u{7}é\u{1F600}";
        let parsed: String = serde_json_free_parse(&escaped(tricky));
        assert_eq!(parsed, tricky);
    }

    #[test]
    fn json_values_are_made_safe_for_script_and_one_line() {
        let mut out = BytesMut::new();
        put_json(&mut out, "{\n  \"html\": \"</script>&\u{2028}\",\r\n  \"n\": [1, 2]\n}");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{   \"html\": \"\\u003c/script\\u003e\\u0026\\u2028\",    \"n\": [1, 2] }"
        );
    }
}
