//! Real Redis servers for scale-out tests: one `redis-server` on a free loopback port in a temp
//! directory of its own ([`RedisServer`]), or a three-master Redis Cluster ([`RedisCluster`]).
//!
//! A server can be stopped (SIGTERM), killed (SIGKILL) and restarted on the same port and
//! directory, keeping its data only with [`Persistence::AppendOnly`]: that is how tests take the
//! broker away from running Holdfast nodes and give it back, with or without its streams. Nothing
//! here talks Redis beyond what a health check needs (inline commands over a raw socket): the
//! broker under test is the only Redis client.
//!
//! `redis-server` (and `redis-cli`, for the cluster) come from `scripts/setup.sh`; when
//! `redis-server` is not on `PATH` the `start` functions print one line and give `None`, so a test
//! returns early instead of failing on a machine without Redis. Every wait is bounded.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::IO_TIMEOUT;

/// How long a Redis server may take to answer PING after it was spawned (it loads its AOF first).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a SIGTERMed server may take to exit (it flushes its AOF) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Cluster nodes of a [`RedisCluster`]: the fewest masters `redis-cli --cluster create` accepts.
const CLUSTER_MASTERS: usize = 3;

/// How long a test Sentinel waits before it declares a silent primary down (ms).
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1000;

/// Node timeout of cluster nodes, in milliseconds: short, so a test cluster settles quickly.
const CLUSTER_NODE_TIMEOUT_MS: &str = "2000";

/// Temp directories made by this process so far (their names stay unique across tests).
static DIRS: AtomicUsize = AtomicUsize::new(0);

/// Whether a restarted server finds its data again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `--appendonly yes`: every write goes to the AOF, so a stop, a kill or a restart keeps the
    /// streams (the default `appendfsync everysec` loses nothing to a process kill).
    AppendOnly,
    /// `--appendonly no` (and `--save ""`): a restart comes back empty, as if Redis lost its data.
    None,
}

/// Whether `redis-server` can be run; prints why not when it cannot.
pub fn redis_available() -> bool {
    match Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => true,
        _ => {
            println!("redis-server is not on PATH: skipping (scripts/setup.sh installs it)");
            false
        }
    }
}

