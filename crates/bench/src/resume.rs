//! `reconnect` and `sync`: coming back after being away, and proving that nothing was missed.
//!
//! `reconnect`: K connections (users in groups with a writer) see a baseline message live; then
//! all K drop at once (no close handshake, as a network drop). While they are away the writer
//! sends `--missed` messages; then all K come back at once, each syncs from its cursor (page by
//! page) while the writer keeps sending live at `--live-rate`. A client has caught up when its
//! sync is complete and it holds every message acknowledged before it came back; at the end each
//! client must hold every message after its baseline, up to the writer's last acknowledged one.
//!
//! `sync`: one user in C conversations, M messages arrive while they are away; the time and the
//! bytes (on the wire, framing included) to catch up by `sync` pages.
//!
//! With several nodes, `reconnect`'s clients and the writer's connections spread round robin
//! (each client comes back to the node it left), and `sync`'s writer sends through another node
//! than the one its reader catches up on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use std::net::SocketAddr;

use crate::Common;
use crate::conn::{self, Conn, Encoding, Endpoint, Ev, Handler, Out, Outbox, Proto};
use crate::nodes::{Nodes, sum_known};
use crate::procs;
use crate::setup::{self, Account};
use crate::stats::{
    self, Batch, Counter, FirstError, Percentiles, Progress, Recorder, fmt_ms, note,
};
use crate::traffic::connect_all;

const SYNC_ID: u64 = 7;

fn sync_command(cursor: u64, limit: u32) -> Out {
    Out::Sync {
        id: SYNC_ID,
        cursor,
        limit,
    }
}

/// The writer: a user with a few connections who sends into every conversation and remembers the
/// highest acknowledged `seq` of each.
struct Writer {
    conns: Vec<Conn>,
    acks: Arc<WriterAcks>,
    next_k: u64,
    channels: usize,
}

#[derive(Default)]
struct WriterAcks {
    acked: Counter,
    errors: Counter,
    max_seq: Mutex<Vec<u64>>,
    channels: usize,
    /// Why a writer connection ended, if one did: its queued sends will never be answered.
    closed: FirstError,
}

struct WriterHandler(Arc<WriterAcks>);

impl Handler for WriterHandler {
    fn on(&mut self, ev: Ev<'_>, _: &Outbox) {
        match ev {
            Ev::Reply {
                id,
                data: Some(data),
            } => {
                if let Some(seq) = data.seq {
                    let channel = (id % self.0.channels as u64) as usize;
                    if let Ok(mut max) = self.0.max_seq.lock() {
                        max[channel] = max[channel].max(seq);
                    }
                    self.0.acked.add(1);
                }
            }
            Ev::Error { .. } => self.0.errors.add(1),
            Ev::Closed { code, reason } => self.0.closed.note(|| conn::close_reason(code, reason)),
            _ => {}
        }
    }
}

/// Most of a bulk write's messages unanswered at once, over all the writer's connections: 32 per
/// connection, as many as the server pipelines. Every connection of the writer also receives
/// every message (every device gets every message), so an unpaced burst of thousands could fill
/// a connection's outbound queue on the server faster than the bench reads it, and the server
/// would rightly close it as a slow reader.
const BULK_UNANSWERED_PER_CONNECTION: u64 = 32;

impl Writer {
    async fn open(
        common: &Common,
        proto: Proto,
        addrs: &[SocketAddr],
        account: &Account,
        conversations: Vec<u64>,
        connections: usize,
    ) -> Result<Writer, String> {
        let channels = conversations.len();
        let acks = Arc::new(WriterAcks {
            max_seq: Mutex::new(vec![0; channels]),
            channels,
            ..WriterAcks::default()
        });
        let encoding = Arc::new(Encoding {
            conversations,
            size: 64,
            ..Default::default()
        });
        let tokens = vec![account.token.clone(); connections];
        let conns = connect_all(common, proto, addrs, &tokens, &encoding, |_| {
            Box::new(WriterHandler(acks.clone())) as Box<dyn Handler>
        })
        .await?;
        Ok(Writer {
            conns,
            acks,
            next_k: 1,
            channels,
        })
    }

