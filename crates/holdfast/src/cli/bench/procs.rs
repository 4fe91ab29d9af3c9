//! `--procs P`: one bench spread over P processes, for when one process cannot hold the
//! connections (each may have at most its `RLIMIT_NOFILE` descriptors; 20,000 on the bench
//! machine). It owns re-executing the binary and the line protocol with the children; what a
//! bench's lines hold and how they merge is the bench's.
//!
//! The parent re-executes the same binary with the same arguments, less `--procs`, plus
//! `--json --child I/P`. Child `I` takes its share of the connections ([`Role::share`]) and talks
//! to the parent over its standard streams, in steps:
//!
//! 1. the child prints one JSON line (what it has done so far: opened, measured);
//! 2. the parent reads one line from every child, merges them, and when the next step is to
//!    begin writes `go` to every child's stdin ([`Children::go`]);
//! 3. the child waits for that line ([`wait_go`]) before its next step.
//!
//! So the children start each measured step together (within a pipe write), and the parent sees
//! each step's results from all of them at once. Histograms travel as `[value, count]` pairs
//! (`report::Latency::to_json`) and merge exactly. A child's stderr is the parent's; its progress
//! bar is hidden. A child ignores SIGTERM and SIGINT (its parent decides when it ends); at the
//! end of its stdin (a parent gone) it ends what it holds: `idle` reports and exits, `fanout`,
//! `transports` and `keepalive` stop.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, Stdio};
use std::sync::{Arc, Mutex};

use clap::{value_parser, Arg, ArgMatches, Command};
use serde_json::Value;

/// Adds `--procs` and the hidden `--child` to a bench's command.
pub fn args(command: Command) -> Command {
    command
        .arg(
            Arg::new("procs")
                .long("procs")
                .value_name("P")
                .value_parser(value_parser!(u64).range(1..=64))
                .default_value("1")
                .help("spread the connections over P processes (re-executing this binary) and merge their results"),
        )
        .arg(Arg::new("child").long("child").value_name("I/P").hide(true).value_parser(parse_child))
}

fn parse_child(text: &str) -> Result<(u64, u64), String> {
    let (index, of) = text.split_once('/').ok_or("I/P")?;
    let (index, of): (u64, u64) = (index.parse().map_err(|_| "I/P")?, of.parse().map_err(|_| "I/P")?);
    if of == 0 || index >= of {
        return Err("I/P with I < P".into());
    }
    Ok((index, of))
}

/// Which part a process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The whole bench in this process (`--procs 1`).
    Alone,
    /// Starts `procs` children and merges their lines; holds no connection of its own.
    Parent { procs: u64 },
    /// Child `index` of `of`: its share of the connections, steps on the parent's `go`.
    Child { index: u64, of: u64 },
}

impl Role {
    /// The role the command line asks for.
    pub fn of(args: &ArgMatches) -> Role {
        if let Some(&(index, of)) = args.get_one::<(u64, u64)>("child") {
            return Role::Child { index, of };
        }
        match args.get_one::<u64>("procs").copied().unwrap_or(1) {
            0 | 1 => Role::Alone,
            procs => Role::Parent { procs },
        }
    }

    /// This process's part of `total` (connections, requests): an equal split, the first
    /// `total mod P` children taking one more.
    pub fn share(&self, total: u64) -> u64 {
        match *self {
            Role::Alone => total,
            Role::Parent { .. } => 0,
            Role::Child { index, of } => total / of + u64::from(index < total % of),
        }
    }

    /// The number over all processes of this process's connection `local`: children take every
    /// P-th (child I: I, I + P, I + 2P, …), so the numbers of all children together are 0..total
    /// exactly when each opens its `share`.
    pub fn global(&self, local: u64) -> u64 {
        match *self {
            Role::Child { index, of } => index + local * of,
            Role::Alone | Role::Parent { .. } => local,
        }
    }

    pub fn is_child(&self) -> bool {
        matches!(self, Role::Child { .. })
    }
}

/// The running children of a parent.
pub struct Children {
    children: Vec<(Child, BufReader<ChildStdout>)>,
    goer: Goer,
}

/// Writes `go` to the children; may be used while another thread reads their lines.
#[derive(Clone)]
pub struct Goer(Arc<Mutex<Vec<Option<ChildStdin>>>>);

