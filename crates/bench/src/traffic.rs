//! `direct` and `fanout`: open-loop message traffic at a fixed offered rate, against Natter and
//! against its peers (Socket.IO, NATS core, NATS JetStream), one rate or a sweep of rates.
//!
//! Open loop: message `i` of a step is due at `start + i / rate`, whether or not earlier ones were
//! answered; its latencies are counted from that intended time, so a stall of the server (or of
//! the bench) shows up in the percentiles instead of silently lowering the offered load.
//!
//! A scheduler thread (not a tokio timer, whose resolution is 1 ms) hands each due message to its
//! connection's writer; the lag between intended and handed-over time is reported as `send_lag`.
//!
//! Cost per delivered message: the server's CPU (every node's, from /proc) and the bytes the
//! bench's connections read (WebSocket framing included), both over the whole step, divided by
//! every delivery of the step's messages (warmup included) — what `--encoding json,proto`
//! compares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::Common;
use crate::conn::{
    self, ClientMsgIds, Conn, Encoding, Endpoint, Ev, Handler, Out, Outbox, PONG_ID, Proto,
};
use crate::nodes::{NodeFigures, Nodes, Usage};
use crate::procs::{self, Server};
use crate::setup::{self, Account};
use crate::stats::{
    self, Batch, Counter, FirstError, Percentiles, Progress, Recorder, fmt_ms, note,
};

/// Socket.IO join acknowledgements use ids from here up.
const JOIN_BASE: u64 = 1 << 60;

/// The shape of the traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// `pairs` conversations of two; each message is delivered to both (the sender's own echo).
    Direct { pairs: usize },
    /// `groups` groups of `size`; each message is delivered to every member (the sender too).
    Fanout { groups: usize, size: usize },
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Direct { .. } => "direct",
            Shape::Fanout { .. } => "fanout",
        }
    }

    fn channels(self) -> usize {
        match self {
            Shape::Direct { pairs } => pairs,
            Shape::Fanout { groups, .. } => groups,
        }
    }

    fn members(self) -> usize {
        match self {
            Shape::Direct { .. } => 2,
            Shape::Fanout { size, .. } => size,
        }
    }

    fn connections(self) -> usize {
        self.channels() * self.members()
    }

    /// The channel of connection `c`.
    fn channel_of(self, c: usize) -> usize {
        c / self.members()
    }

    /// Message `i` of a step: (sending connection, channel).
    fn target(self, i: u64) -> (usize, u32) {
        let channels = self.channels() as u64;
        let members = self.members() as u64;
        let channel = i % channels;
        let member = (i / channels) % members;
        ((channel * members + member) as usize, channel as u32)
    }
}

/// Settings of one `direct`/`fanout` run.
pub struct TrafficArgs {
    pub shape: Shape,
    pub rates: Vec<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub size: usize,
    /// How sends choose their `client_msg_id`s.
    pub ids: ClientMsgIds,
    pub peers: Vec<Proto>,
    /// Stop a sweep for a peer once a step is saturated.
    pub stop_at_saturation: bool,
    /// Start every peer first, then run each rate for every peer in turn (`run_interleaved`).
    pub interleave: bool,
}

/// What one step (one peer, one offered rate) measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub peer: String,
    /// Natter's frame encoding (`json`, `proto`); None for the peers.
    pub encoding: Option<String>,
    /// How many Natter nodes served the step (1 for the peers).
    pub nodes_count: usize,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Measured deliveries beyond a message's members (a message delivered twice to one of
    /// them); counted in `delivered`, and a step with any is not sustained.
    pub duplicates: u64,
    pub expected_deliveries: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub ack_latency_ms: Option<Percentiles>,
    pub receive_latency_ms: Percentiles,
    pub send_lag_ms: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
    pub connections_closed: u64,
    /// Wall time of the step: warmup, measurement and drain.
    pub wall_s: f64,
    /// CPU seconds over `wall_s` (every node's, summed).
    pub server_cpu_s: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    /// Resident memory at the end of the step (every node's, summed).
    pub server_rss_bytes: Option<u64>,
    /// Deliveries of every message of the step, warmup included: the per-delivery divisor.
    pub step_deliveries: u64,
    /// Bytes the bench's connections read over `wall_s` (WebSocket or NATS framing included).
    pub wire_bytes_read: u64,
    /// `wire_bytes_read / step_deliveries`.
    pub bytes_per_delivery: Option<f64>,
    /// `server_cpu_s / step_deliveries`, in microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Per Natter node: CPU over `wall_s` and memory at the end.
    pub nodes: Vec<NodeFigures>,
    /// A cluster's nats-server: CPU over `wall_s`.
    pub broker_cpu_s: Option<f64>,
    /// A cluster's PostgreSQL backends (of the bench's database): CPU over `wall_s`.
    pub database_cpu_s: Option<f64>,
    /// Nodes, nats-server and PostgreSQL backends together, per delivery, in microseconds.
    pub cluster_cpu_us_per_delivery: Option<f64>,
    pub load_average: f64,
    /// Nothing missing or duplicated, everything acknowledged, p99 under 50 ms.
    pub sustained: bool,
}

/// Shared state of one peer's run, updated by every connection's handler.
#[derive(Default)]
struct Shared {
    ack: Recorder,
    recv: Recorder,
    lag: Recorder,
    sent: Counter,
    acked: Counter,
    delivered: Counter,
    /// Deliveries of the step's messages, warmup included.
    step_delivered: Counter,
    /// Bytes read by every connection.
    bytes: Counter,
    errors: Counter,
    closed: Counter,
    ready: Counter,
    /// Messages with `k` in `[k_lo, k_hi)` are measured.
    k_lo: AtomicU64,
    k_hi: AtomicU64,
    /// The schedule of the current step, to find a `k`'s intended time from an ack.
    k0: AtomicU64,
    start_ns: AtomicU64,
    rate_bits: AtomicU64,
    /// When the first and the last measured delivery of the step were read (`u64::MAX` and 0:
    /// none yet).
    first_delivery_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    first_error: FirstError,
    /// Deliveries so far of each message of the step, to tell a duplicate from a delivery.
    deliveries_of: std::sync::RwLock<Arc<DeliveriesOf>>,
    duplicates: Counter,
}

