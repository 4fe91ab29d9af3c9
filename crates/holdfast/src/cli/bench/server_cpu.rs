//! The CPU time a server on this machine has used, read from outside through `/proc`, so a bench
//! can report the server's CPU seconds per phase. The server is given by pid (`--server-pid`:
//! that process and its direct children, as nginx's master and workers) or found by its port:
//! every process holding the socket that listens on the port (`/proc/net/tcp{,6}` gives the
//! listening socket's inode; `/proc/*/fd/*` the processes whose descriptors link to
//! `socket:[inode]`; nginx's master and workers all hold it). Linux only; reading other users'
//! processes needs root, as the bench machine runs.

use std::collections::BTreeSet;

/// TCP state `LISTEN` in `/proc/net/tcp` (`include/net/tcp_states.h`).
const TCP_LISTEN: &str = "0A";

/// CPU seconds in user space and in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// What was used since `before`.
    pub fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes { user: self.user - before.user, system: self.system - before.system }
    }
}

/// The processes of one server.
#[derive(Debug, Clone)]
pub struct ServerCpu {
    pub pids: Vec<u32>,
}

impl ServerCpu {
    /// One process, without its children (this process, or a server that has none).
    pub fn process(pid: u32) -> ServerCpu {
        ServerCpu { pids: vec![pid] }
    }

    /// `pid` and its direct children.
    pub fn from_pid(pid: u32) -> Result<ServerCpu, String> {
        if cpu_times(pid).is_none() {
            return Err(format!("no process {pid}"));
        }
        let mut pids = vec![pid];
        pids.extend(children(pid));
        Ok(ServerCpu { pids })
    }

    /// The processes holding the socket that listens on `port` (this process excluded).
    pub fn from_port(port: u16) -> Result<ServerCpu, String> {
        let inodes = listening_inodes(port);
        if inodes.is_empty() {
            return Err(format!("no socket listens on port {port} (/proc/net/tcp, tcp6)"));
        }
        let pids = holders(&inodes);
        if pids.is_empty() {
            return Err(format!("no process found holding the socket of port {port} (root needed?)"));
        }
        Ok(ServerCpu { pids })
    }

    /// The processes of several servers together (the first error if one is not found).
    pub fn merged(each: impl Iterator<Item = Result<ServerCpu, String>>) -> Result<ServerCpu, String> {
        let mut pids = Vec::new();
        for cpu in each {
            pids.extend(cpu?.pids);
        }
        Ok(ServerCpu { pids })
    }

    /// CPU seconds (user + system) used so far by these processes, all threads; a process gone
    /// counts as zero.
    pub fn seconds(&self) -> f64 {
        self.times().total()
    }

    /// CPU seconds used so far by these processes, user and system apart (a process gone counts
    /// as zero). On loopback the system part includes the receiving side's TCP input and the
    /// reader's wake-up, which run inline in the writer's `write`.
    pub fn times(&self) -> CpuTimes {
        self.pids.iter().filter_map(|&pid| cpu_times(pid)).fold(CpuTimes::default(), |sum, one| CpuTimes {
            user: sum.user + one.user,
            system: sum.system + one.system,
        })
    }

    /// CPU seconds the processes' live threads have run so far, to the nanosecond
    /// (`/proc/PID/task/*/schedstat`), for a process that spends less than a clock tick (10 ms)
    /// on what is measured, as a broker on one message; a process without schedstat counts its
    /// ticks ([`ServerCpu::seconds`]). Threads that have exited are not counted.
    pub fn precise_seconds(&self) -> f64 {
        let each = |pid: u32| match run_ns(pid) {
            Some(ns) => ns as f64 / 1e9,
            None => cpu_times(pid).map_or(0.0, CpuTimes::total),
        };
        self.pids.iter().map(|&pid| each(pid)).sum()
    }
}

/// Nanoseconds on a CPU of every live thread of a process (first field of each
/// `/proc/PID/task/TID/schedstat`).
fn run_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may end between the listing and the read: it counts as nothing.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// utime and stime of a process (`/proc/PID/stat` fields 14 and 15, in clock ticks), in seconds.
fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (user, system) = (fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?);
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(CpuTimes { user: user as f64 / hz, system: system as f64 / hz })
}

/// The direct children of a process (from every thread's `children` list).
fn children(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Inodes of the sockets listening on `port`, IPv4 and IPv6.
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(parse_listening(&text, port));
        }
    }
    inodes
}

/// The inodes of lines of a `/proc/net/tcp` table that listen on `port`.
fn parse_listening(table: &str, port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
            continue;
        };
        let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        if *state == TCP_LISTEN && local_port == Some(port) {
            if let Ok(inode) = inode.parse() {
                out.push(inode);
            }
        }
    }
    out
}

/// Processes (other than this one) with a descriptor on one of `inodes`.
fn holders(inodes: &BTreeSet<u64>) -> Vec<u32> {
    let me = std::process::id();
    let wanted: BTreeSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return pids };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.to_str().is_some_and(|t| wanted.contains(t)))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_by_port() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000 100 0 0 10 0\n\
   1: 0100007F:4E21 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000 100 0 0 10 0\n\
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000 100 0 0 10 0\n";
        assert_eq!(parse_listening(table, 20001), vec![123456]);
        assert_eq!(parse_listening(table, 8080), vec![999]);
        assert!(parse_listening(table, 1).is_empty());
    }

    #[test]
    fn finds_this_test_listener_by_port_and_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!listening_inodes(port).is_empty());
        // This process is left out of the holders (a bench never measures itself).
        assert!(ServerCpu::from_port(port).is_err());
        let me = ServerCpu::from_pid(std::process::id()).unwrap();
        assert!(me.seconds() >= 0.0);
        let before = me.times();
        assert!(cpu_times(std::process::id()).is_some());
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(me.precise_seconds() > 0.0);
        // The spin ran in user space (ticks are 10 ms: 30 ms of spinning shows).
        let spent = me.times().since(before);
        assert!(spent.user > 0.0 && spent.total() >= spent.user, "{spent:?}");
    }
}
