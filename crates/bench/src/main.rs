//! `natter-bench`: the load generator of Natter. Every scenario targets this machine's loopback
//! only, is bounded in time, and stops by itself. See docs/benchmarks.md.

mod conn;
mod idle;
mod nodes;
mod procs;
mod protobuf;
mod report;
mod resume;
mod setup;
mod stats;
mod traffic;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::conn::Proto;
use crate::report::Target;

#[derive(Parser)]
#[command(
    name = "natter-bench",
    version,
    about = "Load generator of Natter: idle, direct, fanout, reconnect, sync — loopback only, bounded in time",
    after_help = "Build first: cargo build --release -p natter-server --bin natter && cargo build --release -p natter-bench"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args)]
struct CommonArgs {
    /// The `natter` binary to start (fresh temporary data dir, default durable mode). Default:
    /// `natter` next to this binary (target/release/natter).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Extra argument for `natter serve` (repeat the flag for several).
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Load running nodes instead of starting any (loopback only), e.g. http://127.0.0.1:8080;
    /// several, comma-separated, for the nodes of a cluster (connections go round robin). They
    /// must allow the bench's rates: high --sends-per-second, --login-attempts-per-minute and
    /// --connections-per-user-max.
    #[arg(long, global = true, value_delimiter = ',')]
    url: Vec<String>,
    /// The pids of the nodes at --url, in the same order, for their memory and CPU from /proc.
    #[arg(long, global = true, value_delimiter = ',')]
    pid: Vec<i32>,
    /// Start a cluster of N nodes instead of one SQLite node: a fresh PostgreSQL database (on
    /// --postgres), a nats-server of its own, N `natter serve --database … --broker …` nodes;
    /// connections go round robin over the nodes. Everything is stopped and the database
    /// dropped at the end.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: Option<u16>,
    /// The PostgreSQL server where --nodes creates its database (loopback only).
    #[arg(
        long,
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres: String,
    /// Frame encoding of Natter connections: json (`natter.v1.json`), proto (`natter.v1.proto`,
    /// Protocol Buffers). direct and fanout take both, json,proto: rows `natter` and
    /// `natter-proto`, each on fresh nodes.
    #[arg(
        long,
        global = true,
        value_enum,
        value_delimiter = ',',
        default_value = "json"
    )]
    encoding: Vec<Encoding>,
    /// Where the peers' scripts are. Default: bench/peers of this workspace.
    #[arg(long, global = true)]
    peers_dir: Option<PathBuf>,
    /// Write the results as JSON (schema in docs/benchmarks.md).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Where a sweep's SVG chart goes. Default: the --json path with .svg, else ./natter-bench-<scenario>.svg.
    #[arg(long, global = true)]
    svg: Option<PathBuf>,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// Connections per loopback source address (127.0.0.2, 127.0.0.3, …).
    #[arg(long, global = true, default_value_t = 5000)]
    per_source: usize,
    /// REST setup calls (registrations: argon2 on the server) at once.
    #[arg(long, global = true, default_value_t = 4)]
    setup_concurrency: usize,
    /// Worker threads of the bench's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Hard bound on the whole run, in seconds: past it the bench stops everything and exits 124.
    #[arg(long, global = true, default_value_t = 1200)]
    timeout: u64,
    /// Keep temporary data directories (server logs, databases).
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Peer {
    Natter,
    Socketio,
    Nats,
    Jetstream,
    /// JetStream, each publish with a `Nats-Msg-Id` checked against the stream's duplicates.
    JetstreamDedupe,
    /// `jetstream-dedupe`, each connection receiving through a durable consumer of its own.
    JetstreamDurable,
}

impl Peer {
    fn proto(self) -> Proto {
        match self {
            Peer::Natter => Proto::Natter,
            Peer::Socketio => Proto::SocketIo,
            Peer::Nats => Proto::Nats,
            Peer::Jetstream => Proto::JetStream,
            Peer::JetstreamDedupe => Proto::JetStreamDedupe,
            Peer::JetstreamDurable => Proto::JetStreamDurable,
        }
    }
}

/// Frame encoding on Natter connections.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Encoding {
    /// JSON text frames (`natter.v1.json`).
    Json,
    /// Protocol Buffers binary frames (`natter.v1.proto`).
    Proto,
}

