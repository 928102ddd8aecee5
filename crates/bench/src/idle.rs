//! `idle`: N authenticated WebSocket connections that only answer pings, held for a while.
//!
//! The clients live in worker processes (this binary re-executed as `__idle-worker`), at most
//! `--per-process` each, because one process may open only 20,000 files here. Each worker
//! spreads its connections over source addresses 127.0.0.2, 127.0.0.3, … so that ephemeral ports
//! never run out. The parent registers the users (a few hundred: a token serves up to
//! `--per-user` connections), starts the workers, reads the server's resident memory from
//! /proc before and after, and at the end asks every connection for a `ping` round trip.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Common;
use crate::conn::{self, Encoding, Endpoint, Ev, Handler, Out, Outbox, Proto};
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
}

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    open: Arc<AtomicU64>,
    pid: i32,
}

pub async fn run(common: &Common, args: &IdleArgs) -> Result<IdleResult, String> {
    let n = args.connections;
    let per_user = args.per_user.max(1);
    let users = n.div_ceil(per_user);
    let workers = n.div_ceil(args.per_process.max(1));
    let (mut server, addr, pid) = match &common.url {
        Some(url) => (None, procs::url_addr(url)?, common.pid),
        None => {
            let s = procs::start_natter(&common.launch(), None, per_user)?;
            let (addr, pid) = (s.addr, s.pid);
            (Some(s), addr, Some(pid))
        }
    };
    note(format!(
        "idle: {n} connections as {users} users ({per_user} per token) in {workers} worker process(es)"
    ));
    let accounts =
        setup::register(addr, &setup::run_prefix(), users, common.setup_concurrency).await?;
    // Registration hashes passwords with argon2 (19 MiB each, on blocking threads), and the
    // allocator keeps much of that memory: restart the node on the same data directory so that
    // the baseline is a fresh process's, not the registrations' leftovers. Tokens stay valid.
    let rss_after_registration = pid.and_then(procs::rss_bytes);
    let (addr, pid) = match server.take() {
        Some(mut old) => {
            let dir = old.dir.clone().ok_or("no data dir")?;
            old.stop(Duration::from_secs(10));
            drop(old);
            let fresh = procs::start_natter(&common.launch(), Some(&dir), per_user)?;
            let (addr, pid) = (fresh.addr, fresh.pid);
            server = Some(fresh);
            (addr, Some(pid))
        }
        None => (addr, pid),
    };
    let dir = procs::temp_dir("idle", common.keep).map_err(|e| e.to_string())?;
    let tokens_file = dir.join("tokens.txt");
    let tokens: Vec<&str> = accounts.iter().map(|a| a.token.as_str()).collect();
    std::fs::write(&tokens_file, tokens.join("\n")).map_err(|e| e.to_string())?;

    // Settle, then the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = pid.and_then(procs::rss_bytes);
    let cpu_before = pid.and_then(procs::cpu_seconds);

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut spawned = Vec::new();
    for w in 0..workers {
        let first = w * args.per_process;
        let count = args.per_process.min(n - first);
        let mut child = tokio::process::Command::new(&exe)
            .arg("__idle-worker")
            .args(["--addr", &addr.to_string()])
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
        spawned.push(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            open: Arc::new(AtomicU64::new(0)),
            pid,
        });
    }
    let opens: Vec<Arc<AtomicU64>> = spawned.iter().map(|w| w.open.clone()).collect();
    let progress_pid = pid;
    let _progress = Progress::start(move |_| {
        let open: u64 = opens.iter().map(|o| o.load(Ordering::Relaxed)).sum();
        let rss = progress_pid
            .and_then(procs::rss_bytes)
            .map(|r| format!(" | server rss {:.1} MiB", r as f64 / 1048576.0))
            .unwrap_or_default();
        format!("[idle] connections open {open}/{n}{rss}")
    });

    // Wait for every worker's `connected` line.
    let mut opened = 0u64;
    let mut failed = 0u64;
    let mut first_failure = None;
    let mut connect_seconds: f64 = 0.0;
    for worker in &mut spawned {
        loop {
            let line = read_line(worker, Duration::from_secs(600)).await?;
            let fields: Vec<&str> = line.splitn(5, ' ').collect();
            match fields.as_slice() {
                ["connected", ok, bad, secs, rest @ ..] => {
                    opened += ok.parse::<u64>().unwrap_or(0);
                    failed += bad.parse::<u64>().unwrap_or(0);
                    connect_seconds = connect_seconds.max(secs.parse().unwrap_or(0.0));
                    if let Some(first) = rest.first().filter(|f| !f.is_empty()) {
                        first_failure.get_or_insert(first.to_string());
                    }
                    break;
                }
                _ => continue,
            }
        }
    }
    let connect_wall = started.elapsed().as_secs_f64();
    let cpu_connecting = pid
        .and_then(procs::cpu_seconds)
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = pid.and_then(procs::rss_bytes);
    let fds = pid.and_then(procs::open_fds);
    note(format!(
        "idle: {opened} open ({failed} failed) in {connect_wall:.1}s; holding for {:.0}s",
        args.hold.as_secs_f64()
    ));

    // Hold, keeping each worker's output read (it reports closes as they happen).
    let hold_end = Instant::now() + args.hold;
    while Instant::now() < hold_end {
        for worker in &mut spawned {
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(100), worker.lines.next_line()).await
            {
                parse_progress(&line, &worker.open);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_held = pid.and_then(procs::rss_bytes);
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
    if let Some(s) = server.as_mut() {
        s.stop(Duration::from_secs(10));
    }
    let per_connection = match (rss_before, rss_connected) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
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
        server_restarted: common.url.is_none(),
        server_rss_before_bytes: rss_before,
        server_rss_after_connect_bytes: rss_connected,
        server_rss_after_hold_bytes: rss_held,
        server_rss_per_connection_bytes: per_connection,
        server_open_fds: fds,
        server_cpu_s_connecting: cpu_connecting,
        workers_rss_bytes: workers_rss,
    })
}