impl Goer {
    /// Tells every child to begin its next step.
    pub fn go(&self) -> Result<(), String> {
        let mut stdins = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (index, stdin) in stdins.iter_mut().enumerate() {
            if let Some(stdin) = stdin {
                stdin.write_all(b"go\n").and_then(|()| stdin.flush()).map_err(|e| format!("child {index}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Closes every child's stdin (a child waiting for `go` takes that as one).
    fn close(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter_mut().for_each(|stdin| drop(stdin.take()));
    }
}

impl Children {
    /// Starts `procs` children: this binary with this process's arguments, less `--procs`, plus
    /// `--json --child I/P`.
    pub fn spawn(procs: u64) -> Result<Children, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut args = child_args(std::env::args_os().skip(1));
        if !args.iter().any(|a| a == "--json") {
            args.push("--json".into());
        }
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for index in 0..procs {
            let mut child = Process::new(&exe)
                .args(&args)
                .arg("--child")
                .arg(format!("{index}/{procs}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("starting child {index}: {e}"))?;
            stdins.push(child.stdin.take());
            let stdout = BufReader::new(child.stdout.take().expect("piped"));
            children.push((child, stdout));
        }
        Ok(Children { children, goer: Goer(Arc::new(Mutex::new(stdins))) })
    }

    /// The next JSON line of every child, in child order (blocks until all have written one).
    pub fn lines(&mut self) -> Result<Vec<Value>, String> {
        let mut lines = Vec::with_capacity(self.children.len());
        for (index, (child, stdout)) in self.children.iter_mut().enumerate() {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return Err(format!("child {index} ended early ({status})"));
                }
                Ok(_) => {}
            }
            lines.push(serde_json::from_str(&line).map_err(|e| format!("child {index} wrote {line:?}: {e}"))?);
        }
        Ok(lines)
    }

    /// Tells every child to begin its next step.
    pub fn go(&mut self) -> Result<(), String> {
        self.goer.go()
    }

    /// A handle that writes `go` from elsewhere (while this thread reads lines).
    pub fn goer(&self) -> Goer {
        self.goer.clone()
    }

    /// Closes the children's stdin and waits for them; whether all exited with success.
    pub fn finish(mut self) -> bool {
        self.goer.close();
        let mut ok = true;
        for (child, _) in &mut self.children {
            ok &= child.wait().is_ok_and(|s| s.success());
        }
        ok
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        // An error path: children still running would hold their connections open.
        for (child, _) in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The arguments of this process without `--procs P` / `--procs=P`.
fn child_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match arg.to_str() {
            Some("--procs") => skip_value = true,
            Some(text) if text.starts_with("--procs=") => {}
            _ => out.push(arg),
        }
    }
    out
}

/// In a child: waits for the parent's `go`; `false` at the end of stdin (the parent is gone, or
/// has finished). Blocking.
pub fn wait_go_blocking() -> bool {
    let mut line = String::new();
    matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0)
}

/// In a child: waits for the parent's `go` without blocking the runtime (its connections keep
/// being served meanwhile); `false` at the end of stdin.
pub async fn wait_go() -> bool {
    tokio::task::spawn_blocking(wait_go_blocking).await.unwrap_or(false)
}

/// In a child: SIGTERM and SIGINT no longer end the process (a script stops the parent, which
/// ends its children in order). Call inside the runtime.
pub fn ignore_stop_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        if let Ok(mut stream) = signal(kind) {
            tokio::spawn(async move { while stream.recv().await.is_some() {} });
        }
    }
}

/// Sums the numeric field `key` over `lines`.
pub fn sum(lines: &[Value], key: &str) -> u64 {
    lines.iter().filter_map(|l| l.get(key).and_then(Value::as_u64)).sum()
}

/// The largest value of the numeric field `key` over `lines`.
pub fn max_f64(lines: &[Value], key: &str) -> Option<f64> {
    lines.iter().filter_map(|l| l.get(key).and_then(Value::as_f64)).reduce(f64::max)
}

/// The first non-null value of field `key` over `lines`.
pub fn first(lines: &[Value], key: &str) -> Value {
    lines.iter().filter_map(|l| l.get(key)).find(|v| !v.is_null()).cloned().unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for of in 1..6 {
            for total in [0, 1, 5, 17, 20_000] {
                let shares: Vec<u64> = (0..of).map(|index| Role::Child { index, of }.share(total)).collect();
                assert_eq!(shares.iter().sum::<u64>(), total);
                assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn global_numbers_of_the_shares_cover_the_total_once() {
        for of in 1..6 {
            for total in [0, 1, 5, 17, 600] {
                let mut all: Vec<u64> = (0..of)
                    .flat_map(|index| {
                        let role = Role::Child { index, of };
                        (0..role.share(total)).map(move |local| role.global(local))
                    })
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..total).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn children_get_the_arguments_without_procs() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let out = child_args(args(&["bench", "idle", "--procs", "3", "--connections", "9", "--procs=2"]).into_iter());
        assert_eq!(out, args(&["bench", "idle", "--connections", "9"]));
        assert_eq!(parse_child("1/3"), Ok((1, 3)));
        assert!(parse_child("3/3").is_err());
        assert!(parse_child("x").is_err());
    }
}
