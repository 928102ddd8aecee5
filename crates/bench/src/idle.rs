//! `idle`: N authenticated WebSocket connections that only answer pings, held for a while.
//!
//! The clients live in worker processes (this binary re-executed as `__idle-worker`), at most
//! `--per-process` each, because one process may open only 20,000 files here. Each worker
//! spreads its connections over source addresses 127.0.0.2, 127.0.0.3, … so that ephemeral ports
//! never run out. The parent registers the users (a few hundred: a token serves up to
//! `--per-user` connections), starts the workers, reads the server's resident memory from
//! /proc before and after, and at the end asks every connection for a `ping` round trip.
//!
//! With several nodes (`--nodes N`, or several `--url`s) connection `i` goes to node `i mod N`,
//! and memory and CPU are reported per node and summed.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Common;
use crate::conn::{self, Encoding, Endpoint, Ev, Handler, Out, Outbox, Proto};
use crate::nodes::{Nodes, sum_known};
use crate::procs;
use crate::setup;
use crate::stats::{Progress, note};

pub struct IdleArgs {
    pub connections: usize,
    pub per_user: usize,
    pub per_process: usize,
    pub hold: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub connections_requested: usize,
    pub connections_opened: u64,
    pub connect_failures: u64,
    pub first_failure: Option<String>,
    pub connect_seconds: f64,
    pub connects_per_s: f64,
    pub workers: usize,
    pub users: usize,
    pub hold_s: f64,
    pub closed_during_hold: u64,
    pub alive_after_hold: u64,
    pub all_stayed_up: bool,
    /// The node's memory right after registering the users (before its restart).
    pub server_rss_after_registration_bytes: Option<u64>,
    /// Whether the node was restarted after registration (not when it runs at --url).
    pub server_restarted: bool,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_connect_bytes: Option<u64>,
    pub server_rss_after_hold_bytes: Option<u64>,
    pub server_rss_per_connection_bytes: Option<f64>,
    pub server_open_fds: Option<usize>,
    pub server_cpu_s_connecting: Option<f64>,
    pub workers_rss_bytes: u64,
    /// `json` or `proto`.
    pub encoding: String,
    /// Per node (the `server_*` figures above are their sums).
    pub nodes: Vec<IdleNode>,
    /// A cluster's nats-server and PostgreSQL backends while the connections opened.
    pub broker_cpu_s_connecting: Option<f64>,
    pub database_cpu_s_connecting: Option<f64>,
}

/// One node's figures in `idle`.
#[derive(Debug, Clone, Serialize)]
pub struct IdleNode {
    pub node: String,
    /// Connections sent to it (every `N`th).
    pub connections: usize,
    /// Of those, how many opened.
    pub connections_opened: u64,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_connect_bytes: Option<u64>,
    pub rss_after_hold_bytes: Option<u64>,
    /// (after connect − before) / its connections opened.
    pub rss_per_connection_bytes: Option<f64>,
    pub open_fds: Option<usize>,
    pub cpu_s_connecting: Option<f64>,
}

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// The worker's answers (`connected …`, `alive …`); its `progress` lines go to `open`.
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    open: Arc<AtomicU64>,
    pid: i32,
}

