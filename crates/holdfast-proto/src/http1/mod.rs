//! HTTP/1.0 and HTTP/1.1 (RFC 9112) as buffer-in, value-out pieces.
//!
//! - [`request`]: the request head (httparse), with its limits and the header rules.
//! - [`framing`]: how long the body is (RFC 9112 §6), the request-smuggling rules in one place.
//! - [`keepalive`]: whether the connection persists after a response (RFC 9112 §9.3).
//! - [`decode`]: body decoders (length, chunked) over a buffer.
//! - [`encode`]: response heads, chunk framing and the cached `Date`.

pub mod decode;
pub mod encode;
pub mod framing;
pub mod keepalive;
pub mod request;

pub use decode::{BodyDecoder, Decoded};
pub use encode::{reason_phrase, ResponseHead};
pub use framing::BodyFraming;
pub use keepalive::{ConnectionOptions, Persistence};
pub use request::{parse_request, Method, RequestHead, Version};