/// How many times each message of a step (`k0`, `k0 + 1`, …) has been delivered.
#[derive(Default)]
struct DeliveriesOf {
    k0: u64,
    members: u16,
    counts: Vec<std::sync::atomic::AtomicU16>,
}

impl DeliveriesOf {
    /// Count a delivery of `k`; whether it is one more than the message has members.
    fn is_duplicate(&self, k: u64) -> bool {
        self.slot(k)
            .is_some_and(|c| c.fetch_add(1, Ordering::Relaxed) >= self.members)
    }

    /// Whether `k` is a message of this step.
    fn covers(&self, k: u64) -> bool {
        self.slot(k).is_some()
    }

    fn slot(&self, k: u64) -> Option<&std::sync::atomic::AtomicU16> {
        k.checked_sub(self.k0)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.counts.get(i))
    }
}

impl Shared {
    fn measured(&self, k: u64) -> bool {
        k >= self.k_lo.load(Ordering::Relaxed) && k < self.k_hi.load(Ordering::Relaxed)
    }

    fn in_step(&self, k: u64) -> bool {
        k >= self.k0.load(Ordering::Relaxed) && k < self.k_hi.load(Ordering::Relaxed)
    }

    fn intended_ns(&self, k: u64) -> u64 {
        let rate = f64::from_bits(self.rate_bits.load(Ordering::Relaxed));
        let i = k.saturating_sub(self.k0.load(Ordering::Relaxed));
        self.start_ns.load(Ordering::Relaxed) + (i as f64 * 1e9 / rate) as u64
    }
}

struct TrafficHandler {
    shared: Arc<Shared>,
    /// This connection's copy of the step's delivery counts, taken from `Shared` again only when
    /// a message of the step falls outside it (a new step): one lock read per step instead of
    /// one per delivery, on a lock every connection's reader shares.
    deliveries_of: Arc<DeliveriesOf>,
    ack: Batch,
    recv: Batch,
    acked: u64,
    delivered: u64,
    step_delivered: u64,
    duplicates: u64,
    bytes: u64,
    errors: u64,
    now: u64,
}

impl TrafficHandler {
    fn new(shared: Arc<Shared>) -> TrafficHandler {
        TrafficHandler {
            shared,
            deliveries_of: Arc::default(),
            ack: Batch::default(),
            recv: Batch::default(),
            acked: 0,
            delivered: 0,
            step_delivered: 0,
            duplicates: 0,
            bytes: 0,
            errors: 0,
            now: 0,
        }
    }

    /// Count a delivery of `k`, a message of the step; whether it is a duplicate.
    fn is_duplicate(&mut self, k: u64) -> bool {
        if !self.deliveries_of.covers(k)
            && let Ok(current) = self.shared.deliveries_of.read()
        {
            self.deliveries_of = current.clone();
        }
        self.deliveries_of.is_duplicate(k)
    }

    fn now(&mut self) -> u64 {
        if self.now == 0 {
            self.now = stats::now_ns();
        }
        self.now
    }
}

impl Handler for TrafficHandler {
    fn on(&mut self, ev: Ev<'_>, _out: &Outbox) {
        match ev {
            Ev::Reply { id, data } => {
                if id == PONG_ID || id >= JOIN_BASE {
                    self.shared.ready.add(1);
                } else if self.shared.measured(id) && data.is_none_or(|d| d.seq.is_some()) {
                    let now = self.now();
                    let intended = self.shared.intended_ns(id);
                    self.ack.push_since(intended, now);
                    self.acked += 1;
                }
            }
            Ev::Delivery {
                bench: Some((k, intended)),
                ..
            } => {
                let duplicate = self.shared.in_step(k) && self.is_duplicate(k);
                if self.shared.measured(k) {
                    let now = self.now();
                    self.recv.push_since(intended, now);
                    self.delivered += 1;
                    self.duplicates += u64::from(duplicate);
                }
                if self.shared.in_step(k) {
                    self.step_delivered += 1;
                }
            }
            Ev::Delivery { .. } | Ev::Other => {}
            Ev::Error { id, code } => {
                // A refused send counts in the step that measures it: one of the warmup's is
                // not the measurement's, nor is a late one of the step before.
                if id.is_none_or(|k| k < JOIN_BASE && self.shared.measured(k)) {
                    self.errors += 1;
                    self.shared.first_error.note(|| code.to_string());
                }
            }
            Ev::Closed { code, reason } => {
                self.shared.closed.add(1);
                self.shared
                    .first_error
                    .note(|| conn::close_reason(code, reason));
            }
        }
    }

    fn flush(&mut self) {
        self.ack.flush(&self.shared.ack);
        self.recv.flush(&self.shared.recv);
        if self.acked > 0 {
            self.shared.acked.add(self.acked);
            self.acked = 0;
        }
        if self.delivered > 0 {
            self.shared.delivered.add(self.delivered);
            self.shared
                .first_delivery_ns
                .fetch_min(self.now, Ordering::Relaxed);
            self.shared
                .last_delivery_ns
                .fetch_max(self.now, Ordering::Relaxed);
            self.delivered = 0;
        }
        if self.duplicates > 0 {
            self.shared.duplicates.add(self.duplicates);
            self.duplicates = 0;
        }
        if self.step_delivered > 0 {
            self.shared.step_delivered.add(self.step_delivered);
            self.step_delivered = 0;
        }
        if self.bytes > 0 {
            self.shared.bytes.add(self.bytes);
            self.bytes = 0;
        }
        if self.errors > 0 {
            self.shared.errors.add(self.errors);
            self.errors = 0;
        }
        self.now = 0;
    }

