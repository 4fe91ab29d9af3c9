//! Access tokens, through the server's own code (`holdfast_server::fuzzing`): taking the token
//! out of a request head (`Authorization: Bearer`, `?token=`, the `holdfast_token` cookie),
//! verifying it against a fixed HS256 secret and a fixed Ed25519 public key, and matching the
//! claims' channel patterns.
//!
//! The first input byte picks a mode:
//! - raw head: the rest, ended with CRLF CRLF, is a request head; whatever token it carries is
//!   verified and its grants matched against the channels in the path. No panic.
//! - minted: the rest chooses claims (channel and publish patterns, admin, `exp` and `nbf` around
//!   now, including fractions and wrong types), a key (the secret, the Ed25519 key, a wrong secret,
//!   HS384) and a place (each of the three, with case, spaces, percent-encoding, other cookies,
//!   quotes and decoys that must not count). The target signs the token itself, so it knows the
//!   answer: the head carries exactly that token; a token signed with an accepted key and within
//!   its times decodes to exactly the claims minted, one past `exp` is `Expired`, one with a wrong
//!   key or algorithm is `Invalid`; a token accepted is never one the connection's own expiry rule
//!   (`is_expired`, what the push shards close by) calls expired at the same second.
//! - raw token: the rest is a token string verified as is, then pattern/channel pairs: `p*` grants
//!   exactly the names starting with `p`, anything else exactly itself.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use holdfast_proto::http1::{parse_request, RequestHead};
use holdfast_proto::Limits;
use holdfast_server::fuzzing::{self, Granted, Refused, Verifier, NBF_LEEWAY_SECS, TOKEN_COOKIE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SECRET: &str = "holdfast-fuzz-secret";
const WRONG_SECRET: &str = "holdfast-fuzz-secret!";
/// A throw-away Ed25519 pair made for this target (`openssl genpkey -algorithm ed25519`).
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICSl4qMpC08l4pP8TsmbU31Ge+v+UQx6tOwMiWYh0LlD
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAaFdCS0ySfzCezyOMPYnTjujoJz2C/fiyrYUz8f3Awrw=
-----END PUBLIC KEY-----
";

/// The server's checkers: `exp` required (the default), and `jwt_allow_no_exp`.
struct Verifiers {
    strict: Verifier,
    no_exp: Verifier,
}

fn verifiers() -> &'static Verifiers {
    static VERIFIERS: OnceLock<Verifiers> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        // The server reads `jwt_public_key` from a file, once, at start: so does this.
        let path = std::env::temp_dir().join(format!("holdfast-fuzz-token-{}.pem", std::process::id()));
        std::fs::write(&path, ED_PUBLIC).expect("write the public key");
        let path_str = path.to_str().expect("a UTF-8 temp path");
        let build = |allow_no_exp| {
            Verifier::new(SECRET, path_str, allow_no_exp).expect("the keys load").expect("access control is on")
        };
        let verifiers = Verifiers { strict: build(false), no_exp: build(true) };
        let _ = std::fs::remove_file(&path);
        verifiers
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => raw_head(rest),
        1 => minted(&mut Bytes(rest)),
        _ => raw_token(rest),
    }
});

/// Reads the fuzz input a little at a time; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A string of up to `max` bytes (length byte first), any UTF-8.
    fn text(&mut self, max: usize) -> String {
        let len = self.byte() as usize % (max + 1);
        String::from_utf8_lossy(self.take(len)).into_owned()
    }

    /// A header name of up to `max` letters after `X-`.
    fn header_name(&mut self, max: usize) -> String {
        let len = self.byte() as usize % (max + 1);
        let letters: String = self.take(len).iter().map(|&b| (b'a' + b % 26) as char).collect();
        format!("X-{letters}")
    }

    /// A string of up to `max` bytes from an alphabet that is safe in a header value, a query
    /// parameter and a cookie (no `;`, `&`, `=`, `%`, `+`, quotes, spaces or CR/LF).
    fn token_safe(&mut self, max: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:*~!/";
        let len = self.byte() as usize % (max + 1);
        self.take(len).iter().map(|&b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
    }
}

fn parse(head: &[u8]) -> Option<RequestHead> {
    let mut buf = BytesMut::from(head);
    parse_request(&mut buf, &Limits::default()).ok().flatten()
}

fn raw_head(input: &[u8]) {
    let mut wire = input.to_vec();
    wire.extend_from_slice(b"\r\n\r\n");
    let Some(head) = parse(&wire) else { return };
    let Some(token) = fuzzing::token_of(&head) else { return };
    let names: Vec<&str> = head.path().split(['/', ',']).collect();
    for verifier in [&verifiers().strict, &verifiers().no_exp] {
        if let Ok(grants) = checked_verify(verifier, &token) {
            for name in &names {
                check_grants_match(&grants, name);
            }
        }
    }
}

