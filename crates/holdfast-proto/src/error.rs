//! Why a message could not be parsed, and which status code says so.

use std::fmt;

/// A request the server cannot accept. Small and `Copy`: parsing never allocates to fail.
///
/// Every variant maps to one status code ([`ParseError::status`]) and one readable reason
/// ([`ParseError::reason`]). A server answering any of them closes the connection afterwards, since
/// the position of the next request in the byte stream can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The request line or a header field is not valid HTTP/1.x syntax (includes bare CR,
    /// obs-fold and whitespace before the colon, which httparse rejects in requests).
    Syntax,
    /// The version is well formed but neither 1.0 nor 1.1 (505).
    UnsupportedVersion,
    /// The request-target is longer than `max_uri_bytes` (414).
    UriTooLong,
    /// The head is longer than `max_header_bytes` or has more than `max_headers` fields (431).
    HeadersTooLarge,
    /// HTTP/1.1 request without a Host field (RFC 9112 §3.2).
    MissingHost,
    /// More than one Host field (RFC 9112 §3.2).
    DuplicateHost,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3 ¶3; refused outright).
    ContentLengthWithTransferEncoding,
    /// A Content-Length value that is not a decimal number, overflows, or differs from another.
    InvalidContentLength,
    /// Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1 ¶15).
    TransferEncodingInHttp10,
    /// Transfer-Encoding whose final coding is not `chunked`, or `chunked` twice (RFC 9112 §6.3).
    ChunkedNotFinal,
    /// A transfer coding this server does not implement (RFC 9112 §6.1: 501).
    UnsupportedTransferCoding,
    /// A chunk-size line that is not hex, overflows 64 bits, or has a bare CR/LF.
    InvalidChunkSize,
    /// Chunk data not followed by CRLF, or a malformed trailer section.
    InvalidChunk,
    /// Chunk extensions beyond `max_chunk_ext_bytes`.
    ChunkExtensionsTooLong,
    /// Trailer fields beyond `max_trailer_bytes` (431).
    TrailersTooLarge,
    /// The body is larger than `max_body_bytes` (413).
    BodyTooLarge,
    /// `Expect` holds something other than `100-continue` (417).
    UnsupportedExpectation,
}

impl ParseError {
    /// The status code that answers this error.
    pub fn status(self) -> u16 {
        use ParseError::*;
        match self {
            UnsupportedVersion => 505,
            UriTooLong => 414,
            HeadersTooLarge | TrailersTooLarge => 431,
            BodyTooLarge => 413,
            UnsupportedTransferCoding => 501,
            UnsupportedExpectation => 417,
            Syntax
            | MissingHost
            | DuplicateHost
            | ContentLengthWithTransferEncoding
            | InvalidContentLength
            | TransferEncodingInHttp10
            | ChunkedNotFinal
            | InvalidChunkSize
            | InvalidChunk
            | ChunkExtensionsTooLong => 400,
        }
    }

    /// A short label shared by logs and metrics (`bad_content_length`, …).
    pub fn label(self) -> &'static str {
        use ParseError::*;
        match self {
            Syntax => "bad_syntax",
            UnsupportedVersion => "bad_version",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "headers_too_large",
            MissingHost => "missing_host",
            DuplicateHost => "duplicate_host",
            ContentLengthWithTransferEncoding => "cl_and_te",
            InvalidContentLength => "bad_content_length",
            TransferEncodingInHttp10 => "te_in_http10",
            ChunkedNotFinal => "chunked_not_final",
            UnsupportedTransferCoding => "unsupported_transfer_coding",
            InvalidChunkSize => "bad_chunk_size",
            InvalidChunk => "bad_chunk",
            ChunkExtensionsTooLong => "chunk_ext_too_long",
            TrailersTooLarge => "trailers_too_large",
            BodyTooLarge => "body_too_large",
            UnsupportedExpectation => "unsupported_expectation",
        }
    }

    /// A sentence for the client, put in the error response's body.
    pub fn reason(self) -> &'static str {
        use ParseError::*;
        match self {
            Syntax => "malformed request line or header field",
            UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            UriTooLong => "request-target too long",
            HeadersTooLarge => "request header fields too large or too many",
            MissingHost => "HTTP/1.1 request without a Host header",
            DuplicateHost => "more than one Host header",
            ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding present",
            InvalidContentLength => "invalid or conflicting Content-Length",
            TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            ChunkedNotFinal => "Transfer-Encoding must end with a single chunked coding",
            UnsupportedTransferCoding => "transfer coding not implemented",
            InvalidChunkSize => "invalid chunk size line",
            InvalidChunk => "malformed chunked body",
            ChunkExtensionsTooLong => "chunk extensions too long",
            TrailersTooLarge => "trailer fields too large",
            BodyTooLarge => "request body too large",
            UnsupportedExpectation => "only Expect: 100-continue is supported",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for ParseError {}
