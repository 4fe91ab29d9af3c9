//! The WebSocket link (tokio-tungstenite, an RFC 6455 implementation independent of the
//! server's). The subscription and its cursor go in the handshake's URL; each text frame is a
//! JSON envelope, a ping is a heartbeat (tungstenite answers it with a pong on the next read), a
//! close frame ends the link with its code. tungstenite runs over the same socket as the
//! streaming link (TCP, or TLS for `wss://`, connected and checked by the SDK): it brings no TLS
//! of its own.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::socket::{Endpoint, Socket};
use super::{cursor_header, envelope, heartbeat_header, Ended, Item};
use crate::error::Error;
use crate::tls::TlsOptions;

/// Read buffer per socket: tungstenite's default is 128 KiB, which at 10,000 subscribers would be
/// 1.3 GB; envelopes are small and a larger message simply takes several reads.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Largest message accepted (the server's `ws_max_message_bytes` default is 1 MiB for what
/// clients send; what it sends is a published message, at most `max_body_bytes` plus envelope).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The close code the server ends a WebSocket with when its token expired (`token_expired`).
const TOKEN_EXPIRED_CLOSE: u16 = 4003;

pub(crate) struct WsLink {
    socket: WebSocketStream<Socket>,
}

impl WsLink {
    /// Connects (with TLS for `wss://`, trusting what `tls` says) and upgrades; gives the link,
    /// its `Holdfast-Heartbeat` and its `Holdfast-Cursor`.
    pub(crate) async fn open(
        url: &str,
        token: Option<&str>,
        tls: &TlsOptions,
        connect_timeout: Duration,
    ) -> Result<(WsLink, Option<Duration>, Option<String>), Error> {
        let to = Endpoint::of(url)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Only pongs and a close go out: write them at once.
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024)
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let handshake = async {
            let socket = Socket::connect(&to, tls).await?;
            let mut request = url.into_client_request().map_err(handshake_error)?;
            if let Some(token) = token {
                let value = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Error::invalid("a token that cannot go in a header"))?;
                request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, value);
            }
            tokio_tungstenite::client_async_with_config(request, socket, Some(config)).await.map_err(handshake_error)
        };
        let (socket, response) = match tokio::time::timeout(connect_timeout, handshake).await {
            Err(_) => return Err(Error::timeout(format!("WebSocket handshake with {}", to.authority()))),
            Ok(result) => result?,
        };
        let announced = heartbeat_header(response.headers());
        let start = cursor_header(response.headers());
        Ok((WsLink { socket }, announced, start))
    }

    /// Waits up to `watch` for a frame and pushes what it carries.
    pub(crate) async fn step(
        &mut self,
        channel: &str,
        watch: Duration,
        out: &mut Vec<Item>,
    ) -> Result<(), Option<Ended>> {
        let frame = match tokio::time::timeout(watch, self.socket.next()).await {
            Err(_) => return Err(None),
            Ok(None) => return Err(Some(Ended::Closed("the server closed the connection".into()))),
            Ok(Some(Err(e))) => return Err(Some(ended_by(e))),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            WsMessage::Text(text) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str())
                    .map_err(|_| Some(Ended::Failed(Error::protocol("a text frame that is not JSON"))))?;
                if let Some(op) = v["op"].as_str() {
                    // Answers to ops; this link sends none but pongs, so only errors matter.
                    if op == "error" {
                        let label = v["code"].as_str().map(str::to_string);
                        let reason = v["reason"].as_str().map(str::to_string);
                        return Err(Some(Ended::Failed(Error::refused(None, label, reason))));
                    }
                    return Ok(());
                }
                out.push(envelope::item(&v, channel).map_err(|e| Some(Ended::Failed(e)))?);
                Ok(())
            }
            WsMessage::Ping(_) => {
                out.push(Item::Heartbeat);
                Ok(())
            }
            // The server's close code for an expired token (docs/protocol.md, "Access control").
            WsMessage::Close(Some(frame)) if u16::from(frame.code) == TOKEN_EXPIRED_CLOSE => {
                Err(Some(Ended::TokenExpired))
            }
            WsMessage::Close(frame) => Err(Some(Ended::Closed(close_words(frame.as_ref())))),
            WsMessage::Binary(_) => Err(Some(Ended::Failed(Error::protocol("a binary frame on a JSON subscription")))),
            WsMessage::Pong(_) | WsMessage::Frame(_) => Ok(()),
        }
    }
}

fn close_words(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("the server closed the WebSocket ({} {})", u16::from(frame.code), frame.reason.as_str()),
        None => "the server closed the WebSocket".into(),
    }
}

fn handshake_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            crate::error::from_answer(status, body)
        }
        tungstenite::Error::Io(io) => Error::connect("WebSocket handshake", Some(Box::new(io) as _)),
        other => Error::protocol(format!("WebSocket handshake: {other}")),
    }
}

fn ended_by(e: tungstenite::Error) -> Ended {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Ended::Closed("the WebSocket closed".into())
        }
        tungstenite::Error::Io(io) => Ended::Failed(Error::connect("reading the WebSocket", Some(Box::new(io) as _))),
        tungstenite::Error::Protocol(p) => {
            // A reset or EOF without a close frame shows up here.
            Ended::Failed(Error::connect(format!("WebSocket: {p}"), None))
        }
        other => Ended::Failed(Error::protocol(format!("WebSocket: {other}"))),
    }
}
