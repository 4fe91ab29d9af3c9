//! The files Holdfast serves itself, embedded in the binary: the browser client
//! (`/holdfast.js`, `/holdfast.d.ts`), the landing page (`/`), the dashboard (`/admin/`), the
//! chat demo (`/demo/chat`) and the protocol (`/docs/protocol.md`). The dashboard is plain ES
//! modules (`admin.js` imports `chart.js`, `connections.js`, `format.js`): no build step.
//!
//! Each answer carries a strong `ETag` (a hash of the bytes, so it changes with every release
//! that changes the file) and is revalidated with `If-None-Match` (304, no body). Bodies are
//! gzipped once, on first use, for clients that accept it: `holdfast.js` goes over the wire at a
//! third of its size.

use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;
use holdfast_proto::http1::RequestHead;

use crate::response::Response;

/// One embedded file.
pub(crate) struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    /// `Cache-Control`: the client library may be cached a while (revalidated by ETag after);
    /// pages always revalidate, so a new release shows at once.
    pub cache_control: &'static str,
    pub bytes: &'static [u8],
}

const PAGE: &str = "no-cache";
const LIBRARY: &str = "public, max-age=300";
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every embedded file, by request path.
pub(crate) const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: HTML, cache_control: PAGE, bytes: include_bytes!("../../../web/index.html") },
    Asset {
        path: "/holdfast.js",
        content_type: JS,
        cache_control: LIBRARY,
        bytes: include_bytes!("../../../clients/js/holdfast.js"),
    },
    Asset {
        path: "/holdfast.d.ts",
        content_type: "application/typescript; charset=utf-8",
        cache_control: LIBRARY,
        bytes: include_bytes!("../../../clients/js/holdfast.d.ts"),
    },
    Asset {
        path: "/admin/",
        content_type: HTML,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/index.html"),
    },
    Asset {
        path: "/admin/admin.js",
        content_type: JS,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/admin.js"),
    },
    Asset {
        path: "/admin/chart.js",
        content_type: JS,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/chart.js"),
    },
    Asset {
        path: "/admin/connections.js",
        content_type: JS,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/connections.js"),
    },
    Asset {
        path: "/admin/format.js",
        content_type: JS,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/format.js"),
    },
    Asset {
        path: "/admin/admin.css",
        content_type: CSS,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/admin/admin.css"),
    },
    Asset {
        path: "/docs/protocol.md",
        content_type: "text/markdown; charset=utf-8",
        cache_control: PAGE,
        bytes: include_bytes!("../../../docs/protocol.md"),
    },
    Asset {
        path: "/demo/chat",
        content_type: HTML,
        cache_control: PAGE,
        bytes: include_bytes!("../../../web/demo/chat.html"),
    },
];

/// The embedded file at `path`, if any (its index in [`ASSETS`]).
pub(crate) fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|asset| asset.path == path)
}

/// What is computed once per file: its ETag and gzipped body.
struct Prepared {
    etag: String,
    gzipped: Bytes,
}

fn prepared(index: usize) -> &'static Prepared {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    &PREPARED.get_or_init(|| ASSETS.iter().map(|asset| prepare(asset.bytes)).collect())[index]
}

fn prepare(bytes: &[u8]) -> Prepared {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gzipped = encoder.write_all(bytes).and_then(|()| encoder.finish()).unwrap_or_default();
    Prepared { etag: format!("\"{:016x}\"", fnv1a(bytes)), gzipped: Bytes::from(gzipped) }
}

/// FNV-1a, 64 bits: stable across builds and platforms, which `std`'s hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The answer to `GET`/`HEAD` of the embedded file `index`.
pub(crate) fn serve(index: usize, head: &RequestHead) -> Response {
    let asset = &ASSETS[index];
    let prepared = prepared(index);
    let fresh = head.headers_named("if-none-match").filter_map(|v| std::str::from_utf8(v).ok()).any(|tags| {
        tags.split(',').any(|tag| tag.trim().trim_start_matches("W/") == prepared.etag || tag.trim() == "*")
    });
    let response = if fresh {
        Response::new(304, asset.content_type, Bytes::new())
    } else if accepts_gzip(head) && !prepared.gzipped.is_empty() {
        Response::new(200, asset.content_type, prepared.gzipped.clone()).with_header("Content-Encoding", "gzip")
    } else {
        Response::new(200, asset.content_type, Bytes::from_static(asset.bytes))
    };
    let response = response
        .with_header("ETag", prepared.etag.clone())
        .with_header("Cache-Control", asset.cache_control)
        .with_header("Vary", "Accept-Encoding");
    if asset.cache_control == LIBRARY {
        // Pages on other origins load the client as a module script, which browsers fetch in
        // CORS mode. It is public code, fetched without credentials: any origin may have it.
        response.with_header("Access-Control-Allow-Origin", "*")
    } else {
        response
    }
}

/// Whether `Accept-Encoding` lists gzip with a non-zero weight.
fn accepts_gzip(head: &RequestHead) -> bool {
    let values = head.headers_named("accept-encoding").filter_map(|v| std::str::from_utf8(v).ok());
    values.flat_map(|value| value.split(',')).any(|coding| {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let zero = parts.any(|p| matches!(p.trim().strip_prefix("q="), Some(q) if q.trim().parse::<f32>() == Ok(0.0)));
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_is_not_empty() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
            assert_eq!(find(asset.path), Some(i), "{} listed twice", asset.path);
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let prepared = prepare(b"hello hello hello hello");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&prepared.gzipped[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello hello hello hello");
        assert_eq!(prepared.etag.len(), 18);
    }
}
