//! A response to send: status, a few fields, a body. Routes build one; the connection loop adds
//! the connection fields and writes it.

use bytes::{Bytes, BytesMut};
use holdfast_proto::http1::{Persistence, ResponseHead, Version};

/// A complete (non-streaming) response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }

    /// A JSON response from a `serde_json::Value` (or anything serializable).
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// The JSON error body every refusal uses: `{"error":"<label>","reason":"<sentence>"}`.
    pub fn error(status: u16, label: &str, reason: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": label, "reason": reason }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the head into `out`. The body is not included (HEAD, and large bodies sent apart).
    pub fn encode_head(&self, out: &mut BytesMut, persistence: Persistence, version: Version, keepalive_secs: u64) {
        let mut head = ResponseHead::new(out, self.status).header("Server", b"holdfast");
        // RFC 9110 §8.6, §15.3.5, §15.4.5: no Content-Length (nor content) on 1xx and 204; none
        // on 304 either (it could only repeat the 200's length, which the cache already has).
        if self.status >= 200 && self.status != 204 && self.status != 304 {
            head = head.header("Content-Type", self.content_type.as_bytes()).content_length(self.body.len() as u64);
        }
        for (name, value) in &self.headers {
            head = head.header(name, value.as_bytes());
        }
        head.persistence(persistence, version, keepalive_secs).finish();
    }
}