/// Read a worker's output as it comes, whatever the parent is waiting for: progress lines update
/// its open-connection count at once (so that the live line counts every worker), the rest is
/// queued for [`read_line`]. The queue ends when the worker's output does.
fn read_worker_output(
    stdout: tokio::process::ChildStdout,
    open: Arc<AtomicU64>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("progress ") {
                if let Some(v) = rest.split(' ').next().and_then(|v| v.parse().ok()) {
                    open.store(v, Ordering::Relaxed);
                }
            } else if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub async fn run(common: &Common, args: &IdleArgs) -> Result<IdleResult, String> {
    let n = args.connections;
    let per_user = args.per_user.max(1);
    let users = n.div_ceil(per_user);
    let workers = n.div_ceil(args.per_process.max(1));
    let proto = common.encoding()?;
    let mut nodes = Nodes::start(common, per_user)?;
    note(format!(
        "idle: {n} connections as {users} users ({per_user} per token) on {} node(s), \
         in {workers} worker process(es), {} frames",
        nodes.len(),
        proto.encoding().unwrap_or("json")
    ));
    let accounts = setup::register(
        &nodes.addrs(),
        &setup::run_prefix(),
        users,
        common.setup_concurrency,
    )
    .await?;
    // Registration hashes passwords with argon2 (19 MiB each, on blocking threads), and the
    // allocator keeps much of that memory: restart the nodes on the same data so that the
    // baseline is a fresh process's, not the registrations' leftovers. Tokens stay valid.
    let rss_after_registration = sum_known(&nodes.rss());
    let restarted = nodes.restart()?;
    let addrs = nodes.addrs();
    let count = nodes.len();
    let dir = procs::temp_dir("idle", common.keep).map_err(|e| e.to_string())?;
    let tokens_file = dir.join("tokens.txt");
    let tokens: Vec<&str> = accounts.iter().map(|a| a.token.as_str()).collect();
    std::fs::write(&tokens_file, tokens.join("\n")).map_err(|e| e.to_string())?;

    // Settle, then the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = nodes.rss();
    let usage_before = nodes.usage();
    let addr_list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut spawned = Vec::new();
    for w in 0..workers {
        let first = w * args.per_process;
        let count = args.per_process.min(n - first);
        let mut child = tokio::process::Command::new(&exe)
            .arg("__idle-worker")
            .args(["--addr", &addr_list])
            .args(["--encoding", proto.encoding().unwrap_or("json")])
            // Bounded like this process, should it die without telling them.
            .args(["--timeout", &common.timeout_s.to_string()])
            .arg("--tokens")
            .arg(&tokens_file)
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--per-user", &per_user.to_string()])
            .args(["--per-source", &common.per_source.to_string()])
            .args([
                "--connect-concurrency",
                &common.connect_concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let pid = child.id().unwrap_or(0) as i32;
        let open = Arc::new(AtomicU64::new(0));
        spawned.push(Worker {
            child,
            stdin,
            lines: read_worker_output(stdout, open.clone()),
            open,
            pid,
        });
    }
    let opens: Vec<Arc<AtomicU64>> = spawned.iter().map(|w| w.open.clone()).collect();
    let progress_pids: Vec<i32> = nodes.nodes().iter().filter_map(|n| n.pid).collect();
    let _progress = Progress::start(move |_| {
        let open: u64 = opens.iter().map(|o| o.load(Ordering::Relaxed)).sum();
        let rss: Vec<Option<u64>> = progress_pids.iter().map(|p| procs::rss_bytes(*p)).collect();
        let rss = sum_known(&rss)
            .map(|r| format!(" | server rss {:.1} MiB", r as f64 / 1048576.0))
            .unwrap_or_default();
        format!("[idle] connections open {open}/{n}{rss}")
    });

    // Wait for every worker's `connected` line.
    let mut opened = 0u64;
    let mut opened_per_node = vec![0u64; count];
    let mut failed = 0u64;
    let mut first_failure = None;
    let mut connect_seconds: f64 = 0.0;
    for worker in &mut spawned {
        let connected = loop {
            let line = read_line(worker, Duration::from_secs(600)).await?;
            if let Some(connected) = Connected::parse(&line) {
                break connected;
            }
        };
        opened += connected.opened;
        for (sum, node) in opened_per_node.iter_mut().zip(&connected.opened_per_node) {
            *sum += node;
        }
        failed += connected.failed;
        connect_seconds = connect_seconds.max(connected.seconds);
        if !connected.first_failure.is_empty() {
            first_failure.get_or_insert(connected.first_failure);
        }
    }
    let connect_wall = started.elapsed().as_secs_f64();
    let usage_connected = nodes.usage();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = nodes.rss();
    let fds: Vec<Option<usize>> = nodes
        .nodes()
        .iter()
        .map(|n| n.pid.and_then(procs::open_fds))
        .collect();
    note(format!(
        "idle: {opened} open ({failed} failed) in {connect_wall:.1}s; holding for {:.0}s",
        args.hold.as_secs_f64()
    ));

    // Hold (the workers' output is read meanwhile: they report closes as they happen).
    tokio::time::sleep(args.hold).await;
    let rss_held = nodes.rss();
    let workers_rss: u64 = spawned.iter().filter_map(|w| procs::rss_bytes(w.pid)).sum();

    // Every connection answers a ping?
    let mut alive = 0u64;
    let mut closed = 0u64;
    for worker in &mut spawned {
        worker
            .stdin
            .write_all(b"check\n")
            .await
            .map_err(|e| e.to_string())?;
        worker.stdin.flush().await.map_err(|e| e.to_string())?;
    }
    for worker in &mut spawned {
        loop {
            let line = read_line(worker, Duration::from_secs(60)).await?;
            if let Some(rest) = line.strip_prefix("alive ") {
                let mut it = rest.split(' ');
                alive += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                closed += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                break;
            }
        }
    }
    for worker in &mut spawned {
        let _ = worker.stdin.write_all(b"exit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
    }
    let per_node_figures = nodes.figures(&usage_before, &usage_connected);
    nodes.stop();
    let per_connection =
        |before: Option<u64>, after: Option<u64>, connections: u64| match (before, after) {
            (Some(b), Some(a)) if connections > 0 => {
                Some((a as f64 - b as f64) / connections as f64)
            }
            _ => None,
        };
    let node_rows: Vec<IdleNode> = per_node_figures
        .into_iter()
        .enumerate()
        .map(|(i, figures)| {
            // Connection j goes to node j mod count.
            let connections = n / count + usize::from(i < n % count);
            // Divided by those opened, as the sum is: a failed connection costs the node nothing.
            IdleNode {
                node: figures.node,
                connections,
                connections_opened: opened_per_node[i],
                rss_before_bytes: rss_before[i],
                rss_after_connect_bytes: rss_connected[i],
                rss_after_hold_bytes: rss_held[i],
                rss_per_connection_bytes: per_connection(
                    rss_before[i],
                    rss_connected[i],
                    opened_per_node[i],
                ),
                open_fds: fds[i],
                cpu_s_connecting: figures.cpu_s,
            }
        })
        .collect();
    // Sums only when every node is known (a sum over some nodes would be a wrong figure).
    let all = |v: &[Option<u64>]| {
        v.iter()
            .all(Option::is_some)
            .then(|| sum_known(v))
            .flatten()
    };
    let (rss_before, rss_connected, rss_held) =
        (all(&rss_before), all(&rss_connected), all(&rss_held));
    Ok(IdleResult {
        connections_requested: n,
        connections_opened: opened,
        connect_failures: failed,
        first_failure,
        connect_seconds: connect_seconds.max(0.001),
        connects_per_s: opened as f64 / connect_seconds.max(0.001),
        workers,
        users,
        hold_s: args.hold.as_secs_f64(),
        closed_during_hold: closed,
        alive_after_hold: alive,
        all_stayed_up: opened as usize == n && closed == 0 && alive == opened,
        server_rss_after_registration_bytes: rss_after_registration,
        server_restarted: restarted,
        server_rss_before_bytes: rss_before,
        server_rss_after_connect_bytes: rss_connected,
        server_rss_after_hold_bytes: rss_held,
        server_rss_per_connection_bytes: per_connection(rss_before, rss_connected, opened),
        server_open_fds: fds
            .iter()
            .all(Option::is_some)
            .then(|| fds.iter().flatten().sum()),
        server_cpu_s_connecting: usage_connected.nodes_since(&usage_before),
        workers_rss_bytes: workers_rss,
        encoding: proto.encoding().unwrap_or("json").to_string(),
        nodes: node_rows,
        broker_cpu_s_connecting: usage_connected.broker_since(&usage_before),
        database_cpu_s_connecting: usage_connected.database_since(&usage_before),
    })
}

/// A worker's line once its connections are set up:
/// `connected <opened> <failed> <seconds> <opened per node, comma-separated> <first failure>`.
#[derive(Debug, PartialEq)]
struct Connected {
    opened: u64,
    /// By the node's index in `--addr`: connection `i` goes to node `i mod len`.
    opened_per_node: Vec<u64>,
    failed: u64,
    seconds: f64,
    /// Empty if none failed; the last field, since it may hold spaces.
    first_failure: String,
}

impl Connected {
    fn new(nodes: usize) -> Connected {
        Connected {
            opened: 0,
            opened_per_node: vec![0; nodes.max(1)],
            failed: 0,
            seconds: 0.0,
            first_failure: String::new(),
        }
    }

    /// Connection `i` (of the whole run) opened.
    fn open(&mut self, i: usize) {
        self.opened += 1;
        let nodes = self.opened_per_node.len();
        self.opened_per_node[i % nodes] += 1;
    }

    fn fail(&mut self, why: &str) {
        self.failed += 1;
        if self.first_failure.is_empty() {
            self.first_failure = why.replace('\n', " ");
        }
    }

    fn line(&self) -> String {
        let per_node: Vec<String> = self.opened_per_node.iter().map(u64::to_string).collect();
        format!(
            "connected {} {} {:.3} {} {}",
            self.opened,
            self.failed,
            self.seconds,
            per_node.join(","),
            self.first_failure
        )
    }

    fn parse(line: &str) -> Option<Connected> {
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        let ["connected", opened, failed, seconds, per_node, rest @ ..] = fields.as_slice() else {
            return None;
        };
        Some(Connected {
            opened: opened.parse().unwrap_or(0),
            opened_per_node: per_node
                .split(',')
                .map(|n| n.parse().unwrap_or(0))
                .collect(),
            failed: failed.parse().unwrap_or(0),
            seconds: seconds.parse().unwrap_or(0.0),
            first_failure: rest.first().map_or("", |f| f).to_string(),
        })
    }
}

async fn read_line(worker: &mut Worker, timeout: Duration) -> Result<String, String> {
    match tokio::time::timeout(timeout, worker.lines.recv()).await {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err("a worker exited early".into()),
        Err(_) => Err("a worker did not answer in time".into()),
    }
}

/// Settings of one worker process.
pub struct WorkerArgs {
    /// The nodes' addresses: connection `i` goes to `addrs[i mod len]`.
    pub addrs: Vec<String>,
    pub proto: Proto,
    pub tokens: PathBuf,
    pub first: usize,
    pub count: usize,
    pub per_user: usize,
    pub per_source: usize,
    pub connect_concurrency: usize,
}

#[derive(Default)]
struct WorkerShared {
    open: AtomicU64,
    closed: AtomicU64,
    pongs: AtomicU64,
}

struct IdleHandler(Arc<WorkerShared>);

impl Handler for IdleHandler {
    fn on(&mut self, ev: Ev<'_>, _: &Outbox) {
        match ev {
            Ev::Reply { id: 1, .. } => {
                self.0.pongs.fetch_add(1, Ordering::Relaxed);
            }
            Ev::Closed { .. } => {
                self.0.closed.fetch_add(1, Ordering::Relaxed);
                self.0.open.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// The hidden `__idle-worker` subcommand: hold connections, report on stdout, obey stdin.
pub async fn worker(args: WorkerArgs) -> Result<(), String> {
    let limit = procs::raise_nofile();
    if args.count as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more than this process's {limit} open files; use --per-process",
            args.count
        ));
    }
    let addrs = args
        .addrs
        .iter()
        .map(|a| procs::loopback(a))
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err("no address to connect to".into());
    }
    let text = std::fs::read_to_string(&args.tokens).map_err(|e| e.to_string())?;
    let tokens: Vec<&str> = text.lines().collect();
    let encoding = Arc::new(Encoding::default());
    let shared = Arc::new(WorkerShared::default());
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.count);
    let reporter_shared = shared.clone();
    let reporter = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!("progress {}", reporter_shared.open.load(Ordering::Relaxed));
        }
    });
    for local in 0..args.count {
        let i = args.first + local;
        let token = tokens
            .get(i / args.per_user.max(1))
            .ok_or("not enough tokens")?
            .to_string();
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let endpoint = Endpoint {
            addr: addrs[i % addrs.len()],
            proto: args.proto,
        };
        let encoding = encoding.clone();
        let shared = shared.clone();
        let source = conn::source_for(i, args.per_source);
        tasks.push(tokio::spawn(async move {
            let handler = Box::new(IdleHandler(shared.clone()));
            let result =
                conn::open(&endpoint, Some(source), &token, i as u64, encoding, handler).await;
            drop(permit);
            if result.is_ok() {
                shared.open.fetch_add(1, Ordering::Relaxed);
            }
            result
        }));
    }
    let mut conns = Vec::with_capacity(args.count);
    let mut connected = Connected::new(addrs.len());
    for (local, task) in tasks.into_iter().enumerate() {
        match task.await.map_err(|e| e.to_string())? {
            Ok(conn) => {
                connected.open(args.first + local);
                conns.push(conn);
            }
            Err(e) => connected.fail(&e.to_string()),
        }
    }
    // Connected: ready before this line is printed, so the connect time ends here.
    connected.seconds = started.elapsed().as_secs_f64();
    println!("{}", connected.line());
    let closed_at_connect = shared.closed.load(Ordering::Relaxed);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "check" => {
                let before = shared.pongs.load(Ordering::Relaxed);
                for conn in &conns {
                    conn.send(Out::Ping { id: 1 });
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                let open = shared.open.load(Ordering::Relaxed);
                while shared.pongs.load(Ordering::Relaxed) - before < open
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                println!(
                    "alive {} {}",
                    shared.pongs.load(Ordering::Relaxed) - before,
                    shared.closed.load(Ordering::Relaxed) - closed_at_connect
                );
            }
            "exit" => break,
            _ => {}
        }
    }
    reporter.abort();
    for conn in &conns {
        conn.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_report_the_connections_opened_on_each_node() {
        // Five connections over two nodes: a worker with 0..3, one with 3..5 whose 4 failed.
        let mut first = Connected::new(2);
        for i in 0..3 {
            first.open(i);
        }
        let mut second = Connected::new(2);
        second.open(3);
        second.fail("HTTP 503: at capacity\ntry later");
        second.seconds = 1.5;
        let (first, second) = (
            Connected::parse(&first.line()).unwrap(),
            Connected::parse(&second.line()).unwrap(),
        );
        assert_eq!(first.opened_per_node, vec![2, 1]);
        assert_eq!(first.first_failure, "");
        assert_eq!(
            second,
            Connected {
                opened: 1,
                opened_per_node: vec![0, 1],
                failed: 1,
                seconds: 1.5,
                first_failure: "HTTP 503: at capacity try later".into(),
            }
        );
        assert_eq!(Connected::parse("alive 3 0"), None);
    }
}