    /// Queue `count` messages, round robin over conversations and connections.
    fn send(&mut self, count: u64) {
        for _ in 0..count {
            let k = self.next_k;
            self.next_k += 1;
            let conn = &self.conns[(k as usize / self.channels.max(1)) % self.conns.len()];
            conn.send(Out::Send {
                k,
                channel: (k % self.channels as u64) as u32,
                intended_ns: stats::now_ns(),
            });
        }
    }

    /// Send `count` messages as fast as they are answered, with at most
    /// [`BULK_UNANSWERED_PER_CONNECTION`] per connection unanswered; then wait for the rest
    /// (`settle`). The whole is bounded by `timeout`.
    async fn send_bulk(&mut self, count: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let window = BULK_UNANSWERED_PER_CONNECTION * self.conns.len().max(1) as u64;
        let mut left = count;
        while left > 0 {
            let unanswered = self.unanswered();
            if unanswered < window {
                let batch = left.min(window - unanswered);
                self.send(batch);
                left -= batch;
                continue;
            }
            self.check(deadline, timeout)?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.settle(deadline.saturating_duration_since(Instant::now()))
            .await
    }

    /// Messages sent and not yet acknowledged or refused.
    fn unanswered(&self) -> u64 {
        (self.next_k - 1).saturating_sub(self.acks.acked.get() + self.acks.errors.get())
    }

    /// An error once a writer connection has ended or `deadline` has passed.
    fn check(&self, deadline: Instant, timeout: Duration) -> Result<(), String> {
        let sent = self.next_k - 1;
        if let Some(why) = self.acks.closed.get() {
            return Err(format!(
                "a writer connection ended with {} of {sent} sends answered: {why}",
                sent - self.unanswered()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the writer got {} of {sent} acks in {timeout:?}",
                self.acks.acked.get()
            ));
        }
        Ok(())
    }

    /// Wait until everything sent is acknowledged (or failed), bounded; at once an error if a
    /// writer connection ends first.
    async fn settle(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.unanswered() > 0 {
            self.check(deadline, timeout)?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.acks.errors.get() > 0 {
            return Err(format!("{} sends failed", self.acks.errors.get()));
        }
        Ok(())
    }

    fn max_seqs(&self) -> Vec<u64> {
        self.acks
            .max_seq
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

pub struct ReconnectArgs {
    pub clients: usize,
    pub per_user: usize,
    pub group_users: usize,
    pub missed: u64,
    pub gap: Duration,
    pub live_rate: f64,
    pub deadline: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectResult {
    pub clients: usize,
    pub users: usize,
    pub groups: usize,
    pub missed_while_away: u64,
    pub live_rate: f64,
    pub reconnected: u64,
    pub reconnect_failures: u64,
    pub first_failure: Option<String>,
    /// From the moment all came back to the moment the last one had caught up.
    pub all_caught_up_s: Option<f64>,
    pub caught_up: u64,
    /// Per client: from coming back to caught up.
    pub catch_up_ms: Percentiles,
    pub sync_pages: u64,
    pub messages_expected: u64,
    pub messages_missing: u64,
    pub clients_missing_messages: u64,
    pub nothing_missed: bool,
    /// The first close or error frame a client got (a client that missed messages often says
    /// why here: a slow consumer's 4008, say); `first_failure` is about connecting.
    pub first_error: Option<String>,
    /// Every node's CPU while the clients came back, summed.
    pub server_cpu_s: Option<f64>,
    /// This process's CPU over the same time: the bench's share of the two cores.
    pub bench_cpu_s: Option<f64>,
    /// Every node's memory at the end, summed.
    pub server_rss_bytes: Option<u64>,
    /// `json` or `proto`.
    pub encoding: String,
    /// How many Natter nodes served the run.
    pub nodes_count: usize,
}

/// One client's view, kept across its connections.
#[derive(Default)]
struct ClientState {
    channel: usize,
    /// Seqs above `base` are checked; 0 until the baseline message arrived.
    base: u64,
    seen: Vec<bool>,
    cursor: u64,
    syncing: bool,
    /// Bench clock when it came back, and when it caught up.
    back_ns: u64,
    caught_up_ns: u64,
    /// Seq it must hold to count as caught up (acked before it came back).
    target: u64,
}

impl ClientState {
    fn see(&mut self, seq: u64) {
        if self.base == 0 || seq <= self.base {
            return;
        }
        let i = (seq - self.base - 1) as usize;
        if self.seen.len() <= i {
            self.seen.resize(i + 1, false);
        }
        self.seen[i] = true;
    }

    fn holds_up_to(&self, seq: u64) -> bool {
        self.missing_up_to(seq) == 0
    }

    fn missing_up_to(&self, seq: u64) -> u64 {
        if seq <= self.base {
            return 0;
        }
        let want = (seq - self.base) as usize;
        (0..want)
            .filter(|i| !self.seen.get(*i).copied().unwrap_or(false))
            .count() as u64
    }
}

#[derive(Default)]
struct ReconnectShared {
    based: Counter,
    caught_up: Counter,
    pages: Counter,
    catch_up: Recorder,
    first_error: FirstError,
}

struct ClientHandler {
    state: Arc<Mutex<ClientState>>,
    shared: Arc<ReconnectShared>,
}

impl ClientHandler {
    fn check_caught_up(&self, state: &mut ClientState) {
        if state.caught_up_ns == 0
            && !state.syncing
            && state.back_ns > 0
            && state.holds_up_to(state.target)
        {
            let now = stats::now_ns();
            state.caught_up_ns = now;
            let mut batch = Batch::default();
            batch.push_since(state.back_ns, now);
            batch.flush(&self.shared.catch_up);
            self.shared.caught_up.add(1);
        }
    }
}

impl Handler for ClientHandler {
    fn on(&mut self, ev: Ev<'_>, out: &Outbox) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match ev {
            Ev::Delivery {
                bench, seq, cursor, ..
            } => {
                if state.base == 0 {
                    if bench.is_some() {
                        state.base = seq;
                        state.cursor = cursor;
                        self.shared.based.add(1);
                    }
                    return;
                }
                state.see(seq);
                if state.back_ns == 0 {
                    state.cursor = state.cursor.max(cursor);
                }
                self.check_caught_up(&mut state);
            }
            Ev::Reply {
                id: SYNC_ID,
                data: Some(page),
            } => {
                self.shared.pages.add(1);
                for message in &page.messages {
                    state.see(message.seq);
                }
                if let Some(cursor) = page.cursor {
                    state.cursor = cursor;
                }
                if page.more == Some(true) {
                    let _ = out.send(sync_command(state.cursor, 500));
                } else {
                    state.syncing = false;
                    self.check_caught_up(&mut state);
                }
            }
            // The bench ends a client's connections by abort, which reports nothing: a close is
            // the server's, or a read that failed.
            Ev::Closed { code, reason } => self
                .shared
                .first_error
                .note(|| conn::close_reason(code, reason)),
            Ev::Error { code, .. } => self.shared.first_error.note(|| code.to_string()),
            Ev::Reply { .. } | Ev::Other => {}
        }
    }
}

pub async fn reconnect(common: &Common, args: &ReconnectArgs) -> Result<ReconnectResult, String> {
    let k = args.clients;
    if k == 0 {
        // No group, so no channel: the writer's `k % channels` would divide by zero.
        return Err("reconnect needs at least one client".into());
    }
    let per_user = args.per_user.max(1);
    let users = k.div_ceil(per_user);
    let group_users = args.group_users.clamp(1, 999);
    let groups = users.div_ceil(group_users);
    let proto = common.encoding()?;
    let mut nodes = Nodes::start(common, per_user.max(16))?;
    let addrs = nodes.addrs();
    note(format!(
        "reconnect: {k} clients as {users} users ({per_user} per token) in {groups} groups with a writer, on {} node(s)",
        nodes.len()
    ));
    let accounts = setup::register(
        &addrs,
        &setup::run_prefix(),
        users + 1,
        common.setup_concurrency,
    )
    .await?;
    let (writer_account, clients) = accounts.split_last().ok_or("no users")?;
    let mut calls = Vec::new();
    for g in 0..groups {
        let members: Vec<u64> = clients[g * group_users..((g + 1) * group_users).min(users)]
            .iter()
            .map(|a| a.id)
            .collect();
        let owner = writer_account.clone();
        let addr = addrs[g % addrs.len()];
        calls.push(
            async move { setup::group(addr, &owner, &format!("reconnect {g}"), &members).await },
        );
    }
    let conversations = setup::all(calls, common.setup_concurrency).await?;
    let mut writer = Writer::open(
        common,
        proto,
        &addrs,
        writer_account,
        conversations.clone(),
        8,
    )
    .await?;

    let shared = Arc::new(ReconnectShared::default());
    let states: Vec<Arc<Mutex<ClientState>>> = (0..k)
        .map(|c| {
            Arc::new(Mutex::new(ClientState {
                channel: (c / per_user) / group_users,
                ..ClientState::default()
            }))
        })
        .collect();
    let tokens: Vec<String> = (0..k)
        .map(|c| clients[c / per_user].token.clone())
        .collect();
    let encoding = Arc::new(Encoding {
        conversations: conversations.clone(),
        size: 64,
        ..Default::default()
    });
    let make = |c: usize| {
        Box::new(ClientHandler {
            state: states[c].clone(),
            shared: shared.clone(),
        }) as Box<dyn Handler>
    };
    let conns = connect_all(common, proto, &addrs, &tokens, &encoding, make).await?;
    note(format!("reconnect: {k} clients connected"));

    // Baseline: one message per group, seen live by every client.
    writer.send(groups as u64);
    writer.settle(Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.based.get() < k as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {k} clients saw the baseline",
                shared.based.get()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Drop them all at once.
    for conn in &conns {
        conn.abort();
    }
    drop(conns);
    let dropped = Instant::now();
    note(format!(
        "reconnect: dropped {k} clients; {} messages while they are away",
        args.missed
    ));
    writer
        .send_bulk(args.missed, Duration::from_secs(120))
        .await?;
    let gap_left = args.gap.saturating_sub(dropped.elapsed());
    tokio::time::sleep(gap_left).await;

    // Come back, all at once: each syncs from its cursor as soon as its socket is upgraded.
    let targets = writer.max_seqs();
    let back_ns = stats::now_ns();
    for state in &states {
        if let Ok(mut s) = state.lock() {
            s.back_ns = back_ns;
            s.target = targets[s.channel];
            s.syncing = true;
        }
    }
    let usage_before = nodes.usage();
    let bench_cpu = procs::OwnCpu::start();
    let progress_shared = shared.clone();
    let progress = Progress::start(move |_| {
        format!(
            "[reconnect] caught up {}/{k} | sync pages {} | p99 catch-up {}",
            progress_shared.caught_up.get(),
            progress_shared.pages.get(),
            fmt_ms(Some(progress_shared.catch_up.summary().p99))
        )
    });
    let reconnect_deadline = Instant::now() + args.deadline;
    let (opened, failures, first_failure) = {
        let addrs = addrs.clone();
        let states = states.clone();
        let task_shared = shared.clone();
        let concurrency = common.connect_concurrency;
        let per_source = common.per_source;
        let encoding = encoding.clone();
        let tokens = tokens.clone();
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let mut tasks = Vec::with_capacity(tokens.len());
            for (c, token) in tokens.into_iter().enumerate() {
                let permit = permits.clone().acquire_owned().await.ok();
                let endpoint = Endpoint {
                    addr: addrs[c % addrs.len()],
                    proto,
                };
                let encoding = encoding.clone();
                let state = states[c].clone();
                let shared = task_shared.clone();
                // New source addresses: the old ports sit in TIME_WAIT.
                let source = conn::source_for(c + tokens_offset(k, per_source), per_source);
                tasks.push(tokio::spawn(async move {
                    let handler = Box::new(ClientHandler {
                        state: state.clone(),
                        shared,
                    });
                    // The sync goes right after the upgrade, as protocol.md §9.4 allows: the
                    // hello's round trip is not waited for.
                    let cursor = state.lock().map(|s| s.cursor).unwrap_or(0);
                    let result = conn::open_with(
                        &endpoint,
                        Some(source),
                        &token,
                        c as u64,
                        encoding,
                        handler,
                        Some(sync_command(cursor, 500)),
                    )
                    .await;
                    drop(permit);
                    result
                }));
            }
            let mut conns = Vec::new();
            let mut failures = 0u64;
            let mut first = None;
            for t in tasks {
                match t.await {
                    Ok(Ok(conn)) => conns.push(conn),
                    Ok(Err(e)) => {
                        failures += 1;
                        first.get_or_insert(e.to_string());
                    }
                    Err(e) => {
                        failures += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
            }
            (conns, failures, first)
        });
        let rate = args.live_rate;
        let mut sent_live = 0u64;
        let live_started = Instant::now();
        // The writer sends live while clients come back, until all caught up (bounded).
        while (shared.caught_up.get() < k as u64) && Instant::now() < reconnect_deadline {
            let due = (live_started.elapsed().as_secs_f64() * rate) as u64;
            if due > sent_live {
                writer.send(due - sent_live);
                sent_live = due;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.await.map_err(|e| e.to_string())?
    };
    // Keep the connections until the end of the check.
    let reconnected = opened;
    let opened = reconnected.len() as u64;
    let server_cpu = nodes.usage().nodes_since(&usage_before);
    let bench_cpu = bench_cpu.since();
    // Final check: everything the writer got acked must reach every client.
    writer.settle(Duration::from_secs(30)).await?;
    let finals = writer.max_seqs();
    let check_deadline = Instant::now() + Duration::from_secs(10);
    let (missing, clients_missing, expected) = loop {
        let (mut missing, mut clients_missing, mut expected) = (0u64, 0u64, 0u64);
        for state in &states {
            if let Ok(s) = state.lock() {
                let final_seq = finals[s.channel];
                expected += final_seq.saturating_sub(s.base);
                let m = s.missing_up_to(final_seq);
                missing += m;
                clients_missing += u64::from(m > 0);
            }
        }
        if missing == 0 || Instant::now() > check_deadline {
            break (missing, clients_missing, expected);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(progress);
    // The moment the last client caught up (possibly after --deadline, during the final check).
    let all_caught_up = (shared.caught_up.get() >= k as u64).then(|| {
        states
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.caught_up_ns))
            .max()
            .unwrap_or(back_ns)
            .saturating_sub(back_ns) as f64
            / 1e9
    });
    let result = ReconnectResult {
        clients: k,
        users,
        groups,
        missed_while_away: args.missed,
        live_rate: args.live_rate,
        reconnected: opened,
        reconnect_failures: failures,
        first_failure,
        all_caught_up_s: all_caught_up,
        caught_up: shared.caught_up.get(),
        catch_up_ms: shared.catch_up.summary(),
        sync_pages: shared.pages.get(),
        messages_expected: expected,
        messages_missing: missing,
        clients_missing_messages: clients_missing,
        nothing_missed: missing == 0 && failures == 0,
        first_error: shared.first_error.get(),
        server_cpu_s: server_cpu,
        bench_cpu_s: bench_cpu,
        server_rss_bytes: sum_known(&nodes.rss()),
        encoding: proto.encoding().unwrap_or("json").to_string(),
        nodes_count: nodes.len(),
    };
    for conn in writer.conns.iter().chain(&reconnected) {
        conn.abort();
    }
    nodes.stop();
    Ok(result)
}

/// Reconnections use source addresses after those of the first connections.
fn tokens_offset(k: usize, per_source: usize) -> usize {
    k.div_ceil(per_source.max(1)) * per_source.max(1)
}

pub struct SyncArgs {
    pub conversations: usize,
    pub messages: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncResult {
    pub conversations: usize,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub pages: u64,
    pub page_limit: u32,
    /// Connect + hello.
    pub connect_ms: f64,
    /// First `sync` sent → last page received.
    pub sync_ms: f64,
    /// Connect start → caught up.
    pub total_ms: f64,
    pub wire_bytes: u64,
    pub bytes_per_message: f64,
    pub messages_per_s: f64,
    pub nothing_missed: bool,
    /// `json` or `proto`.
    pub encoding: String,
    /// How many Natter nodes served the run.
    pub nodes_count: usize,
}

#[derive(Default)]
struct SyncShared {
    cursor: AtomicU64,
    pages: Counter,
    bench_messages: Counter,
    bytes: Counter,
    done_ns: AtomicU64,
    limit: AtomicU64,
}

struct SyncHandler(Arc<SyncShared>);

impl Handler for SyncHandler {
    fn on(&mut self, ev: Ev<'_>, out: &Outbox) {
        if let Ev::Reply {
            id: SYNC_ID,
            data: Some(page),
        } = ev
        {
            self.0.pages.add(1);
            let bench = page
                .messages
                .iter()
                .filter(|m| {
                    m.content
                        .text
                        .as_deref()
                        .is_some_and(|t| t.starts_with("nb "))
                })
                .count();
            self.0.bench_messages.add(bench as u64);
            let cursor = page.cursor.unwrap_or(0);
            self.0.cursor.store(cursor, Ordering::Relaxed);
            if page.more == Some(true) {
                let _ = out.send(sync_command(
                    cursor,
                    self.0.limit.load(Ordering::Relaxed) as u32,
                ));
            } else {
                self.0.done_ns.store(stats::now_ns(), Ordering::Relaxed);
            }
        }
    }

    fn bytes(&mut self, n: usize) {
        self.0.bytes.add(n as u64);
    }
}

pub async fn sync(common: &Common, args: &SyncArgs) -> Result<SyncResult, String> {
    let proto = common.encoding()?;
    let mut nodes = Nodes::start(common, 16)?;
    // The reader on the first node, the writer (and the setup) on the next one, if any.
    let endpoint = Endpoint {
        addr: nodes.addr(0),
        proto,
    };
    let writer_addr = nodes.addr(1);
    let accounts = setup::register(&[writer_addr], &setup::run_prefix(), 2, 2).await?;
    let (reader, writer_account) = (&accounts[0], &accounts[1]);
    let mut calls = Vec::new();
    for c in 0..args.conversations {
        let owner = writer_account.clone();
        let member = reader.id;
        let addr = writer_addr;
        calls
            .push(async move { setup::group(addr, &owner, &format!("sync {c}"), &[member]).await });
    }
    let conversations = setup::all(calls, common.setup_concurrency).await?;
    let encoding = Arc::new(Encoding {
        conversations: conversations.clone(),
        size: 64,
        ..Default::default()
    });

    // The reader's cursor before the messages: sync from 0 to the end once.
    let shared = Arc::new(SyncShared::default());
    shared.limit.store(u64::from(args.limit), Ordering::Relaxed);
    let first = conn::open(
        &endpoint,
        None,
        &reader.token,
        0,
        encoding.clone(),
        Box::new(SyncHandler(shared.clone())),
    )
    .await
    .map_err(|e| e.to_string())?;
    first.send(sync_command(0, args.limit));
    wait_for(
        || shared.done_ns.load(Ordering::Relaxed) > 0,
        Duration::from_secs(60),
    )
    .await?;
    first.send(Out::Close);
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.abort();
    let cursor = shared.cursor.load(Ordering::Relaxed);

    // M messages while away.
    note(format!(
        "sync: {} messages into {} conversations while the user is away",
        args.messages, args.conversations
    ));
    let mut writer = Writer::open(
        common,
        proto,
        &[writer_addr],
        writer_account,
        conversations,
        8,
    )
    .await?;
    let progress_acks = writer.acks.clone();
    let total = args.messages;
    let progress =
        Progress::start(move |_| format!("[sync] writing {}/{total}", progress_acks.acked.get()));
    writer
        .send_bulk(args.messages, Duration::from_secs(600))
        .await?;
    drop(progress);
    for conn in &writer.conns {
        conn.abort();
    }

    // Come back and catch up.
    let shared = Arc::new(SyncShared::default());
    shared.limit.store(u64::from(args.limit), Ordering::Relaxed);
    let started = stats::now_ns();
    let conn = conn::open(
        &endpoint,
        None,
        &reader.token,
        1,
        encoding,
        Box::new(SyncHandler(shared.clone())),
    )
    .await
    .map_err(|e| e.to_string())?;
    let connected = stats::now_ns();
    conn.send(sync_command(cursor, args.limit));
    wait_for(
        || shared.done_ns.load(Ordering::Relaxed) > 0,
        Duration::from_secs(300),
    )
    .await?;
    let done = shared.done_ns.load(Ordering::Relaxed);
    conn.abort();
    nodes.stop();
    let received = shared.bench_messages.get();
    let bytes = shared.bytes.get();
    let sync_s = (done - connected) as f64 / 1e9;
    Ok(SyncResult {
        conversations: args.conversations,
        messages_sent: args.messages,
        messages_received: received,
        pages: shared.pages.get(),
        page_limit: args.limit,
        connect_ms: (connected - started) as f64 / 1e6,
        sync_ms: sync_s * 1e3,
        total_ms: (done - started) as f64 / 1e6,
        wire_bytes: bytes,
        bytes_per_message: bytes as f64 / received.max(1) as f64,
        messages_per_s: received as f64 / sync_s.max(1e-9),
        nothing_missed: received == args.messages,
        encoding: proto.encoding().unwrap_or("json").to_string(),
        nodes_count: nodes.len(),
    })
}

async fn wait_for(mut done: impl FnMut() -> bool, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer connection the server closed (a slow reader, say) never answers what was queued
    /// on it: the wait for acks says so at once instead of running out its timeout.
    #[tokio::test]
    async fn the_writer_stops_waiting_once_one_of_its_connections_ended() {
        let acks = Arc::new(WriterAcks {
            max_seq: Mutex::new(vec![0]),
            channels: 1,
            ..WriterAcks::default()
        });
        let writer = Writer {
            conns: Vec::new(),
            acks: acks.clone(),
            next_k: 4,
            channels: 1,
        };
        let mut handler = WriterHandler(acks.clone());
        let (out, _queue) = tokio::sync::mpsc::unbounded_channel();
        handler.on(
            Ev::Error {
                id: Some(1),
                code: "invalid_request",
            },
            &out,
        );
        assert_eq!(writer.unanswered(), 2);
        handler.on(
            Ev::Closed {
                code: Some(4008),
                reason: None,
            },
            &out,
        );
        let started = Instant::now();
        let error = writer
            .settle(Duration::from_secs(60))
            .await
            .expect_err("a connection ended");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            error,
            "a writer connection ended with 1 of 3 sends answered: connection closed by the \
             server (4008)"
        );
    }

    #[test]
    fn a_client_reports_the_first_close_or_error_it_got() {
        let shared = Arc::new(ReconnectShared::default());
        let mut handler = ClientHandler {
            state: Arc::new(Mutex::new(ClientState::default())),
            shared: shared.clone(),
        };
        let (out, _queue) = tokio::sync::mpsc::unbounded_channel();
        handler.on(
            Ev::Closed {
                code: Some(4008),
                reason: None,
            },
            &out,
        );
        handler.on(
            Ev::Error {
                id: Some(SYNC_ID),
                code: "rate_limited",
            },
            &out,
        );
        assert_eq!(
            shared.first_error.get().as_deref(),
            Some("connection closed by the server (4008)")
        );
    }
}