impl Encoding {
    fn proto(self) -> Proto {
        match self {
            Encoding::Json => Proto::Natter,
            Encoding::Proto => Proto::NatterProtobuf,
        }
    }
}

#[derive(Args)]
struct LoadArgs {
    /// Offered rate, messages per second (open loop).
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// A sweep over offered rates, e.g. 1000,5000,10000,20000,30000 (overrides --rate); draws an SVG.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Measured seconds per rate.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds at the same rate before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait for the last deliveries and acks after sending stops, in seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Bytes of each message's text.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    /// How sends choose their `client_msg_id` (also the `Nats-Msg-Id` of the JetStream peers
    /// that check ids).
    #[arg(long, value_enum, default_value_t = conn::ClientMsgIds::Time)]
    client_msg_ids: conn::ClientMsgIds,
    /// Systems to load, in order, each started fresh on this machine.
    #[arg(long, value_delimiter = ',', default_value = "natter")]
    peer: Vec<Peer>,
    /// Keep sweeping a peer past a step that it did not sustain.
    #[arg(long)]
    no_stop_at_saturation: bool,
    /// Start every peer first, then run each rate for every peer in turn, so that the steps
    /// compared at one rate run within a minute of each other (a fairer comparison on a VM whose
    /// speed drifts); by default each peer runs its whole sweep before the next starts.
    #[arg(long)]
    interleave: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// N authenticated WebSocket connections held idle: connect rate, server memory per
    /// connection, and whether every one stayed up.
    Idle {
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        /// Connections per user token (raises the server's --connections-per-user-max to match).
        #[arg(long, default_value_t = 100)]
        per_user: usize,
        /// Most connections per load-generator process (this machine allows 20,000 open files).
        #[arg(long, default_value_t = 19_000)]
        per_process: usize,
        /// Seconds to hold them (the server pings every 25 s; the clients answer).
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
    },
    /// P pairs exchanging messages at a fixed total rate: delivered/s, send→ack and send→receive.
    Direct {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// G groups of S members, senders rotating, at a fixed total rate of messages in.
    Fanout {
        #[arg(long, default_value_t = 10)]
        groups: usize,
        #[arg(long, default_value_t = 100)]
        group_size: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// K clients drop at once and come back: time until all resumed and caught up; nothing missed.
    Reconnect {
        #[arg(long, default_value_t = 19_000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        per_user: usize,
        /// Users per group conversation (each group also holds the writer).
        #[arg(long, default_value_t = 10)]
        group_users: usize,
        /// Messages sent while the clients are away (round robin over the groups).
        #[arg(long, default_value_t = 380)]
        missed: u64,
        /// Seconds the clients stay away (at least the time to send --missed).
        #[arg(long, default_value_t = 2.0)]
        gap: f64,
        /// Messages per second sent live while they come back (each reaches a whole group:
        /// --group-users × --per-user connections).
        #[arg(long, default_value_t = 20.0)]
        live_rate: f64,
        /// Longest wait for all to catch up, in seconds.
        #[arg(long, default_value_t = 60.0)]
        deadline: f64,
    },
    /// A user in C conversations comes back after M messages: time and bytes to catch up.
    Sync {
        #[arg(long, default_value_t = 100)]
        conversations: usize,
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        /// Sync page size asked for (the server caps it, 500 by default).
        #[arg(long, default_value_t = 500)]
        limit: u32,
    },
    /// Internal: one process of the `idle` scenario.
    #[command(name = "__idle-worker", hide = true)]
    IdleWorker {
        /// The nodes, comma-separated: connection i goes to node i mod N.
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        per_user: usize,
    },
}

/// Settings every scenario shares.
pub struct Common {
    pub server_bin: PathBuf,
    pub server_args: Vec<String>,
    /// Running nodes to load (`--url`), and their pids.
    pub urls: Vec<String>,
    pub pids: Vec<i32>,
    /// `--nodes N`: a cluster the bench starts.
    pub nodes: Option<usize>,
    /// The PostgreSQL server (`postgres://user@host:port`) for `--nodes`.
    pub postgres: String,
    /// The Natter encodings asked for, in order.
    pub encodings: Vec<Proto>,
    pub peers_dir: PathBuf,
    pub connect_concurrency: usize,
    pub per_source: usize,
    pub setup_concurrency: usize,
    pub keep: bool,
    /// `--timeout`: the whole run's bound, in seconds (worker processes get it too).
    pub timeout_s: u64,
}

impl Common {
    /// The one encoding of a scenario that runs one (all but direct and fanout).
    pub fn encoding(&self) -> Result<Proto, String> {
        match self.encodings.as_slice() {
            [one] => Ok(*one),
            _ => Err("this scenario runs one encoding at a time: --encoding json or proto".into()),
        }
    }

    pub fn launch(&self) -> procs::NatterLaunch {
        procs::NatterLaunch {
            bin: self.server_bin.clone(),
            extra: self.server_args.clone(),
            keep: self.keep,
        }
    }
}

fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("natter")))
        .unwrap_or_else(|| PathBuf::from("target/release/natter"))
}