    fn bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

/// Everything set up for one peer: its server (or Natter's nodes), connections and shared
/// counters.
struct Rig {
    proto: Proto,
    nodes: Option<Nodes>,
    server: Option<Server>,
    conns: Vec<Conn>,
    shared: Arc<Shared>,
    next_k: u64,
}

impl Rig {
    /// CPU so far of what serves this peer (Natter: every node, and a cluster's broker and
    /// database).
    fn usage(&self) -> Usage {
        match (&self.nodes, &self.server) {
            (Some(nodes), _) => nodes.usage(),
            (None, Some(server)) => Usage {
                nodes_cpu_s: vec![procs::cpu_seconds(server.pid)],
                ..Usage::default()
            },
            (None, None) => Usage::default(),
        }
    }
}

/// Run `direct` or `fanout` for every peer and rate; returns every step's result, grouped by
/// peer in the order asked for.
pub async fn run(common: &Common, args: &TrafficArgs) -> Result<Vec<StepResult>, String> {
    if args.interleave {
        return run_interleaved(common, args).await;
    }
    let mut results = Vec::new();
    for proto in &args.peers {
        let mut rig = start_rig(common, args, *proto).await?;
        for (i, rate) in args.rates.iter().enumerate() {
            if i > 0 {
                settle_rig(&rig).await;
            }
            let result = run_step(&mut rig, args, *rate).await;
            print_step_line(&result);
            let saturated = !result.sustained;
            results.push(result);
            if saturated && args.stop_at_saturation && args.rates.len() > 1 {
                note(format!(
                    "{}: saturated at {rate}/s; skipping higher rates",
                    proto.name()
                ));
                break;
            }
        }
        stop_rig(&mut rig);
    }
    Ok(results)
}

/// Every peer started first, then each rate run for every peer in turn. The steps compared at
/// one rate then run within a minute of each other instead of many minutes apart, so that a VM
/// whose speed drifts (a host taking its share now and then) favours none of them; the price is
/// that every peer holds its connections (idle) while the others are measured.
async fn run_interleaved(common: &Common, args: &TrafficArgs) -> Result<Vec<StepResult>, String> {
    let mut rigs = Vec::new();
    for proto in &args.peers {
        match start_rig(common, args, *proto).await {
            Ok(rig) => rigs.push(rig),
            Err(e) => {
                rigs.iter_mut().for_each(stop_rig);
                return Err(e);
            }
        }
    }
    let mut results: Vec<Vec<StepResult>> = rigs.iter().map(|_| Vec::new()).collect();
    let mut turns = Turns::new(rigs.len(), args.rates.len());
    while let Some((peer, step)) = turns.next() {
        let (rig, rate) = (&mut rigs[peer], args.rates[step]);
        let result = run_step(rig, args, rate).await;
        print_step_line(&result);
        let saturated = !result.sustained;
        results[peer].push(result);
        // The next step is another peer's: this one's backlog must not run beside it.
        settle_rig(rig).await;
        if saturated && args.stop_at_saturation && args.rates.len() > 1 {
            note(format!(
                "{}: saturated at {rate}/s; skipping higher rates",
                rig.proto.name()
            ));
            turns.drop_peer(peer);
            stop_rig(rig);
        }
    }
    rigs.iter_mut().for_each(stop_rig);
    Ok(results.into_iter().flatten().collect())
}

/// The order of an interleaved sweep: the first rate for every peer, then the second, and so
/// on, leaving out the peers dropped on the way (saturated).
struct Turns {
    sweeping: Vec<bool>,
    steps: usize,
    /// The next turn to consider: (rate index, peer index).
    at: (usize, usize),
}

impl Turns {
    fn new(peers: usize, steps: usize) -> Turns {
        Turns {
            sweeping: vec![true; peers],
            steps,
            at: (0, 0),
        }
    }

    fn drop_peer(&mut self, peer: usize) {
        if let Some(sweeping) = self.sweeping.get_mut(peer) {
            *sweeping = false;
        }
    }
}

impl Iterator for Turns {
    type Item = (usize, usize);

