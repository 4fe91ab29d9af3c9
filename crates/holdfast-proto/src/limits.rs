//! Size limits applied while parsing. Each limit has one status code when exceeded (see
//! [`crate::ParseError::status`]).

/// Bounds on what a peer may send. The server fills these from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes (exceeded → 431).
    pub max_header_bytes: usize,
    /// Number of header fields (exceeded → 431).
    pub max_headers: usize,
    /// Request-target length in bytes (exceeded → 414).
    pub max_uri_bytes: usize,
    /// Decoded request body, in bytes (exceeded → 413).
    pub max_body_bytes: u64,
    /// Bytes of chunk extensions accepted over a whole chunked body (exceeded → 400). Extensions
    /// carry nothing Holdfast uses; the bound stops a peer from streaming them forever.
    pub max_chunk_ext_bytes: usize,
    /// Bytes of trailer fields after the last chunk (exceeded → 431).
    pub max_trailer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 16 KiB: nginx's large_client_header_buffers is 4 × 8 KiB; browsers stay far below.
            max_header_bytes: 16 * 1024,
            // 100 fields: hyper's default; a real browser request carries about 15.
            max_headers: 100,
            // 8 KiB: the smallest request-line length RFC 9112 §3 asks recipients to support.
            max_uri_bytes: 8 * 1024,
            // 1 MiB: a push message is small; bigger payloads belong in object storage.
            max_body_bytes: 1024 * 1024,
            max_chunk_ext_bytes: 4 * 1024,
            max_trailer_bytes: 8 * 1024,
        }
    }
}
