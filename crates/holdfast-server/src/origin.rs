//! Origins as browsers send them (`scheme://host[:port]`, RFC 6454 §6.2) and the entries of
//! `cors_origins` that match them: `*`, an exact origin, or a subdomain pattern
//! `scheme://*.domain[:port]`. Also the server's own origin. What a request may do with its
//! origin is decided in `cors`, not here.
//!
//! A pattern's `*` is a whole leftmost label and stands for one or more DNS labels: it never
//! matches the bare domain, and never reaches across the scheme or the port, which must match
//! exactly. Comparisons ignore ASCII case (browsers send hosts in lower case; configurations may
//! not be written so).

/// The scheme of the server's own pages: `https` when the listener speaks TLS (it then speaks
/// nothing else), else `http`. A page served over TLS has an `https://` origin, and an
/// `http://` origin naming the same host is another origin (and no page of ours).
pub(crate) fn served_scheme(config: &crate::config::Config) -> &'static str {
    if config.tls_cert.is_empty() {
        "http"
    } else {
        "https"
    }
}

/// An origin split into its parts, borrowed from its text.
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    /// The port as written; `None` when absent (the scheme's default).
    port: Option<&'a str>,
}

/// Splits `scheme://host[:port]`; `None` for anything else (a path, userinfo, a bad port, a
/// scheme other than http or https, an empty host).
fn split(text: &str) -> Option<Parts<'_>> {
    let (scheme, authority) = split_scheme(text)?;
    let (host, port) = split_authority(authority)?;
    Some(Parts { scheme, host, port })
}

/// `http` or `https`, and what follows `://`.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = text.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some((scheme, authority))
}

/// Splits `host[:port]` (the host a DNS name, an IPv4 address or a bracketed IPv6 literal).
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[…]` then an optional `:port`.
        Some(inner) => {
            let close = inner.find(']')?;
            let host = &authority[..close + 2];
            match &inner[close + 1..] {
                "" => (host, None),
                rest => (host, Some(rest.strip_prefix(':')?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = if host.starts_with('[') {
        host.len() > 2 && host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        is_labels(host, 1)
    };
    let port_ok = port
        .is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0));
    (host_ok && port_ok).then_some((host, port))
}

/// A subdomain pattern `scheme://*.domain[:port]` split into its parts, `host` being the domain
/// after `*.`; `None` if `entry` is not one.
fn split_pattern(entry: &str) -> Option<Parts<'_>> {
    let (scheme, authority) = split_scheme(entry)?;
    let (host, port) = split_authority(authority.strip_prefix("*.")?)?;
    Some(Parts { scheme, host, port })
}

/// Whether `host` is at least `min` dot-separated labels of letters, digits, `-` and `_`, none
/// empty.
fn is_labels(host: &str, min: usize) -> bool {
    let mut count = 0;
    for label in host.split('.') {
        if label.is_empty() || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
        count += 1;
    }
    count >= min
}

/// Whether an entry of `cors_origins` allows `origin`. Entries are checked by [`check_entry`]
/// when the configuration is loaded; one that is not valid matches nothing but itself.
pub(crate) fn matches(entry: &str, origin: &str) -> bool {
    if entry == "*" {
        return true;
    }
    let Some(pattern) = split_pattern(entry) else {
        return entry.eq_ignore_ascii_case(origin);
    };
    let Some(origin) = split(origin) else { return false };
    if !pattern.scheme.eq_ignore_ascii_case(origin.scheme) || pattern.port != origin.port {
        return false;
    }
    // The origin's host is one or more labels of its own, a dot, then the pattern's domain.
    let (host, domain) = (origin.host, pattern.host);
    let Some(cut) = host.len().checked_sub(domain.len() + 1) else { return false };
    // (Both are ASCII: `split` took only letters, digits, `-`, `_`, `.` and IPv6 literals.)
    host.is_char_boundary(cut)
        && host[cut + 1..].eq_ignore_ascii_case(domain)
        && host.as_bytes()[cut] == b'.'
        && is_labels(&host[..cut], 1)
}

/// Checks one entry of `cors_origins` at load time: `*`, an origin, or a subdomain pattern. The
/// error completes a sentence starting with the entry ("… which is …").
pub(crate) fn check_entry(entry: &str) -> Result<(), String> {
    const SHAPE: &str =
        "an origin is scheme://host[:port] like https://app.example, or a pattern like https://*.example.com";
    if entry == "*" {
        return Ok(());
    }
    let Some((scheme, authority)) = entry.split_once("://") else {
        return Err("which is not * or an origin like https://example.com".to_string());
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(
            "which is not * or an origin like https://example.com (the scheme must be http or https)".to_string()
        );
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!("which has more than an origin (a path, a query or a user); {SHAPE}"));
    }
    let star = authority.strip_prefix("*.");
    if star.unwrap_or(authority).contains('*') {
        return Err(format!("which has a * that is not the whole leftmost label; {SHAPE}"));
    }
    let Some((host, port)) = split_authority(star.unwrap_or(authority)) else {
        return Err(format!("which has a bad host or port; {SHAPE}"));
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") { "443" } else { "80" };
    if port == Some(default_port) {
        return Err(format!(
            "which names the default port {default_port}, which browsers leave out of Origin; remove :{default_port}"
        ));
    }
    // `*.com` would be every site under a top-level domain (a pattern cannot tell a public
    // suffix from a domain; two labels is the least it must name).
    if star.is_some() && !is_labels(host, 2) {
        return Err(format!("which would match every site under a top-level domain; {SHAPE}"));
    }
    Ok(())
}