/// One `redis-server` child process, on `127.0.0.1:port`, with its files in its own temp directory
/// (removed on drop, the process killed).
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// A Sentinel: its configuration file (written in `dir`), given first, with `--sentinel`.
    sentinel_config: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING; `None` (after one printed
    /// line) when `redis-server` is not installed.
    pub async fn start(persistence: Persistence) -> Option<RedisServer> {
        RedisServer::start_with(persistence, &[]).await
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (`["--maxmemory", "10mb"]`).
    pub async fn start_with(persistence: Persistence, extra: &[&str]) -> Option<RedisServer> {
        if !redis_available() {
            return None;
        }
        let appendonly = match persistence {
            Persistence::AppendOnly => "yes",
            Persistence::None => "no",
        };
        let mut args: Vec<String> = ["--appendonly", appendonly].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Some(RedisServer::spawn_on_free_port(args, |_| Vec::new(), None).await)
    }

    /// A Sentinel (`redis-server sentinel.conf --sentinel`) watching the primary on
    /// `127.0.0.1:master` under `name`, quorum 1, which declares it down after
    /// [`SENTINEL_DOWN_AFTER_MS`] and promotes a replica.
    pub async fn start_sentinel(name: &str, master: u16) -> Option<RedisServer> {
        if !redis_available() {
            return None;
        }
        Some(RedisServer::spawn_on_free_port(Vec::new(), |_| Vec::new(), Some((name, master))).await)
    }

    /// Spawns with `args` plus whatever `per_port` adds for the chosen port, retrying on another
    /// port if the first one was taken between choosing it and the server binding it.
    async fn spawn_on_free_port(
        args: Vec<String>,
        per_port: impl Fn(u16) -> Vec<String>,
        sentinel: Option<(&str, u16)>,
    ) -> RedisServer {
        let dir = temp_dir();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut all = args.clone();
            all.extend(per_port(port));
            let sentinel_config = sentinel.map(|(name, master)| {
                let path = dir.join("sentinel.conf");
                let text = format!(
                    "sentinel monitor {name} 127.0.0.1 {master} 1\n\
                     sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {name} 5000\n"
                );
                std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                path
            });
            let mut server = RedisServer { port, dir: dir.clone(), args: all, sentinel_config, child: None };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(log) => {
                    last_log = log;
                    // Keep the directory for the next attempt: take it out of the failed server.
                    server.kill();
                    server.dir = PathBuf::new();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start in {}; its log:\n{last_log}", dir.display());
    }

    /// Spawns the process with the stored arguments and waits for PING; on failure gives the log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.sentinel_config {
            command.arg(config).arg("--sentinel");
        }
        // SAFETY: runs in the forked child before exec; prctl(2) is async-signal-safe and touches
        // no memory of ours. It makes the kernel kill the server if the test process dies without
        // dropping it (a test binary killed by a timeout), so no server outlives its test.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
            .arg(&self.dir)
            .args(["--daemonize", "no", "--logfile", "redis.log", "--protected-mode", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(self.addr()).await {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                return Err(self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:port/0`: what Holdfast's `broker` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its data directory (AOF, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Stops the server the polite way (SIGTERM: it flushes its AOF and exits; no RDB is written,
    /// `--save ""`) and waits for it to exit, killing it if it takes longer than 5 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the server at once (SIGKILL) and reaps it: no shutdown work, no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (stopping it first if it runs) and
    /// waits until it answers PING. With [`Persistence::AppendOnly`] it loads its AOF back;
    /// without, it comes back empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                // The port may still be held for a moment by the old process's sockets.
                Err(log) if Instant::now() < deadline => {
                    let _ = log;
                    self.kill();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(log) => panic!("redis-server did not restart on port {}; its log:\n{log}", self.port),
            }
        }
    }

    /// Runs one command (inline form, arguments without spaces) and gives the raw reply bytes as
    /// text: `+OK`, `:3`, a bulk string's content, or `-ERR …`.
    pub async fn command(&self, command: &str) -> String {
        command_at(self.addr(), command).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Three `redis-server --cluster-enabled yes` masters joined into one cluster by
/// `redis-cli --cluster create` (no replicas), with all 16384 slots covered.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`; `None` (after one printed line) when `redis-server` is not installed.
    /// Panics (with `redis-cli`'s output) if `redis-cli` is missing or the cluster does not form.
    pub async fn start() -> Option<RedisCluster> {
        if !redis_available() {
            return None;
        }
        let mut nodes = Vec::with_capacity(CLUSTER_MASTERS);
        for _ in 0..CLUSTER_MASTERS {
            let args: Vec<String> = [
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                CLUSTER_NODE_TIMEOUT_MS,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // The cluster bus port is chosen free too (by default it is port + 10000, which may be
            // taken or out of range).
            let node =
                RedisServer::spawn_on_free_port(args, |_| vec!["--cluster-port".into(), free_port().to_string()], None)
                    .await;
            nodes.push(node);
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(|n| n.addr().to_string()));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].iter().map(|s| s.to_string()));
        let output = tokio::task::spawn_blocking(move || Command::new("redis-cli").args(&create).output())
            .await
            .expect("redis-cli task")
            .unwrap_or_else(|e| panic!("redis-cli is missing ({e}); scripts/setup.sh installs it"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + IO_TIMEOUT * 2;
        for node in &cluster.nodes {
            loop {
                let info = node.command("CLUSTER INFO").await;
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "node {} never reached cluster_state:ok: {info}", node.addr());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Some(cluster)
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`: what Holdfast's `broker` takes.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The nodes, to stop or inspect one.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// A new, empty directory under the system temp dir, unique to this process and call.
fn temp_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("holdfast-redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A loopback port nobody listens on right now (the kernel's choice for port 0).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Whether `addr` answers an inline `PING` with `+PONG` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

/// Sends one inline command and reads one reply (simple, integer, error or bulk string).
async fn command_at(addr: SocketAddr, command: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(reply) = parse_reply(&buf) {
                return Ok::<_, std::io::Error>(reply);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("redis {addr} {command:?}: {e}"),
        Err(_) => panic!("redis {addr} {command:?}: no reply within {IO_TIMEOUT:?}"),
    }
}

/// One complete RESP reply's text, or `None` if more bytes are needed.
fn parse_reply(buf: &[u8]) -> Option<String> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.parse().ok()?;
        if len < 0 {
            return Some(String::new());
        }
        let start = line_end + 2;
        let end = start + len as usize;
        return (buf.len() >= end).then(|| String::from_utf8_lossy(&buf[start..end]).into_owned());
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_appendonly_server_keeps_its_data_across_a_restart_and_a_kill() {
        let Some(mut redis) = RedisServer::start(Persistence::AppendOnly).await else { return };
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
        assert_eq!(redis.command("SET k v").await, "+OK");
        redis.restart().await;
        assert_eq!(redis.command("GET k").await, "v");
        redis.kill();
        assert!(!redis.is_running());
        assert!(!ping(redis.addr()).await, "nothing answers after a kill");
        redis.restart().await;
        assert_eq!(redis.command("GET k").await, "v");
    }

    #[tokio::test]
    async fn a_server_without_persistence_comes_back_empty() {
        let Some(mut redis) = RedisServer::start(Persistence::None).await else { return };
        assert_eq!(redis.command("SET k v").await, "+OK");
        redis.stop().await;
        assert!(!ping(redis.addr()).await, "nothing answers after a stop");
        redis.restart().await;
        assert_eq!(redis.command("EXISTS k").await, ":0");
        let dir = redis.dir().to_path_buf();
        drop(redis);
        assert!(!dir.exists(), "the temp dir goes with the server");
    }

    #[tokio::test]
    async fn three_masters_form_a_cluster_covering_every_slot() {
        let Some(mut cluster) = RedisCluster::start().await else { return };
        let url = cluster.url();
        assert!(url.starts_with("redis+cluster://127.0.0.1:"), "{url}");
        assert_eq!(url.matches(',').count(), 2, "{url}");
        let info = cluster.nodes()[0].command("CLUSTER INFO").await;
        assert!(info.contains("cluster_slots_ok:16384") && info.contains("cluster_known_nodes:3"), "{info}");
    }
}