fn raw_token(input: &[u8]) {
    let mut input = Bytes(input);
    let token = input.text(255);
    for verifier in [&verifiers().strict, &verifiers().no_exp] {
        let _ = checked_verify(verifier, &token);
    }
    while !input.0.is_empty() {
        let pattern = input.text(16);
        let name = input.text(16);
        check_pattern(&pattern, &name);
    }
}

/// Verifies, and checks that an accepted token is not expired by the connection's own rule at the
/// same second (when the clock did not move during the check, so the answer is not a race).
fn checked_verify(verifier: &Verifier, token: &str) -> Result<Granted, Refused> {
    let before = fuzzing::unix_now();
    let verdict = verifier.verify(token);
    let after = fuzzing::unix_now();
    if let Ok(grants) = &verdict {
        if before == after {
            assert!(
                !fuzzing::is_expired(grants.deadline(), after),
                "accepted at {after} with deadline {}: the connection would close at once",
                grants.deadline()
            );
        }
    }
    verdict
}

/// `can_subscribe`/`can_publish` are "some pattern matches", and each pattern matches by the rule.
fn check_grants_match(grants: &Granted, name: &str) {
    let subscribe = grants.subscribe_patterns().any(|p| check_pattern(p, name));
    assert_eq!(grants.can_subscribe(name), subscribe, "subscribe {name:?}");
    let publish = grants.publish_patterns().any(|p| check_pattern(p, name));
    assert_eq!(grants.can_publish(name), publish, "publish {name:?}");
}

/// The rule itself: `p*` grants exactly the names starting with `p` (`*` all), anything else
/// exactly itself. Returns the server's answer.
fn check_pattern(pattern: &str, name: &str) -> bool {
    let got = fuzzing::pattern_matches(pattern, name);
    let want = match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    };
    assert_eq!(got, want, "pattern {pattern:?} on {name:?}");
    if let Some(prefix) = pattern.strip_suffix('*') {
        // Every extension of the prefix is granted, the prefix itself included.
        assert!(fuzzing::pattern_matches(pattern, &format!("{prefix}{name}")));
    }
    got
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Secret,
    Ed25519,
    WrongSecret,
    /// The right secret, an algorithm the server does not accept for it.
    Hs384,
}

/// A time claim: absent, `now + offset` (with a fraction), or a value of a wrong type or range.
#[derive(Clone, Copy, Debug)]
enum Time {
    Absent,
    At(f64),
    Odd(u8),
}

impl Time {
    fn pick(input: &mut Bytes, now: u64) -> Time {
        let kind = input.byte();
        let offset = f64::from(input.byte() as i8);
        let fraction = [0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 0.999][input.byte() as usize % 7];
        match kind % 8 {
            0 => Time::Absent,
            1 => Time::Odd(input.byte()),
            // Near now, where the boundaries are.
            2..=5 => Time::At(now as f64 + offset + fraction),
            // Far: hours to years either way.
            6 => Time::At(now as f64 + offset * 3600.0 * f64::from(input.byte()) + fraction),
            _ => Time::At(now as f64 + offset.abs() * 1e9 + fraction),
        }
    }

    fn json(self) -> Option<Value> {
        match self {
            Time::Absent => None,
            Time::At(t) if t.fract() == 0.0 && (0.0..1e18).contains(&t) => Some(json!(t as u64)),
            Time::At(t) => Some(json!(t)),
            Time::Odd(which) => Some(match which % 8 {
                0 => json!("1700000000"),
                1 => json!(-1),
                2 => json!(-0.5),
                3 => json!(1e300),
                4 => json!(null),
                5 => json!(true),
                6 => json!([1]),
                _ => json!(u64::MAX),
            }),
        }
    }
}