    /// The next (peer, step) to run, or None once every rate has been run or every peer dropped.
    fn next(&mut self) -> Option<(usize, usize)> {
        while self.at.0 < self.steps {
            let (step, peer) = self.at;
            self.at = if peer + 1 < self.sweeping.len() {
                (step, peer + 1)
            } else {
                (step + 1, 0)
            };
            if self.sweeping.get(peer) == Some(&true) {
                return Some((peer, step));
            }
        }
        None
    }
}

async fn start_rig(common: &Common, args: &TrafficArgs, proto: Proto) -> Result<Rig, String> {
    note(format!(
        "{} against {}: {} connections",
        args.shape.name(),
        proto.name(),
        args.shape.connections()
    ));
    setup_rig(common, args, proto).await.map_err(|e| {
        note(format!("{}: setup failed: {e}", proto.name()));
        format!("{}: {e}", proto.name())
    })
}

/// Wait until the rig's traffic from the step before has stopped (`settle`).
async fn settle_rig(rig: &Rig) {
    let shared = &rig.shared;
    let waited = settle(|| shared.bytes.get(), QUIET, SETTLE_MAX).await;
    if waited > Duration::from_secs(1) {
        note(format!(
            "{}: waited {:.1} s for the traffic of the step before to stop",
            rig.proto.name(),
            waited.as_secs_f64()
        ));
    }
}

/// Close the rig's connections and stop what serves it; a second call does nothing.
fn stop_rig(rig: &mut Rig) {
    for conn in &rig.conns {
        conn.abort();
    }
    rig.conns.clear();
    if let Some(mut server) = rig.server.take() {
        server.stop(Duration::from_secs(5));
    }
    if let Some(mut nodes) = rig.nodes.take() {
        nodes.stop();
    }
}

/// How long nothing must arrive before a step starts.
const QUIET: Duration = Duration::from_millis(250);
/// The longest wait for the step before's traffic to stop.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Wait until `read` (bytes read so far) has not moved for `quiet`, at most `max`: a step after a
/// saturated one would otherwise start behind its backlog, whose work would count against it
/// (latency, CPU). Returns how long it waited.
async fn settle(read: impl Fn() -> u64, quiet: Duration, max: Duration) -> Duration {
    let started = Instant::now();
    let mut last = read();
    while started.elapsed() < max {
        tokio::time::sleep(quiet).await;
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    started.elapsed()
}

fn print_step_line(r: &StepResult) {
    note(format!(
        "{} @ {}/s: delivered {:.0}/s, recv p99 {} (max {}), ack p99 {}, missing {}, duplicates {}, errors {}",
        r.peer,
        r.offered_rate,
        r.delivered_per_s,
        fmt_ms(Some(r.receive_latency_ms.p99)),
        fmt_ms(Some(r.receive_latency_ms.max)),
        fmt_ms(r.ack_latency_ms.map(|a| a.p99)),
        r.expected_deliveries
            .saturating_sub(r.delivered.saturating_sub(r.duplicates)),
        r.duplicates,
        r.errors
    ));
}

async fn setup_rig(common: &Common, args: &TrafficArgs, proto: Proto) -> Result<Rig, String> {
    let shape = args.shape;
    let n = shape.connections();
    let (nodes, server) = match proto {
        Proto::Natter | Proto::NatterProtobuf => (Some(Nodes::start(common, 16)?), None),
        Proto::SocketIo => (
            None,
            Some(procs::start_socketio(&common.peers_dir, common.keep)?),
        ),
        Proto::Nats | Proto::JetStream | Proto::JetStreamDedupe | Proto::JetStreamDurable => (
            None,
            Some(procs::start_nats(&common.peers_dir, common.keep)?),
        ),
    };
    let addrs = match (&nodes, &server) {
        (Some(nodes), _) => nodes.addrs(),
        (None, Some(server)) => vec![server.addr],
        (None, None) => return Err("nothing to load".into()),
    };
    let shared = Arc::new(Shared::default());
    shared.k_hi.store(0, Ordering::Relaxed);

    // Natter: users, conversations, one token per connection.
    let mut tokens = vec![String::new(); n];
    let mut conversations = Vec::new();
    if proto.is_natter() {
        let accounts =
            setup::register(&addrs, &setup::run_prefix(), n, common.setup_concurrency).await?;
        for (token, account) in tokens.iter_mut().zip(&accounts) {
            token.clone_from(&account.token);
        }
        conversations = create_channels(&addrs, shape, &accounts, common.setup_concurrency).await?;
    }
    if proto.is_jetstream() {
        create_stream(&Endpoint {
            addr: addrs[0],
            proto,
        })
        .await?;
    }
    let encoding = Arc::new(Encoding {
        conversations,
        size: args.size,
        ids: args.ids,
    });

    let conns = connect_all(common, proto, &addrs, &tokens, &encoding, |_| {
        Box::new(TrafficHandler::new(shared.clone())) as Box<dyn Handler>
    })
    .await?;

    // Peers: rooms and subscriptions, confirmed before traffic starts.
    match proto {
        Proto::Natter | Proto::NatterProtobuf => {}
        Proto::SocketIo => {
            for (c, conn) in conns.iter().enumerate() {
                let channel = shape.channel_of(c);
                conn.send(Out::Text(format!(
                    "42{}[\"join\",\"{channel}\"]",
                    JOIN_BASE + c as u64
                )));
            }
        }
        Proto::Nats | Proto::JetStream | Proto::JetStreamDedupe | Proto::JetStreamDurable => {
            for (c, conn) in conns.iter().enumerate() {
                let channel = shape.channel_of(c);
                conn.send(Out::Raw(nats_subscriptions(proto, c, channel).into_bytes()));
            }
        }
    }
    if !proto.is_natter() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.ready.get() < n as u64 {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {n} connections confirmed their rooms/subscriptions",
                    shared.ready.get()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let presence announcements and other connect-time traffic settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Rig {
        proto,
        nodes,
        server,
        conns,
        shared,
        next_k: 1,
    })
}

/// What NATS connection `c` sends to receive its channel's messages (and, for JetStream, its
/// publishes' acks on `_INBOX.c.*`); the answer that ends it counts the connection ready.
/// - NATS core, `jetstream`, `jetstream-dedupe`: a core subscription to the channel's subject
///   (delivery does not wait for the store), then `PING`: its `PONG`.
/// - `jetstream-durable`: a durable push consumer of the stream for the channel's subject,
///   delivering to the connection's own subject, no acks to send back (`ack_policy` none: the
///   consumer's place moves as it delivers); its creation's reply, on `_INBOX.c.<JOIN_BASE + c>`.
fn nats_subscriptions(proto: Proto, c: usize, channel: usize) -> String {
    let durable = proto == Proto::JetStreamDurable;
    let mut lines = if durable {
        format!("SUB deliver.{c} 1\r\n")
    } else {
        format!("SUB bench.{channel} 1\r\n")
    };
    if proto.is_jetstream() {
        lines.push_str(&format!("SUB _INBOX.{c}.* 2\r\n"));
    }
    if !durable {
        lines.push_str("PING\r\n");
        return lines;
    }
    let request = serde_json::json!({
        "stream_name": "BENCH",
        "config": {
            "durable_name": format!("c{c}"),
            "deliver_subject": format!("deliver.{c}"),
            "filter_subject": format!("bench.{channel}"),
            "deliver_policy": "new",
            "ack_policy": "none",
            "replay_policy": "instant"
        }
    });
    lines.push_str(&nats_request(
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.BENCH.c{c}"),
        &format!("_INBOX.{c}.{}", JOIN_BASE + c as u64),
        &request.to_string(),
    ));
    lines
}

/// A NATS request: `PUB subject reply-to length`, then the body.
fn nats_request(subject: &str, reply_to: &str, body: &str) -> String {
    format!("PUB {subject} {reply_to} {}\r\n{body}\r\n", body.len())
}

/// One conversation per channel: direct conversations of (2p, 2p+1), or groups owned by their
/// first member; the calls spread over the nodes.
async fn create_channels(
    addrs: &[std::net::SocketAddr],
    shape: Shape,
    accounts: &[Account],
    concurrency: usize,
) -> Result<Vec<u64>, String> {
    let members = shape.members();
    let mut calls = Vec::new();
    for channel in 0..shape.channels() {
        let addr = addrs[channel % addrs.len()];
        let group: Vec<Account> = accounts[channel * members..(channel + 1) * members].to_vec();
        calls.push(async move {
            match shape {
                Shape::Direct { .. } => setup::direct(addr, &group[0], &group[1]).await,
                Shape::Fanout { .. } => {
                    let ids: Vec<u64> = group[1..].iter().map(|a| a.id).collect();
                    setup::group(addr, &group[0], &format!("bench group {channel}"), &ids).await
                }
            }
        });
    }
    setup::all(calls, concurrency * addrs.len()).await
}

/// Create the JetStream stream `BENCH` on file storage capturing `bench.>`.
async fn create_stream(endpoint: &Endpoint) -> Result<(), String> {
    struct Capture(Arc<std::sync::Mutex<Option<Result<(), String>>>>);
    impl Handler for Capture {
        fn on(&mut self, ev: Ev<'_>, _: &Outbox) {
            let outcome = match ev {
                Ev::Reply { id: 1, .. } => Ok(()),
                Ev::Error { code, .. } => Err(code.to_string()),
                _ => return,
            };
            if let Ok(mut slot) = self.0.lock() {
                slot.get_or_insert(outcome);
            }
        }
    }
    let slot = Arc::new(std::sync::Mutex::new(None));
    let encoding = Arc::new(Encoding::default());
    let conn = conn::open(
        endpoint,
        None,
        "",
        1_000_000,
        encoding,
        Box::new(Capture(slot.clone())),
    )
    .await
    .map_err(|e| format!("jetstream setup connection: {e}"))?;
    let config = serde_json::json!({
        "name": "BENCH",
        "subjects": ["bench.>"],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "num_replicas": 1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        // JetStream's default, stated: a `Nats-Msg-Id` is checked against the last two minutes.
        "duplicate_window": 120_000_000_000u64
    })
    .to_string();
    let request = nats_request("$JS.API.STREAM.CREATE.BENCH", "_INBOX.setup.1", &config);
    conn.send(Out::Raw(
        format!("SUB _INBOX.setup.* 1\r\n{request}").into_bytes(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(outcome) = slot.lock().ok().and_then(|s| s.clone()) {
            conn.abort();
            return outcome.map_err(|e| format!("creating the JetStream stream: {e}"));
        }
        if Instant::now() > deadline {
            conn.abort();
            return Err("no answer to the JetStream stream creation".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Open `tokens.len()` connections (token per connection; peers ignore it), a bounded number at
/// a time, spread over source addresses, connection `i` to `addrs[i mod len]`.
pub async fn connect_all(
    common: &Common,
    proto: Proto,
    addrs: &[std::net::SocketAddr],
    tokens: &[String],
    encoding: &Arc<Encoding>,
    mut handler: impl FnMut(usize) -> Box<dyn Handler>,
) -> Result<Vec<Conn>, String> {
    let n = tokens.len();
    let opened = Arc::new(AtomicU64::new(0));
    let shown = opened.clone();
    let _progress =
        Progress::start(move |_| format!("connecting: {}/{n}", shown.load(Ordering::Relaxed)));
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for (i, token) in tokens.iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let endpoint = Endpoint {
            addr: addrs[i % addrs.len()],
            proto,
        };
        let token = token.clone();
        let encoding = encoding.clone();
        let handler = handler(i);
        let source = conn::source_for(i, common.per_source);
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let result =
                conn::open(&endpoint, Some(source), &token, i as u64, encoding, handler).await;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            result
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut failures = 0;
    let mut first = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                failures += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    if failures > 0 {
        for conn in &conns {
            conn.abort();
        }
        return Err(format!(
            "{failures} of {n} connections failed; first: {}",
            first.unwrap_or_default()
        ));
    }
    Ok(conns)
}

async fn run_step(rig: &mut Rig, args: &TrafficArgs, rate: f64) -> StepResult {
    let shared = rig.shared.clone();
    shared.ack.reset();
    shared.recv.reset();
    shared.lag.reset();
    for c in [
        &shared.sent,
        &shared.acked,
        &shared.delivered,
        &shared.duplicates,
        &shared.step_delivered,
        &shared.errors,
    ] {
        c.reset();
    }
    shared.first_error.reset();
    shared.first_delivery_ns.store(u64::MAX, Ordering::Relaxed);
    shared.last_delivery_ns.store(0, Ordering::Relaxed);
    let warmup_count = (args.warmup.as_secs_f64() * rate).round() as u64;
    let measured_count = ((args.duration.as_secs_f64() * rate).round() as u64).max(1);
    let total = warmup_count + measured_count;
    let k0 = rig.next_k;
    rig.next_k += total;
    if let Ok(mut d) = shared.deliveries_of.write() {
        *d = Arc::new(DeliveriesOf {
            k0,
            members: u16::try_from(args.shape.members()).unwrap_or(u16::MAX),
            counts: (0..total).map(|_| Default::default()).collect(),
        });
    }
    let start_ns = stats::now_ns() + 20_000_000;
    shared.k0.store(k0, Ordering::Relaxed);
    shared.start_ns.store(start_ns, Ordering::Relaxed);
    shared.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    shared.k_lo.store(k0 + warmup_count, Ordering::Relaxed);
    shared.k_hi.store(k0 + total, Ordering::Relaxed);
    let measured_start_ns = start_ns + (warmup_count as f64 * 1e9 / rate) as u64;

    let outs: Vec<Outbox> = rig.conns.iter().map(|c| c.out.clone()).collect();
    let shape = args.shape;
    let sched_shared = shared.clone();
    let usage_before = rig.usage();
    let bytes_before = shared.bytes.get();
    let bench_cpu = procs::OwnCpu::start();
    let step_started = Instant::now();
    let scheduler = std::thread::spawn(move || {
        schedule(
            rate,
            total,
            k0,
            warmup_count,
            start_ns,
            shape,
            &outs,
            &sched_shared,
        )
    });

    let label = format!("{} {} {rate}/s", rig.proto.name(), shape.name());
    let progress_shared = shared.clone();
    let open = rig.conns.len() as u64;
    let progress = Progress::start(move |window| {
        let s = &progress_shared;
        let closed = s.closed.get();
        format!(
            "[{label}] conns {} | sent {:.0}/s acked {:.0}/s recv {:.0}/s | p99 ack {} recv {} | errors {}",
            open.saturating_sub(closed),
            s.sent.take_window() as f64 / window,
            s.acked.take_window() as f64 / window,
            s.delivered.take_window() as f64 / window,
            fmt_ms(s.ack.take_window_p99()),
            fmt_ms(s.recv.take_window_p99()),
            s.errors.get()
        )
    });
    let measured_end_ns = start_ns + (total as f64 * 1e9 / rate) as u64;
    // When the scheduler handed over the last message (the schedule's end if it is lost).
    let last_handed_ns = tokio::task::spawn_blocking(move || scheduler.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(measured_end_ns);

    // Drain: wait (bounded) for the measured messages' deliveries and acks.
    let expected = measured_count * shape.members() as u64;
    let acks = rig.proto.acks();
    let deadline = Instant::now() + args.drain;
    while Instant::now() < deadline {
        let delivered = {
            // Duplicates first: a handler adds its deliveries before its duplicates, so this
            // order never sees more duplicates than deliveries.
            let duplicates = shared.duplicates.get();
            shared.delivered.get().saturating_sub(duplicates)
        };
        let acked = shared.acked.get() + shared.errors.get();
        if delivered >= expected && (!acks || acked >= measured_count) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(progress);
    let usage_after = rig.usage();
    let bytes = shared.bytes.get() - bytes_before;
    let wall_s = step_started.elapsed().as_secs_f64();
    let bench_cpu = bench_cpu.since();
    // Anything after this is outside the step.
    shared.k_hi.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let delivered = shared.delivered.get();
    let duplicates = shared.duplicates.get();
    let acked = shared.acked.get();
    let errors = shared.errors.get();
    // Deliveries per second over the time they took: from the first measured delivery to the
    // last, and never less than the measured schedule (so a step that keeps up reports at most
    // the offered rate). Under saturation the first measured delivery waits behind the warmup's
    // backlog, which is not counted, so the span starts there rather than at the schedule.
    let span_ns = delivery_span_ns(
        shared.first_delivery_ns.load(Ordering::Relaxed),
        shared.last_delivery_ns.load(Ordering::Relaxed),
        measured_start_ns,
        measured_end_ns,
    );
    let sent_span_ns = handover_span_ns(last_handed_ns, measured_start_ns, measured_end_ns, rate);
    let receive = shared.recv.summary();
    let ack = shared.ack.summary();
    let complete = delivered.saturating_sub(duplicates) >= expected
        && duplicates == 0
        && (!acks || acked >= measured_count)
        && errors == 0;
    let step_deliveries = shared.step_delivered.get();
    let per_delivery = |v: f64| (step_deliveries > 0).then(|| v / step_deliveries as f64);
    let server_cpu = usage_after.nodes_since(&usage_before);
    let broker_cpu = usage_after.broker_since(&usage_before);
    let database_cpu = usage_after.database_since(&usage_before);
    let nodes = rig
        .nodes
        .as_ref()
        .map(|n| n.figures(&usage_before, &usage_after))
        .unwrap_or_default();
    let rss = match (&rig.nodes, &rig.server) {
        (Some(nodes), _) => crate::nodes::sum_known(&nodes.rss()),
        (None, Some(server)) => procs::rss_bytes(server.pid),
        (None, None) => None,
    };
    StepResult {
        peer: rig.proto.name().to_string(),
        encoding: rig.proto.encoding().map(str::to_string),
        nodes_count: rig.nodes.as_ref().map_or(1, Nodes::len),
        offered_rate: rate,
        duration_s: args.duration.as_secs_f64(),
        sent: measured_count,
        acked: if acks { acked } else { 0 },
        delivered,
        duplicates,
        expected_deliveries: expected,
        sent_per_s: measured_count as f64 * 1e9 / sent_span_ns as f64,
        delivered_per_s: delivered as f64 * 1e9 / span_ns as f64,
        ack_latency_ms: acks.then_some(ack),
        receive_latency_ms: receive,
        send_lag_ms: shared.lag.summary(),
        errors,
        first_error: shared.first_error.get(),
        connections_closed: shared.closed.get(),
        wall_s,
        server_cpu_s: server_cpu,
        bench_cpu_s: bench_cpu,
        server_rss_bytes: rss,
        step_deliveries,
        wire_bytes_read: bytes,
        bytes_per_delivery: per_delivery(bytes as f64),
        server_cpu_us_per_delivery: server_cpu.and_then(|c| per_delivery(c * 1e6)),
        nodes,
        broker_cpu_s: broker_cpu,
        database_cpu_s: database_cpu,
        cluster_cpu_us_per_delivery: (broker_cpu.is_some() || database_cpu.is_some())
            .then(|| {
                server_cpu.map(|c| c + broker_cpu.unwrap_or(0.0) + database_cpu.unwrap_or(0.0))
            })
            .flatten()
            .and_then(|c| per_delivery(c * 1e6)),
        load_average: procs::load_average(),
        sustained: complete && receive.p99 < 50.0,
    }
}

/// The time the measured deliveries took, first to last, and never less than the measured
/// schedule (`first` is `u64::MAX` and `last` 0 when there was none).
fn delivery_span_ns(first: u64, last: u64, measured_start: u64, measured_end: u64) -> u64 {
    last.saturating_sub(first)
        .max(measured_end.saturating_sub(measured_start))
        .max(1)
}

/// The time the scheduler took to hand the measured messages over: from the first one's
/// intended time to the last hand-over, plus one interval (exactly the schedule when it keeps
/// up, since the last message is due one interval before the schedule's end).
fn handover_span_ns(last_handed: u64, measured_start: u64, measured_end: u64, rate: f64) -> u64 {
    let interval = (1e9 / rate) as u64;
    (last_handed.max(measured_end.saturating_sub(interval)) + interval)
        .saturating_sub(measured_start)
        .max(1)
}

/// The scheduler: hand message `i` to its connection at `start + i / rate` (open loop).
#[allow(clippy::too_many_arguments)]
fn schedule(
    rate: f64,
    total: u64,
    k0: u64,
    warmup: u64,
    start_ns: u64,
    shape: Shape,
    outs: &[Outbox],
    shared: &Shared,
) -> u64 {
    let interval_ns = 1e9 / rate;
    let mut i: u64 = 0;
    let mut lags = Batch::default();
    let mut handed = 0u64;
    let mut handed_ns = start_ns;
    while i < total {
        let now = stats::now_ns();
        if now < start_ns {
            std::thread::sleep(Duration::from_nanos(start_ns - now));
            continue;
        }
        let due = (((now - start_ns) as f64 / interval_ns) as u64 + 1).min(total);
        while i < due {
            let intended_ns = start_ns + (i as f64 * interval_ns) as u64;
            let (conn, channel) = shape.target(i);
            let k = k0 + i;
            let _ = outs[conn].send(Out::Send {
                k,
                channel,
                intended_ns,
            });
            // Each message's own hand-over time: a late burst takes time to hand over too.
            handed_ns = stats::now_ns();
            if i >= warmup {
                lags.push_since(intended_ns, handed_ns);
                handed += 1;
            }
            i += 1;
        }
        if handed >= 256 {
            shared.sent.add(handed);
            handed = 0;
            lags.flush(&shared.lag);
        }
        if i < total {
            let next_ns = start_ns + (i as f64 * interval_ns) as u64;
            let now = stats::now_ns();
            if next_ns > now {
                // Sleep at least 50 µs: finer sleeps cost more CPU than they save latency.
                std::thread::sleep(Duration::from_nanos((next_ns - now).max(50_000)));
            }
        }
    }
    shared.sent.add(handed);
    lags.flush(&shared.lag);
    handed_ns
}

/// The highest offered rate of a sweep that a peer sustained (see [`StepResult::sustained`]).
pub fn max_sustained(results: &[StepResult], peer: &str) -> Option<f64> {
    results
        .iter()
        .filter(|r| r.peer == peer && r.sustained)
        .map(|r| r.offered_rate)
        .fold(None, |m, r| Some(m.map_or(r, |m: f64| m.max(r))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core subscription is confirmed by its `PONG`; a durable consumer by its creation's
    /// reply, whose request names the connection's own delivery subject and the channel's.
    #[test]
    fn nats_connections_subscribe_or_create_their_consumer() {
        assert_eq!(
            nats_subscriptions(Proto::Nats, 3, 1),
            "SUB bench.1 1\r\nPING\r\n"
        );
        assert_eq!(
            nats_subscriptions(Proto::JetStreamDedupe, 3, 1),
            "SUB bench.1 1\r\nSUB _INBOX.3.* 2\r\nPING\r\n"
        );
        let lines = nats_subscriptions(Proto::JetStreamDurable, 3, 1);
        let head = format!(
            "SUB deliver.3 1\r\nSUB _INBOX.3.* 2\r\nPUB $JS.API.CONSUMER.DURABLE.CREATE.BENCH.c3 _INBOX.3.{} ",
            JOIN_BASE + 3
        );
        let rest = lines.strip_prefix(&head).expect(&lines);
        let (len, body) = rest.split_once("\r\n").expect(rest);
        let body = body.strip_suffix("\r\n").expect(body);
        assert_eq!(len.parse::<usize>().unwrap(), body.len());
        let request: serde_json::Value = serde_json::from_str(body).unwrap();
        let config = &request["config"];
        assert_eq!(request["stream_name"], "BENCH");
        assert_eq!(config["durable_name"], "c3");
        assert_eq!(config["deliver_subject"], "deliver.3");
        assert_eq!(config["filter_subject"], "bench.1");
        assert_eq!(config["ack_policy"], "none");
        assert!(
            !lines.contains("PING"),
            "readiness is the consumer's, not a PONG"
        );
    }

    #[test]
    fn a_message_delivered_once_more_than_it_has_members_is_a_duplicate() {
        let d = DeliveriesOf {
            k0: 100,
            members: 2,
            counts: (0..3).map(|_| Default::default()).collect(),
        };
        // Both members of message 101 get it, then one of them again.
        assert!(!d.is_duplicate(101));
        assert!(!d.is_duplicate(101));
        assert!(d.is_duplicate(101));
        // Other messages count apart; messages outside the step are not counted.
        assert!(!d.is_duplicate(100));
        assert!(!d.is_duplicate(99));
        assert!(!d.is_duplicate(103));
    }

    #[test]
    fn a_connection_counts_duplicates_in_every_step_of_a_sweep() {
        let shared = Arc::new(Shared::default());
        let (out, _queue) = tokio::sync::mpsc::unbounded_channel();
        let mut handler = TrafficHandler::new(shared.clone());
        let deliver = |handler: &mut TrafficHandler, k: u64| {
            handler.on(
                Ev::Delivery {
                    bench: Some((k, 0)),
                    seq: 1,
                    cursor: 1,
                },
                &out,
            );
        };
        // Two steps of two messages each, one member per message; each step's messages are
        // delivered twice.
        for k0 in [100, 102] {
            if let Ok(mut d) = shared.deliveries_of.write() {
                *d = Arc::new(DeliveriesOf {
                    k0,
                    members: 1,
                    counts: (0..2).map(|_| Default::default()).collect(),
                });
            }
            shared.k0.store(k0, Ordering::Relaxed);
            shared.k_lo.store(k0, Ordering::Relaxed);
            shared.k_hi.store(k0 + 2, Ordering::Relaxed);
            for k in [k0, k0 + 1, k0 + 1] {
                deliver(&mut handler, k);
            }
            handler.flush();
        }
        assert_eq!(shared.duplicates.get(), 2);
    }

    #[test]
    fn only_the_measured_sends_refused_count_as_the_step_errors() {
        let shared = Arc::new(Shared::default());
        // A step of messages 100..110 whose first 4 are its warmup.
        shared.k0.store(100, Ordering::Relaxed);
        shared.k_lo.store(104, Ordering::Relaxed);
        shared.k_hi.store(110, Ordering::Relaxed);
        let (out, _queue) = tokio::sync::mpsc::unbounded_channel();
        let mut handler = TrafficHandler::new(shared.clone());
        for id in [101, 99, JOIN_BASE + 3] {
            handler.on(
                Ev::Error {
                    id: Some(id),
                    code: "rate_limited",
                },
                &out,
            );
        }
        handler.flush();
        assert_eq!(shared.errors.get(), 0);
        // A measured send refused, and an error that answers no send: both count.
        handler.on(
            Ev::Error {
                id: Some(105),
                code: "rate_limited",
            },
            &out,
        );
        handler.on(
            Ev::Error {
                id: None,
                code: "malformed_frame",
            },
            &out,
        );
        handler.flush();
        assert_eq!(shared.errors.get(), 2);
        assert_eq!(shared.first_error.get().as_deref(), Some("rate_limited"));
    }

    #[test]
    fn a_connection_whose_read_failed_names_why_in_first_error() {
        let shared = Arc::new(Shared::default());
        let (out, _queue) = tokio::sync::mpsc::unbounded_channel();
        let mut handler = TrafficHandler::new(shared.clone());
        handler.on(
            Ev::Closed {
                code: None,
                reason: Some("connection read failed: bad MSG length"),
            },
            &out,
        );
        handler.on(
            Ev::Closed {
                code: Some(4008),
                reason: None,
            },
            &out,
        );
        assert_eq!(shared.closed.get(), 2);
        assert_eq!(
            shared.first_error.get().as_deref(),
            Some("connection read failed: bad MSG length")
        );
    }

    #[tokio::test]
    async fn a_step_waits_until_the_traffic_of_the_one_before_stops() {
        let quiet = Duration::from_millis(10);
        let max = Duration::from_secs(5);
        // Nothing arriving: one quiet period.
        assert!(settle(|| 7, quiet, max).await < max);
        // Bytes still arriving at the first three looks: three more quiet periods.
        let looks = AtomicU64::new(0);
        let backlog = || looks.fetch_add(1, Ordering::Relaxed).min(3);
        let waited = settle(backlog, quiet, max).await;
        assert!(waited >= 4 * quiet && waited < max, "{waited:?}");
        // Traffic that never stops: the wait is bounded.
        let endless = AtomicU64::new(0);
        let waited = settle(|| endless.fetch_add(1, Ordering::Relaxed), quiet, quiet * 5).await;
        assert!(waited >= quiet * 5, "{waited:?}");
    }

    #[test]
    fn a_step_that_keeps_up_is_measured_over_its_schedule() {
        let (start, end) = (1_000_000_000, 11_000_000_000);
        // Deliveries 2 ms behind their sends, from start to end: the schedule's 10 s.
        assert_eq!(
            delivery_span_ns(start + 2_000_000, end + 1_000_000, start, end),
            10_000_000_000
        );
        // None at all: the schedule, never zero.
        assert_eq!(delivery_span_ns(u64::MAX, 0, start, end), 10_000_000_000);
        // Every message handed over on time (the last one at `end - 1/rate`).
        assert_eq!(
            handover_span_ns(end - 1_000, start, end, 1e6),
            10_000_000_000
        );
    }

    #[test]
    fn a_saturated_step_is_measured_over_the_time_its_deliveries_took() {
        let (start, end) = (1_000_000_000, 11_000_000_000);
        // The first measured delivery waited 4 s behind the warmup's backlog, the last came 6 s
        // after the schedule: 12 s of deliveries, not 16.
        assert_eq!(
            delivery_span_ns(start + 4_000_000_000, end + 6_000_000_000, start, end),
            12_000_000_000
        );
        // A scheduler that fell 2 s behind handed the messages over in 12 s.
        assert_eq!(
            handover_span_ns(end + 2_000_000_000, start, end, 1e6),
            12_000_001_000
        );
    }

    #[test]
    fn an_interleaved_sweep_runs_each_rate_for_every_peer_and_skips_the_dropped() {
        let mut turns = Turns::new(3, 3);
        let mut order = Vec::new();
        while let Some((peer, step)) = turns.next() {
            order.push((peer, step));
            // Peer 1 saturates at the first rate, peer 2 at the second.
            if (peer, step) == (1, 0) || (peer, step) == (2, 1) {
                turns.drop_peer(peer);
            }
        }
        assert_eq!(order, vec![(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]);
        let mut none = Turns::new(2, 0);
        assert_eq!(none.next(), None);
        let mut all_dropped = Turns::new(2, 5);
        all_dropped.drop_peer(0);
        all_dropped.drop_peer(1);
        assert_eq!(all_dropped.next(), None);
    }

    #[test]
    fn direct_messages_alternate_sides_of_each_pair() {
        let shape = Shape::Direct { pairs: 3 };
        assert_eq!(shape.target(0), (0, 0));
        assert_eq!(shape.target(1), (2, 1));
        assert_eq!(shape.target(3), (1, 0));
        assert_eq!(shape.channel_of(5), 2);
        assert_eq!(shape.connections(), 6);
    }

    #[test]
    fn fanout_senders_rotate_through_each_group() {
        let shape = Shape::Fanout { groups: 2, size: 3 };
        let senders: Vec<(usize, u32)> = (0..6).map(|i| shape.target(i)).collect();
        assert_eq!(
            senders,
            vec![(0, 0), (3, 1), (1, 0), (4, 1), (2, 0), (5, 1)]
        );
        assert_eq!(shape.channel_of(4), 1);
    }
}
