//! WebSocket (RFC 6455) as buffer-in, value-out pieces, for the server side of a connection.
//!
//! - [`handshake`]: checking an upgrade request (§4.2.1) and writing the 101 answer (§4.2.2).
//! - [`frame`]: opcodes, the frame header on the wire (§5.2), and encoding server frames.
//! - [`codec`]: decoding client frames into messages and control events, with every check of
//!   §5 and §8 that a receiver must make, and the close code each failure is answered with.
//! - [`close`]: close codes (§7.4) and encoding close frames (§5.5.1).
//! - [`deflate`]: permessage-deflate (RFC 7692): choosing an offer, compressing a message once for
//!   every connection, inflating a client's message under a size cap.
//!
//! What it does not own: sockets, timers (pings, the close handshake's deadline), and what a
//! message means. Those belong to `holdfast-server`. No subprotocol is negotiated; the only
//! extension is permessage-deflate, and without it every RSV bit is a protocol error.
//!
//! Why this is written here rather than taken from `tungstenite`: memory per connection. The goal
//! is at most 512 B of server RSS per idle WebSocket subscriber. `tokio-tungstenite` measured about
//! 131 KiB per idle socket with its default configuration (a 128 KiB read buffer, zero-filled
//! before each read, so all of it resident) and still about 3 KB with the smallest buffers it
//! allows (measured with a probe of idle sockets). Here the decoder is 16 bytes and holds nothing between
//! messages; it works on the caller's read buffer, which the server can drop while the socket is
//! idle; it never reserves a frame's declared length up front; and a server frame header is
//! written on the stack and sent with the shared payload, so one encoded message goes to many
//! sockets without a copy.

pub mod close;
pub mod codec;
pub mod deflate;
pub mod frame;
pub mod handshake;

pub use codec::{Decoder, Event, ProtocolError};
pub use frame::OpCode;
pub use handshake::HandshakeError;