fn minted(input: &mut Bytes) {
    let now = fuzzing::unix_now();
    let channels: Vec<String> = (0..input.byte() % 5).map(|_| input.text(12)).collect();
    let publish: Vec<String> = (0..input.byte() % 5).map(|_| input.text(12)).collect();
    let admin = input.byte() & 1 == 1;
    let exp = Time::pick(input, now);
    let nbf = Time::pick(input, now);
    let key = [Key::Secret, Key::Ed25519, Key::WrongSecret, Key::Hs384][input.byte() as usize % 4];

    let mut claims = json!({ "sub": input.text(8), "channels": channels, "publish": publish, "admin": admin });
    if let Some(exp) = exp.json() {
        claims["exp"] = exp;
    }
    if let Some(nbf) = nbf.json() {
        claims["nbf"] = nbf;
    }
    let (alg, encoding) = match key {
        Key::Secret => (Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes())),
        Key::Ed25519 => (Algorithm::EdDSA, EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes())),
        Key::WrongSecret => (Algorithm::HS256, EncodingKey::from_secret(WRONG_SECRET.as_bytes())),
        Key::Hs384 => (Algorithm::HS384, EncodingKey::from_secret(SECRET.as_bytes())),
    };
    let token = jsonwebtoken::encode(&Header::new(alg), &claims, &encoding.expect("key")).expect("sign");

    // The head carries exactly this token.
    let wire = head_with(&token, input);
    let head = parse(wire.as_bytes()).unwrap_or_else(|| panic!("the head does not parse: {wire:?}"));
    let found = fuzzing::token_of(&head);
    assert_eq!(found.as_deref(), Some(token.as_str()), "token from {wire:?}");

    for (verifier, allow_no_exp) in [(&verifiers().strict, false), (&verifiers().no_exp, true)] {
        let before = fuzzing::unix_now();
        let verdict = checked_verify(verifier, &token);
        let after = fuzzing::unix_now();
        expect(&verdict, key, exp, nbf, allow_no_exp, before, after);
        if let Ok(grants) = &verdict {
            assert!(grants.subscribe_patterns().eq(channels.iter().map(String::as_str)));
            assert!(grants.publish_patterns().eq(publish.iter().map(String::as_str)));
            assert_eq!(grants.admin(), admin);
            // Names the claims grant and names they may not.
            for pattern in channels.iter().chain(&publish) {
                let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
                let half: String = prefix.chars().take(prefix.chars().count() / 2).collect();
                for name in [pattern.as_str(), prefix, &format!("{prefix}x"), &half] {
                    check_grants_match(grants, name);
                }
            }
            let name = input.text(12);
            check_grants_match(grants, &name);
        }
    }
}

/// What a minted token must get, where it is certain (clear of the second it crosses a bound).
fn expect(
    verdict: &Result<Granted, Refused>,
    key: Key,
    exp: Time,
    nbf: Time,
    allow_no_exp: bool,
    before: u64,
    after: u64,
) {
    let ctx = || format!("key {key:?} exp {exp:?} nbf {nbf:?} allow_no_exp {allow_no_exp} now {before}..{after}");
    if matches!(key, Key::WrongSecret | Key::Hs384) {
        assert!(matches!(verdict, Err(Refused::Invalid(_))), "{}: {:?}", ctx(), verdict.as_ref().err());
        return;
    }
    if matches!(exp, Time::Odd(_)) || matches!(nbf, Time::Odd(_)) {
        return; // Refused or not by the library's reading of odd values; no panic is the check.
    }
    let (before, after) = (before as f64, after as f64);
    let exp_ok = match exp {
        Time::Absent => Some(allow_no_exp),
        // `exp` in the past by a second or more: expired; two or more ahead: fine.
        Time::At(t) if t < 0.0 => None,
        Time::At(t) if t <= before - 1.0 => Some(false),
        Time::At(t) if t >= after + 2.0 => Some(true),
        _ => None,
    };
    let nbf_ok = match nbf {
        Time::Absent => Some(true),
        Time::At(t) if t > after + NBF_LEEWAY_SECS as f64 + 1.0 => Some(false),
        Time::At(t) if t <= before + NBF_LEEWAY_SECS as f64 - 1.0 => Some(true),
        _ => None,
    };
    match (exp_ok, nbf_ok) {
        (Some(true), Some(true)) => assert!(verdict.is_ok(), "{}: {:?}", ctx(), verdict.as_ref().err()),
        (Some(false), _) if matches!(exp, Time::At(_)) => {
            assert!(matches!(verdict, Err(Refused::Expired)), "{}: {:?}", ctx(), verdict.as_ref().err())
        }
        (Some(false), _) => assert!(matches!(verdict, Err(Refused::Invalid(_))), "{}", ctx()),
        (Some(true), Some(false)) => assert!(matches!(verdict, Err(Refused::Invalid(_))), "{}", ctx()),
        _ => {}
    }
    if let (Ok(grants), Time::At(t)) = (verdict, exp) {
        assert_eq!(grants.deadline(), t.clamp(1.0, f64::from(u32::MAX)) as u32, "{}", ctx());
    }
}

