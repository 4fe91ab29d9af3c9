//! The servers a bench spreads its connections over, and the source addresses it connects from:
//! `--server host:port,host:port,…` (several nodes of one cluster: `fanout` hands subscriber `g`
//! to server `g mod S`, `publish` connection `w` to server `w mod S`) and `--bind ip,ip,…`
//! (`fanout`: subscriber `g` connects from address `(g div S) mod B`, so every server sees every
//! source address). Connections only; what runs over them is the bench's.
//!
//! A bound socket gets `IP_BIND_ADDRESS_NO_PORT`, so its port is picked at `connect` for that
//! destination: one source address then holds an ephemeral range per server (~28,000 each with
//! Linux's default `ip_local_port_range`) rather than one range for all servers together.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

/// One server: its address, and the `Host` field requests to it carry.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

/// `host:port[,host:port…]`, each resolved to its first address.
pub fn parse(list: &str) -> Result<Vec<Target>, String> {
    let targets = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|host| {
            let addr =
                host.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or(format!("cannot resolve {host}"))?;
            Ok(Target { addr, host: host.to_string() })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if targets.is_empty() {
        return Err("no server given".into());
    }
    Ok(targets)
}

/// `ip[,ip…]` (empty: none).
pub fn parse_binds(list: &str) -> Result<Vec<IpAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|ip| ip.parse::<IpAddr>().map_err(|e| format!("--bind {ip}: {e}")))
        .collect()
}

/// The servers as given, comma-separated (what the reports show).
pub fn hosts(targets: &[Target]) -> String {
    targets.iter().map(|t| t.host.as_str()).collect::<Vec<_>>().join(",")
}

/// Connects to `addr`, from source address `bind` if given (its port picked at connect).
pub async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = bind else { return TcpStream::connect(addr).await };
    let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local integer, on a socket
    // this function owns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order() {
        let targets = parse("127.0.0.1:1, 127.0.0.1:2,").unwrap();
        assert_eq!(targets.iter().map(|t| t.addr.port()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(hosts(&targets), "127.0.0.1:1,127.0.0.1:2");
        assert!(parse("").is_err());
        assert_eq!(parse_binds("127.0.0.2,127.0.0.3").unwrap().len(), 2);
        assert!(parse_binds("").unwrap().is_empty());
        assert!(parse_binds("nope").is_err());
    }

    #[tokio::test]
    async fn a_bound_connection_comes_from_its_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let (stream, accepted) = tokio::join!(connect(addr, Some(source)), listener.accept());
        assert_eq!(stream.unwrap().local_addr().unwrap().ip(), source);
        assert_eq!(accepted.unwrap().1.ip(), source);
    }
}