fn default_peers_dir() -> PathBuf {
    // target/release/natter-bench → the workspace root's bench/peers; else ./bench/peers.
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .nth(3)
                .map(|root| root.join("bench/peers"))
                .filter(|p| p.is_dir())
        })
        .unwrap_or_else(|| PathBuf::from("bench/peers"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let c = &cli.common;
    let postgres = match check_targets(c) {
        Ok(postgres) => postgres,
        Err(e) => {
            eprintln!("natter-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut encodings: Vec<Proto> = Vec::new();
    for e in &c.encoding {
        if !encodings.contains(&e.proto()) {
            encodings.push(e.proto());
        }
    }
    let common = Common {
        server_bin: c.server_bin.clone().unwrap_or_else(default_server_bin),
        server_args: c.server_args.clone(),
        urls: c.url.clone(),
        pids: c.pid.clone(),
        nodes: c.nodes.map(usize::from),
        postgres,
        encodings,
        peers_dir: c.peers_dir.clone().unwrap_or_else(default_peers_dir),
        connect_concurrency: c.connect_concurrency,
        per_source: c.per_source,
        setup_concurrency: c.setup_concurrency,
        keep: c.keep,
        timeout_s: c.timeout.max(1),
    };
    procs::raise_nofile();
    stats::now_ns();

    // The hard bound: whatever happens, stop everything and leave.
    let timeout = Duration::from_secs(c.timeout.max(1));
    let is_worker = matches!(cli.scenario, Scenario::IdleWorker { .. });
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        if !is_worker {
            eprintln!(
                "\nnatter-bench: the run exceeded --timeout {}s; stopping",
                timeout.as_secs()
            );
        }
        procs::cleanup();
        std::process::exit(124);
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("natter-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_path = c.json.clone();
    let svg_path = c.svg.clone();
    let outcome = runtime.block_on(async move {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nnatter-bench: interrupted; stopping");
                procs::cleanup();
                std::process::exit(130);
            }
        });
        run(cli.scenario, &common, json_path, svg_path).await
    });
    procs::cleanup();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("natter-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Refuse targets that are not this machine's, and contradictory ones; the PostgreSQL server of
/// `--nodes` (its `postgres://user@host:port`).
fn check_targets(c: &CommonArgs) -> Result<String, String> {
    for url in &c.url {
        procs::url_addr(url)?;
    }
    if c.pid.len() > c.url.len() {
        return Err("--pid names more nodes than --url".into());
    }
    if c.nodes.is_some() && !c.url.is_empty() {
        return Err(
            "--nodes starts a cluster; --url loads running nodes: choose one of them".into(),
        );
    }
    if c.nodes.is_some() {
        procs::postgres_server(&c.postgres)
    } else {
        Ok(c.postgres.clone())
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

/// Run one scenario; `Ok(false)` when it ran but something failed (missed messages, drops).
async fn run(
    scenario: Scenario,
    common: &Common,
    json_path: Option<PathBuf>,
    svg_path: Option<PathBuf>,
) -> Result<bool, String> {
    let started_ms = unix_ms();
    let started = Instant::now();
    let write_json = |name: &str,
                      config: serde_json::Value,
                      body: serde_json::Value,
                      targets: &[Target]|
     -> Result<(), String> {
        if let Some(path) = &json_path {
            let doc = report::document(
                name,
                config,
                body,
                targets,
                started_ms,
                started.elapsed().as_secs_f64(),
            );
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
            stats::note(format!("wrote {}", path.display()));
        }
        Ok(())
    };
    match scenario {
        Scenario::IdleWorker {
            addr,
            tokens,
            first,
            count,
            per_user,
        } => {
            idle::worker(idle::WorkerArgs {
                addrs: addr.split(',').map(str::to_string).collect(),
                proto: common.encoding()?,
                tokens,
                first,
                count,
                per_user,
                per_source: common.per_source,
                connect_concurrency: common.connect_concurrency,
            })
            .await?;
            Ok(true)
        }
        Scenario::Idle {
            connections,
            per_user,
            per_process,
            hold,
        } => {
            let per_process = per_process.clamp(1, 19_500);
            let args = idle::IdleArgs {
                connections,
                per_user,
                per_process,
                hold: secs(hold),
            };
            let r = idle::run(common, &args).await?;
            let mib = |b: Option<u64>| {
                b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
            };
            let rows = vec![
                vec![
                    "connections requested".into(),
                    r.connections_requested.to_string(),
                ],
                vec![
                    "connections opened".into(),
                    r.connections_opened.to_string(),
                ],
                vec![
                    "connect failures".into(),
                    format!(
                        "{}{}",
                        r.connect_failures,
                        r.first_failure
                            .as_ref()
                            .map(|f| format!(" (first: {f})"))
                            .unwrap_or_default()
                    ),
                ],
                vec!["connect time".into(), format!("{:.2} s", r.connect_seconds)],
                vec!["connect rate".into(), format!("{:.0} /s", r.connects_per_s)],
                vec!["users (tokens)".into(), r.users.to_string()],
                vec!["worker processes".into(), r.workers.to_string()],
                vec!["encoding".into(), r.encoding.clone()],
                vec!["nodes".into(), r.nodes.len().to_string()],
                vec![
                    "server rss after registering users".into(),
                    mib(r.server_rss_after_registration_bytes),
                ],
                vec![
                    if r.server_restarted {
                        "server rss before (restarted: fresh)"
                    } else {
                        "server rss before"
                    }
                    .into(),
                    mib(r.server_rss_before_bytes),
                ],
                vec![
                    "server rss after connect".into(),
                    mib(r.server_rss_after_connect_bytes),
                ],
                vec![
                    "server rss after hold".into(),
                    mib(r.server_rss_after_hold_bytes),
                ],
                vec![
                    "server rss per connection".into(),
                    r.server_rss_per_connection_bytes
                        .map_or("-".into(), |b| format!("{:.2} KiB", b / 1024.0)),
                ],
                vec![
                    "server open files".into(),
                    r.server_open_fds.map_or("-".into(), |f| f.to_string()),
                ],
                vec![
                    "server cpu while connecting".into(),
                    r.server_cpu_s_connecting
                        .map_or("-".into(), |c| format!("{c:.2} s")),
                ],
                vec![
                    "nats-server / postgresql cpu while connecting".into(),
                    format!(
                        "{} / {}",
                        r.broker_cpu_s_connecting
                            .map_or("-".into(), |c| format!("{c:.2} s")),
                        r.database_cpu_s_connecting
                            .map_or("-".into(), |c| format!("{c:.2} s"))
                    ),
                ],
                vec!["load generator rss".into(), mib(Some(r.workers_rss_bytes))],
                vec!["hold".into(), format!("{:.0} s", r.hold_s)],
                vec![
                    "closed during hold".into(),
                    r.closed_during_hold.to_string(),
                ],
                vec![
                    "answered a ping after hold".into(),
                    r.alive_after_hold.to_string(),
                ],
                vec![
                    "all stayed up".into(),
                    if r.all_stayed_up {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ],
            ];
            let node_count = r.nodes.len();
            let mut targets = vec![if node_count > 1 {
                Target {
                    name: format!("idle connections held by {node_count} nodes"),
                    target: format!("all {connections} held and answering"),
                    measured: format!(
                        "{} held, {} answered after {:.0}s",
                        r.connections_opened, r.alive_after_hold, r.hold_s
                    ),
                    met: Some(r.all_stayed_up),
                }
            } else {
                Target {
                    name: "idle connections held by one node".into(),
                    target: "19,000 concurrent authenticated connections".into(),
                    measured: format!(
                        "{} held, {} answered after {:.0}s",
                        r.connections_opened, r.alive_after_hold, r.hold_s
                    ),
                    met: (connections >= 19_000)
                        .then_some(r.all_stayed_up && r.connections_opened >= 19_000),
                }
            }];
            if let Some(per) = r.server_rss_per_connection_bytes {
                targets.push(Target {
                    name: "server memory per idle connection".into(),
                    target: "≤ 8 KiB".into(),
                    measured: format!("{:.2} KiB", per / 1024.0),
                    met: Some(per <= 8192.0),
                });
            }
            println!("{}", report::table(&["idle", ""], &rows));
            if r.nodes.len() > 1 {
                println!("{}", report::idle_nodes_table(&r.nodes));
            }
            println!("{}", report::targets_text(&targets));
            let config = json!({"connections": connections, "per_user": per_user, "per_process": per_process, "hold_s": hold, "per_source": common.per_source, "connect_concurrency": common.connect_concurrency, "encoding": r.encoding, "nodes": r.nodes.len(), "cluster": common.nodes.is_some() || common.urls.len() > 1});
            write_json(
                "idle",
                config,
                serde_json::to_value(&r).unwrap_or_default(),
                &targets,
            )?;
            Ok(r.all_stayed_up)
        }
        Scenario::Direct { pairs, load } => {
            let shape = traffic::Shape::Direct {
                pairs: pairs.max(1),
            };
            run_traffic(
                common,
                shape,
                load,
                json_path.clone(),
                svg_path,
                started_ms,
                started,
            )
            .await
        }
        Scenario::Fanout {
            groups,
            group_size,
            load,
        } => {
            let shape = traffic::Shape::Fanout {
                groups: groups.max(1),
                size: group_size.clamp(2, 1000),
            };
            run_traffic(
                common,
                shape,
                load,
                json_path.clone(),
                svg_path,
                started_ms,
                started,
            )
            .await
        }
        Scenario::Reconnect {
            clients,
            per_user,
            group_users,
            missed,
            gap,
            live_rate,
            deadline,
        } => {
            if clients > 19_500 {
                return Err("reconnect holds its clients in one process: at most 19,500".into());
            }
            let args = resume::ReconnectArgs {
                clients,
                per_user,
                group_users,
                missed,
                gap: secs(gap),
                live_rate: live_rate.max(1.0),
                deadline: secs(deadline),
            };
            let r = resume::reconnect(common, &args).await?;
            let rows = vec![
                vec![
                    "clients".into(),
                    format!("{} ({} users, {} groups)", r.clients, r.users, r.groups),
                ],
                vec![
                    "messages while away".into(),
                    r.missed_while_away.to_string(),
                ],
                vec![
                    "live rate while coming back".into(),
                    format!("{:.0} /s", r.live_rate),
                ],
                vec![
                    "reconnected".into(),
                    format!(
                        "{} ({} failed{})",
                        r.reconnected,
                        r.reconnect_failures,
                        r.first_failure
                            .as_ref()
                            .map(|f| format!(": {f}"))
                            .unwrap_or_default()
                    ),
                ],
                vec!["caught up".into(), r.caught_up.to_string()],
                vec![
                    "all resumed and caught up after".into(),
                    r.all_caught_up_s
                        .map_or("NOT ALL".into(), |s| format!("{s:.2} s")),
                ],
                vec![
                    "per client catch-up p50/p90/p99/max".into(),
                    format!(
                        "{:.0} / {:.0} / {:.0} / {:.0} ms",
                        r.catch_up_ms.p50, r.catch_up_ms.p90, r.catch_up_ms.p99, r.catch_up_ms.max
                    ),
                ],
                vec!["sync pages".into(), r.sync_pages.to_string()],
                vec!["messages checked".into(), r.messages_expected.to_string()],
                vec![
                    "messages missing".into(),
                    format!(
                        "{} (in {} clients){}",
                        r.messages_missing,
                        r.clients_missing_messages,
                        r.first_error
                            .as_ref()
                            .map(|e| format!("; first close or error: {e}"))
                            .unwrap_or_default()
                    ),
                ],
                vec![
                    "server cpu while coming back".into(),
                    r.server_cpu_s.map_or("-".into(), |c| format!("{c:.2} s")),
                ],
                vec![
                    "bench cpu while coming back".into(),
                    r.bench_cpu_s.map_or("-".into(), |c| format!("{c:.2} s")),
                ],
            ];
            let mut rows = rows;
            rows.push(vec![
                "encoding, nodes".into(),
                format!("{}, {}", r.encoding, r.nodes_count),
            ]);
            let targets = vec![Target {
                name: format!("reconnect of {} clients", r.clients),
                target: "all 19,000 resumed and caught up within 5 s, nothing missed".into(),
                measured: format!(
                    "{}, {} missing",
                    r.all_caught_up_s
                        .map_or("not all caught up".into(), |s| format!("{s:.2} s")),
                    r.messages_missing
                ),
                met: (r.clients >= 19_000)
                    .then_some(r.nothing_missed && r.all_caught_up_s.is_some_and(|s| s <= 5.0)),
            }];
            println!("{}", report::table(&["reconnect", ""], &rows));
            println!("{}", report::targets_text(&targets));
            let config = json!({"clients": clients, "per_user": per_user, "group_users": group_users, "missed": missed, "gap_s": gap, "live_rate": live_rate, "deadline_s": deadline, "encoding": r.encoding, "nodes": r.nodes_count, "cluster": common.nodes.is_some() || common.urls.len() > 1});
            write_json(
                "reconnect",
                config,
                serde_json::to_value(&r).unwrap_or_default(),
                &targets,
            )?;
            Ok(r.nothing_missed && r.all_caught_up_s.is_some())
        }
        Scenario::Sync {
            conversations,
            messages,
            limit,
        } => {
            let args = resume::SyncArgs {
                conversations: conversations.max(1),
                messages,
                limit,
            };
            let r = resume::sync(common, &args).await?;
            let rows = vec![
                vec!["conversations".into(), r.conversations.to_string()],
                vec!["messages while away".into(), r.messages_sent.to_string()],
                vec![
                    "messages received by sync".into(),
                    r.messages_received.to_string(),
                ],
                vec![
                    "pages (limit)".into(),
                    format!("{} ({})", r.pages, r.page_limit),
                ],
                vec!["connect + hello".into(), format!("{:.1} ms", r.connect_ms)],
                vec![
                    "sync (first request → last page)".into(),
                    format!("{:.1} ms", r.sync_ms),
                ],
                vec!["total to caught up".into(), format!("{:.1} ms", r.total_ms)],
                vec![
                    "bytes on the wire".into(),
                    format!("{} ({:.0} per message)", r.wire_bytes, r.bytes_per_message),
                ],
                vec![
                    "catch-up rate".into(),
                    format!("{:.0} messages/s", r.messages_per_s),
                ],
                vec![
                    "encoding, nodes".into(),
                    format!("{}, {}", r.encoding, r.nodes_count),
                ],
                vec![
                    "nothing missed".into(),
                    if r.nothing_missed {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ],
            ];
            println!("{}", report::table(&["sync", ""], &rows));
            let config = json!({"conversations": conversations, "messages": messages, "limit": limit, "encoding": r.encoding, "nodes": r.nodes_count, "cluster": common.nodes.is_some() || common.urls.len() > 1});
            write_json(
                "sync",
                config,
                serde_json::to_value(&r).unwrap_or_default(),
                &[],
            )?;
            Ok(r.nothing_missed)
        }
    }
}

async fn run_traffic(
    common: &Common,
    shape: traffic::Shape,
    load: LoadArgs,
    json_path: Option<PathBuf>,
    svg_path: Option<PathBuf>,
    started_ms: u64,
    started: Instant,
) -> Result<bool, String> {
    // Natter once per encoding asked for (rows `natter`, `natter-proto`), then the peers.
    let mut peers: Vec<Proto> = Vec::new();
    for p in &load.peer {
        let protos = match p {
            Peer::Natter => common.encodings.clone(),
            other => vec![other.proto()],
        };
        for proto in protos {
            if !peers.contains(&proto) {
                peers.push(proto);
            }
        }
    }
    if !common.urls.is_empty() && peers.iter().any(|p| !p.is_natter()) {
        return Err(
            "--url targets running Natter nodes; peers are started by the bench itself".into(),
        );
    }
    let sweep = !load.sweep.is_empty();
    let rates: Vec<f64> = if sweep {
        load.sweep.iter().copied().filter(|r| *r > 0.0).collect()
    } else {
        vec![load.rate]
    };
    if rates.iter().any(|r| *r <= 0.0) || rates.is_empty() {
        return Err("rates must be above zero".into());
    }
    let args = traffic::TrafficArgs {
        shape,
        rates: rates.clone(),
        duration: secs(load.duration.max(0.5)),
        warmup: secs(load.warmup),
        drain: secs(load.drain),
        size: load.message_bytes.clamp(24, 16 * 1024),
        ids: load.client_msg_ids,
        peers: peers.clone(),
        stop_at_saturation: !load.no_stop_at_saturation,
        interleave: load.interleave,
    };
    let steps = traffic::run(common, &args).await?;
    let name = shape.name();
    println!("{}", report::traffic_table(&steps));
    let (targets, config) = match shape {
        traffic::Shape::Direct { pairs } => (
            report::direct_targets(&steps),
            json!({"pairs": pairs, "connections": pairs * 2}),
        ),
        traffic::Shape::Fanout { groups, size } => (
            report::fanout_targets(&steps, size),
            json!({"groups": groups, "group_size": size, "connections": groups * size}),
        ),
    };
    println!("{}", report::targets_text(&targets));
    let mut config = config;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("rates".into(), json!(rates));
        obj.insert("duration_s".into(), json!(load.duration));
        obj.insert("warmup_s".into(), json!(load.warmup));
        obj.insert("drain_s".into(), json!(load.drain));
        obj.insert("message_bytes".into(), json!(args.size));
        obj.insert("client_msg_ids".into(), json!(args.ids));
        obj.insert("interleave".into(), json!(args.interleave));
        obj.insert(
            "peers".into(),
            json!(peers.iter().map(|p| p.name()).collect::<Vec<_>>()),
        );
        let encodings: Vec<&str> = common
            .encodings
            .iter()
            .filter_map(|p| p.encoding())
            .collect();
        obj.insert("encoding".into(), json!(encodings.first()));
        obj.insert("encodings".into(), json!(encodings));
        obj.insert(
            "nodes".into(),
            json!(common.nodes.unwrap_or(common.urls.len().max(1))),
        );
        obj.insert(
            "cluster".into(),
            json!(common.nodes.is_some() || common.urls.len() > 1),
        );
    }
    let mut peer_names: Vec<&str> = steps.iter().map(|s| s.peer.as_str()).collect();
    peer_names.dedup();
    let max_sustained: serde_json::Map<String, serde_json::Value> = peer_names
        .iter()
        .map(|p| (p.to_string(), json!(traffic::max_sustained(&steps, p))))
        .collect();
    let body = json!({
        "steps": steps,
        "ratios": report::ratios(&steps),
        "encoding_comparison": report::encoding_comparison(&steps),
        "max_sustained_rate": max_sustained,
    });
    if let Some(path) = &json_path {
        let doc = report::document(
            name,
            config,
            body,
            &targets,
            started_ms,
            started.elapsed().as_secs_f64(),
        );
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        stats::note(format!("wrote {}", path.display()));
    }
    if sweep {
        let path = svg_path
            .or_else(|| json_path.as_ref().map(|p| p.with_extension("svg")))
            .unwrap_or_else(|| PathBuf::from(format!("natter-bench-{name}.svg")));
        let title = match shape {
            traffic::Shape::Direct { pairs } => {
                format!("direct: {pairs} pairs, latency vs offered load")
            }
            traffic::Shape::Fanout { groups, size } => {
                format!(
                    "fanout: {groups} groups of {size}, latency vs offered load (messages in/s)"
                )
            }
        };
        std::fs::write(&path, report::svg_chart(&title, &steps))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        stats::note(format!("wrote {}", path.display()));
    }
    Ok(steps.iter().all(|s| s.errors == 0))
}