/// Whether `origin` is the server's own: the scheme the connection is served with and the
/// authority the request names in `Host`. The one place this comparison is made.
pub(crate) fn is_own(origin: &str, scheme: &str, host: &str) -> bool {
    !host.is_empty()
        && origin.split_once("://").is_some_and(|(origin_scheme, authority)| {
            origin_scheme.eq_ignore_ascii_case(scheme) && authority.eq_ignore_ascii_case(host)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_label_matches_one_or_more_labels_of_a_subdomain() {
        let pattern = "https://*.example.com";
        for origin in
            ["https://a.example.com", "https://a.b.example.com", "https://A-1.Example.COM", "HTTPS://x.example.com"]
        {
            assert!(matches(pattern, origin), "{origin}");
        }
    }

    #[test]
    fn a_star_label_never_matches_near_misses() {
        let pattern = "https://*.example.com";
        let misses = [
            "https://example.com",            // the bare domain
            "http://a.example.com",           // another scheme
            "https://a.example.com:8443",     // another port
            "https://a.example.com:443",      // a port the pattern does not name
            "https://evil-example.com",       // not a subdomain
            "https://aexample.com",           // no dot before the domain
            "https://a.example.com.evil.net", // the domain inside another
            "https://.example.com",           // an empty label
            "https://a..example.com",         // an empty label
            "https://a.example.com/",         // a path
            "https://u@a.example.com",        // userinfo
            "https://a.example.co",           // a shorter suffix
            "null",
            "",
        ];
        for origin in misses {
            assert!(!matches(pattern, origin), "{origin}");
        }
    }

    #[test]
    fn a_pattern_with_a_port_matches_that_port_only() {
        let pattern = "http://*.example.com:8080";
        assert!(matches(pattern, "http://a.example.com:8080"));
        assert!(!matches(pattern, "http://a.example.com"));
        assert!(!matches(pattern, "http://a.example.com:80800"));
        assert!(!matches(pattern, "http://a.example.com:8081"));
    }

    #[test]
    fn exact_entries_and_star() {
        assert!(matches("https://app.example", "https://app.example"));
        assert!(matches("https://App.Example", "https://app.example"));
        assert!(!matches("https://app.example", "https://app.example:444"));
        assert!(!matches("https://app.example", "http://app.example"));
        assert!(!matches("https://app.example", "https://x.app.example"));
        assert!(matches("*", "https://anything.example") && matches("*", "null"));
    }

    #[test]
    fn entries_are_checked_at_load() {
        let good = [
            "*",
            "https://app.example",
            "http://127.0.0.1:8000",
            "http://[::1]:7700",
            "https://*.example.com",
            "http://*.a.b.example:81",
        ];
        for entry in good {
            assert_eq!(check_entry(entry), Ok(()), "{entry}");
        }
        let bad = [
            ("ftp://a.example", "not * or an origin"),
            ("app.example", "not * or an origin"),
            ("null", "not * or an origin"),
            ("*://a.example", "not * or an origin"),
            ("https://app.example/", "more than an origin"),
            ("https://app.example/path", "more than an origin"),
            ("https://u@app.example", "more than an origin"),
            ("https://*example.com", "whole leftmost label"),
            ("https://a.*.example.com", "whole leftmost label"),
            ("https://*.*.example.com", "whole leftmost label"),
            ("https://a*.example.com", "whole leftmost label"),
            ("https://*.example.com:*", "whole leftmost label"),
            ("https://*", "whole leftmost label"),
            ("https://*.com", "top-level domain"),
            ("https://*.example.com:99999", "bad host or port"),
            ("https://app.example:x", "bad host or port"),
            ("https://", "bad host or port"),
            ("https://a..example", "bad host or port"),
            ("https://app.example:443", "default port 443"),
            ("http://app.example:80", "default port 80"),
        ];
        for (entry, problem) in bad {
            let err = check_entry(entry).unwrap_err();
            assert!(err.contains(problem), "{entry}: {err}");
        }
    }

    #[test]
    fn the_own_origin_is_the_served_scheme_and_the_host_field() {
        assert!(is_own("http://t", "http", "t"));
        assert!(is_own("http://127.0.0.1:7700", "http", "127.0.0.1:7700"));
        assert!(is_own("HTTP://Push.Example", "http", "push.example"));
        assert!(!is_own("https://127.0.0.1:7700", "http", "127.0.0.1:7700"));
        assert!(!is_own("http://127.0.0.1:7701", "http", "127.0.0.1:7700"));
        assert!(!is_own("http://127.0.0.1", "http", "127.0.0.1:7700"));
        assert!(!is_own("null", "http", "t"));
        assert!(!is_own("http://", "http", ""));
    }
}