/// A request head carrying `token` in the place the input picks, dressed as the input picks, with
/// decoys that must not count.
fn head_with(token: &str, input: &mut Bytes) -> String {
    let place = input.byte();
    let dress = input.byte();
    let mut target = format!("/sub/{}", input.token_safe(8));
    let mut headers = String::new();
    let noise = |input: &mut Bytes| format!("{}={}", input.token_safe(6), input.token_safe(6));
    // Headers that do not carry a token, before and after.
    if dress & 1 != 0 {
        headers += &format!("{}: {}\r\n", input.header_name(6), input.token_safe(12));
    }
    match place % 3 {
        0 => {
            // RFC 6750 §2.1: `Bearer` in any case, then one or more spaces.
            let scheme: String = "bearer"
                .chars()
                .zip(0..)
                .map(|(c, i)| if dress >> (i % 8) & 1 != 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            let spaces = " ".repeat(1 + (dress >> 5) as usize % 3);
            let before = ["", " ", "\t", "  "][input.byte() as usize % 4];
            let after = ["", " ", "\t", " \t "][input.byte() as usize % 4];
            headers += &format!("Authorization:{before}{scheme}{spaces}{token}{after}\r\n");
            // Another token elsewhere loses to the header.
            if dress & 2 != 0 {
                target += "?token=not.the.token";
            }
            if dress & 4 != 0 {
                headers += &format!("Cookie: {TOKEN_COOKIE}=not.the.token\r\n");
            }
        }
        1 => {
            // `?token=`, each byte percent-encoded (either case of hex) or not as the input says.
            let mut encoded = String::new();
            for (i, c) in token.bytes().enumerate() {
                let bits = input.0.get(i / 8).copied().unwrap_or(0);
                if bits >> (i % 8) & 1 != 0 {
                    encoded += &if dress & 8 != 0 { format!("%{c:02x}") } else { format!("%{c:02X}") };
                } else {
                    encoded.push(c as char);
                }
            }
            input.take(token.len().div_ceil(8));
            let mut params = Vec::new();
            for _ in 0..input.byte() % 3 {
                params.push(format!("x{}", noise(input)));
            }
            // Near misses that are not the parameter.
            if dress & 2 != 0 {
                params.push("tokens=no".to_string());
                params.push("Token=no".to_string());
            }
            params.push(format!("token={encoded}"));
            for _ in 0..input.byte() % 3 {
                params.push(format!("x{}", noise(input)));
            }
            if dress & 4 != 0 {
                params.push("token=second.one.loses".to_string());
            }
            target += "?";
            target += &params.join("&");
            // An Authorization that is not a bearer token does not hide the query's.
            match input.byte() % 4 {
                0 => {}
                1 => headers += "Authorization: Basic dXNlcjpwYXNz\r\n",
                2 => headers += "Authorization: Bearer\r\n",
                _ => headers += "Authorization: Token abc\r\n",
            }
            if dress & 16 != 0 {
                headers += &format!("Cookie: {TOKEN_COOKIE}=not.the.token\r\n");
            }
        }
        _ => {
            let mut cookies = Vec::new();
            for _ in 0..input.byte() % 4 {
                // Other cookies, including names that contain or extend the token cookie's name.
                let name = match input.byte() % 4 {
                    0 => format!("x{}", input.token_safe(8)),
                    1 => format!("{TOKEN_COOKIE}x"),
                    2 => format!("x{TOKEN_COOKIE}"),
                    _ => "holdfast".to_string(),
                };
                let value = input.token_safe(8);
                cookies.push(if dress & 8 != 0 { format!("{name}=\"{value}\"") } else { format!("{name}={value}") });
            }
            let at = input.byte() as usize % (cookies.len() + 1);
            let value = if dress & 16 != 0 { format!("\"{token}\"") } else { token.to_string() };
            cookies.insert(at, format!("{TOKEN_COOKIE}={value}"));
            for _ in 0..input.byte() % 3 {
                cookies.push(format!("z{}", noise(input)));
            }
            let separator = [";", "; ", ";  ", " ; "][input.byte() as usize % 4];
            headers += &format!("Cookie: {}\r\n", cookies.join(separator));
            if dress & 2 != 0 {
                target += "?tokenx=no&xtoken=no";
            }
            if dress & 4 != 0 {
                headers += "Authorization: Basic dXNlcjpwYXNz\r\n";
            }
        }
    }
    if dress & 128 != 0 {
        headers += &format!("{}: {}\r\n", input.header_name(6), input.token_safe(12));
    }
    format!("GET {target} HTTP/1.1\r\nHost: holdfast.test\r\n{headers}\r\n")
}