fn parse_progress(line: &str, open: &AtomicU64) {
    if let Some(rest) = line.strip_prefix("progress ")
        && let Some(v) = rest.split(' ').next().and_then(|v| v.parse().ok())
    {
        open.store(v, Ordering::Relaxed);
    }
}

async fn read_line(worker: &mut Worker, timeout: Duration) -> Result<String, String> {
    loop {
        match tokio::time::timeout(timeout, worker.lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if line.starts_with("progress ") {
                    parse_progress(&line, &worker.open);
                    continue;
                }
                return Ok(line);
            }
            Ok(Ok(None)) => return Err("a worker exited early".into()),
            Ok(Err(e)) => return Err(format!("worker output: {e}")),
            Err(_) => return Err("a worker did not answer in time".into()),
        }
    }
}

/// Settings of one worker process.
pub struct WorkerArgs {
    pub addr: String,
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
    let addr = procs::loopback(&args.addr)?;
    let text = std::fs::read_to_string(&args.tokens).map_err(|e| e.to_string())?;
    let tokens: Vec<&str> = text.lines().collect();
    let endpoint = Endpoint {
        addr,
        proto: Proto::Natter,
    };
    let encoding = Arc::new(Encoding {
        conversations: Vec::new(),
        size: 0,
    });
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
        let endpoint = endpoint.clone();
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
    let mut failed = 0u64;
    let mut first_failure = String::new();
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                failed += 1;
                if first_failure.is_empty() {
                    first_failure = e.to_string().replace('\n', " ");
                }
            }
        }
    }
    // Connected: ready before this line is printed, so the connect time ends here.
    println!(
        "connected {} {failed} {:.3} {first_failure}",
        conns.len(),
        started.elapsed().as_secs_f64()
    );
    let closed_at_connect = shared.closed.load(Ordering::Relaxed);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "check" => {
                let before = shared.pongs.load(Ordering::Relaxed);
                for conn in &conns {
                    conn.send(Out::Text("{\"id\":1,\"type\":\"ping\"}".into()));
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
