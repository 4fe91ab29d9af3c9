//! The socket under a streaming link or a WebSocket: plain TCP for `http://` (`ws://`), TLS over
//! TCP for `https://` (`wss://`). Both links read and write it through `AsyncRead`/`AsyncWrite`
//! only, so each has one code path whatever the scheme.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Where a URL points: host (brackets of an IPv6 literal removed), port, and whether to use TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// From an `http`, `https`, `ws` or `wss` URL (default ports 80 and 443).
    pub(crate) fn of(url: &str) -> Result<Endpoint> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Error::invalid(format!("URL {url}: {e}")))?;
        let tls = match parsed.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => return Err(Error::invalid(format!("URL {url}: scheme {other} (http, https, ws or wss)"))),
        };
        let host = parsed.host_str().ok_or_else(|| Error::invalid(format!("URL {url}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        Ok(Endpoint { host, port, tls })
    }

    /// `host:port` as a Host field and messages write it (an IPv6 literal in brackets).
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A connected socket, with TLS or without.
pub(crate) enum Socket {
    Plain(TcpStream),
    /// Boxed: a TLS stream is about 1 KB of state, a TCP stream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// Connects to `to` (and shakes hands, for TLS, checking the certificate against `tls`).
    /// Unbounded: the caller bounds it with its connect timeout.
    pub(crate) async fn connect(to: &Endpoint, tls: &TlsOptions) -> Result<Socket> {
        let tcp = TcpStream::connect((to.host.as_str(), to.port))
            .await
            .map_err(|e| Error::connect(format!("connect to {}", to.authority()), Some(Box::new(e) as _)))?;
        let _ = tcp.set_nodelay(true);
        if !to.tls {
            return Ok(Socket::Plain(tcp));
        }
        Ok(Socket::Tls(Box::new(tls.handshake(&to.host, tcp).await?)))
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, data),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Plain(s) => s.is_write_vectored(),
            Socket::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_scheme_ports_and_brackets() {
        let e = Endpoint::of("https://example.com/sub/a").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("example.com", 443, true));
        let e = Endpoint::of("ws://[::1]:7700/sub/a").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("::1", 7700, false));
        assert_eq!(e.authority(), "[::1]:7700");
        assert_eq!(Endpoint::of("wss://h/").unwrap().port, 443);
        assert!(Endpoint::of("ftp://h/").unwrap_err().is_invalid());
    }
}
