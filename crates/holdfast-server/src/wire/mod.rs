//! How subscribers' bytes look and wait on the wire: each streaming format's framing of
//! messages, heartbeats and notices ([`frame`]), and the queue of bytes a socket has not taken
//! yet ([`pending`]). A leaf: it knows messages (`holdfast-hub`) and wire formats
//! (`holdfast-proto`), not connections.

pub(crate) mod frame;
pub(crate) mod pending;
