//! What the bench prints and writes: the final table (stdout), the JSON report (`--json`), the
//! Natter/peer ratios, JSON against Protocol Buffers, the per-node figures of a cluster, the
//! targets, and a hand-written SVG chart of latency against offered load.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::stats::Percentiles;
use crate::traffic::{StepResult, max_sustained};

/// The JSON report's schema name; bumped on an incompatible change (see docs/benchmarks.md).
pub const SCHEMA: &str = "natter-bench/1";

/// One target of the issue, evaluated on this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// `None` when this run cannot tell (another scenario, other parameters).
    pub met: Option<bool>,
}

/// The Natter/peer ratio at one offered load.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The Natter row compared: `natter` (JSON frames) or `natter-proto` (protobuf frames).
    pub natter: String,
    pub peer: String,
    pub offered_rate: f64,
    pub natter_receive_p99_ms: f64,
    pub peer_receive_p99_ms: f64,
    /// Natter p99 / peer p99: below 1 means Natter is faster.
    pub receive_p99_ratio: f64,
    pub natter_ack_p99_ms: Option<f64>,
    pub peer_ack_p99_ms: Option<f64>,
    pub ack_p99_ratio: Option<f64>,
    pub natter_delivered_per_s: f64,
    pub peer_delivered_per_s: f64,
    /// Natter delivered/s / peer delivered/s: above 1 means Natter delivered more.
    pub throughput_ratio: f64,
}

/// The Natter rows of a run, one per encoding, in the order they ran (`natter` for JSON frames,
/// `natter-proto` for protobuf frames): targets and peer ratios are judged on each.
pub fn natter_rows(steps: &[StepResult]) -> Vec<&str> {
    let mut rows: Vec<&str> = Vec::new();
    for step in steps.iter().filter(|s| s.encoding.is_some()) {
        if !rows.contains(&step.peer.as_str()) {
            rows.push(&step.peer);
        }
    }
    rows
}

pub fn ratios(steps: &[StepResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for row in natter_rows(steps) {
        out.extend(ratios_of(steps, row));
    }
    out
}

fn ratios_of(steps: &[StepResult], row: &str) -> Vec<Ratio> {
    let mut out = Vec::new();
    for natter in steps.iter().filter(|s| s.peer == row) {
        for peer in steps
            .iter()
            .filter(|s| s.encoding.is_none() && s.offered_rate == natter.offered_rate)
        {
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push(Ratio {
                natter: row.to_string(),
                peer: peer.peer.clone(),
                offered_rate: natter.offered_rate,
                natter_receive_p99_ms: natter.receive_latency_ms.p99,
                peer_receive_p99_ms: peer.receive_latency_ms.p99,
                receive_p99_ratio: div(natter.receive_latency_ms.p99, peer.receive_latency_ms.p99),
                natter_ack_p99_ms: natter.ack_latency_ms.map(|a| a.p99),
                peer_ack_p99_ms: peer.ack_latency_ms.map(|a| a.p99),
                ack_p99_ratio: natter
                    .ack_latency_ms
                    .zip(peer.ack_latency_ms)
                    .map(|(a, b)| div(a.p99, b.p99)),
                natter_delivered_per_s: natter.delivered_per_s,
                peer_delivered_per_s: peer.delivered_per_s,
                throughput_ratio: div(natter.delivered_per_s, peer.delivered_per_s),
            });
        }
    }
    out
}

/// JSON against Protocol Buffers at one offered load: what a delivered message costs.
#[derive(Debug, Clone, Serialize)]
pub struct EncodingComparison {
    pub offered_rate: f64,
    pub json_bytes_per_delivery: Option<f64>,
    pub proto_bytes_per_delivery: Option<f64>,
    /// proto / json: below 1 means protobuf reads fewer bytes.
    pub bytes_ratio: Option<f64>,
    pub json_server_cpu_us_per_delivery: Option<f64>,
    pub proto_server_cpu_us_per_delivery: Option<f64>,
    /// proto / json: below 1 means protobuf costs the server less CPU.
    pub server_cpu_ratio: Option<f64>,
    pub json_receive_p99_ms: f64,
    pub proto_receive_p99_ms: f64,
}

/// Pair the `natter` and `natter-proto` steps of equal offered load.
pub fn encoding_comparison(steps: &[StepResult]) -> Vec<EncodingComparison> {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    steps
        .iter()
        .filter(|s| s.encoding.as_deref() == Some("json"))
        .filter_map(|json| {
            let proto = steps.iter().find(|s| {
                s.encoding.as_deref() == Some("proto") && s.offered_rate == json.offered_rate
            })?;
            Some(EncodingComparison {
                offered_rate: json.offered_rate,
                json_bytes_per_delivery: json.bytes_per_delivery,
                proto_bytes_per_delivery: proto.bytes_per_delivery,
                bytes_ratio: ratio(json.bytes_per_delivery, proto.bytes_per_delivery),
                json_server_cpu_us_per_delivery: json.server_cpu_us_per_delivery,
                proto_server_cpu_us_per_delivery: proto.server_cpu_us_per_delivery,
                server_cpu_ratio: ratio(
                    json.server_cpu_us_per_delivery,
                    proto.server_cpu_us_per_delivery,
                ),
                json_receive_p99_ms: json.receive_latency_ms.p99,
                proto_receive_p99_ms: proto.receive_latency_ms.p99,
            })
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn ms(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 1.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn pct_cells(p: &Percentiles) -> [String; 5] {
    [ms(p.p50), ms(p.p90), ms(p.p99), ms(p.p999), ms(p.max)]
}

/// A plain text table with right-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        for (i, cell) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, headers.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, rule.iter().map(String::as_str).collect());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

/// The final table of a `direct`/`fanout` run.
pub fn traffic_table(steps: &[StepResult]) -> String {
    let headers = [
        "peer",
        "offered/s",
        "sent/s",
        "delivered/s",
        "missing",
        "errors",
        "ack p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "recv p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "srv cpu",
        "cpu µs/dlv",
        "B/dlv",
        "ok",
    ];
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let mut row = vec![
                s.peer.clone(),
                format!("{:.0}", s.offered_rate),
                format!("{:.0}", s.sent_per_s),
                format!("{:.0}", s.delivered_per_s),
                s.expected_deliveries
                    .saturating_sub(s.delivered.saturating_sub(s.duplicates))
                    .to_string(),
                s.errors.to_string(),
            ];
            match &s.ack_latency_ms {
                Some(a) => row.extend(pct_cells(a)),
                None => row.extend(std::iter::repeat_n("-".to_string(), 5)),
            }
            row.extend(pct_cells(&s.receive_latency_ms));
            row.push(
                s.server_cpu_s
                    .map(|c| format!("{:.0}%", 100.0 * c / s.wall_s.max(0.001)))
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(opt(s.server_cpu_us_per_delivery, 2));
            row.push(opt(s.bytes_per_delivery, 0));
            row.push(if s.sustained { "yes" } else { "NO" }.into());
            row
        })
        .collect();
    let mut out = String::from(
        "latencies in ms (open loop, from the intended send time); srv cpu in % of one core \
         (all nodes); per delivered message: server CPU (µs) and bytes read by the bench\n",
    );
    out.push_str(&table(&headers, &rows));
    let comparison = encoding_comparison(steps);
    if !comparison.is_empty() {
        out.push_str(
            "\nJSON vs Protocol Buffers per delivered message (ratio: proto / json, below 1 is \
             cheaper for protobuf)\n",
        );
        let rows: Vec<Vec<String>> = comparison
            .iter()
            .map(|c| {
                vec![
                    format!("{:.0}", c.offered_rate),
                    format!(
                        "{} / {}",
                        opt(c.json_bytes_per_delivery, 0),
                        opt(c.proto_bytes_per_delivery, 0)
                    ),
                    opt(c.bytes_ratio, 2),
                    format!(
                        "{} / {}",
                        opt(c.json_server_cpu_us_per_delivery, 2),
                        opt(c.proto_server_cpu_us_per_delivery, 2)
                    ),
                    opt(c.server_cpu_ratio, 2),
                    format!(
                        "{} / {}",
                        ms(c.json_receive_p99_ms),
                        ms(c.proto_receive_p99_ms)
                    ),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "offered/s",
                "bytes json/proto",
                "ratio",
                "server cpu µs json/proto",
                "ratio",
                "recv p99 json/proto",
            ],
            &rows,
        ));
    }
    if steps
        .iter()
        .any(|s| s.nodes.len() > 1 || s.broker_cpu_s.is_some())
    {
        out.push_str(&nodes_table(steps));
    }
    let ratios = ratios(steps);
    if !ratios.is_empty() {
        out.push_str("\nNatter / peer at the same offered load (p99: below 1 is better for Natter; throughput: above 1)\n");
        let rows: Vec<Vec<String>> = ratios
            .iter()
            .map(|r| {
                vec![
                    r.natter.clone(),
                    r.peer.clone(),
                    format!("{:.0}", r.offered_rate),
                    format!(
                        "{} / {}",
                        ms(r.natter_receive_p99_ms),
                        ms(r.peer_receive_p99_ms)
                    ),
                    format!("{:.2}", r.receive_p99_ratio),
                    match (r.natter_ack_p99_ms, r.peer_ack_p99_ms) {
                        (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
                        _ => "-".into(),
                    },
                    r.ack_p99_ratio.map_or("-".into(), |v| format!("{v:.2}")),
                    format!(
                        "{:.0} / {:.0}",
                        r.natter_delivered_per_s, r.peer_delivered_per_s
                    ),
                    format!("{:.2}", r.throughput_ratio),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "natter",
                "peer",
                "offered/s",
                "recv p99 N/peer",
                "ratio",
                "ack p99 N/peer",
                "ratio",
                "delivered/s N/peer",
                "ratio",
            ],
            &rows,
        ));
    }
    let mut peers: Vec<&str> = steps.iter().map(|s| s.peer.as_str()).collect();
    peers.dedup();
    if steps.len() > peers.len() {
        out.push_str(
            "\nhighest offered rate sustained (nothing missing, all acked, p99 < 50 ms):\n",
        );
        for peer in peers {
            let _ = writeln!(
                out,
                "  {peer:<10} {}",
                max_sustained(steps, peer).map_or("none".into(), |r| format!("{r:.0}/s"))
            );
        }
    }
    out
}

/// Every node's CPU (% of one core) and memory per step, with a cluster's broker and database.
fn nodes_table(steps: &[StepResult]) -> String {
    let mut rows = Vec::new();
    for s in steps.iter().filter(|s| !s.nodes.is_empty()) {
        let pct = |c: Option<f64>| opt(c.map(|c| 100.0 * c / s.wall_s.max(0.001)), 0) + "%";
        let mib = |b: Option<u64>| opt(b.map(|b| b as f64 / 1048576.0), 1);
        let mut row = |what: String, cpu: String, memory: String| {
            rows.push(vec![
                s.peer.clone(),
                format!("{:.0}", s.offered_rate),
                what,
                cpu,
                memory,
            ]);
        };
        for node in &s.nodes {
            row(node.node.clone(), pct(node.cpu_s), mib(node.rss_bytes));
        }
        row(
            "all nodes".into(),
            pct(s.server_cpu_s),
            mib(s.server_rss_bytes),
        );
        if s.broker_cpu_s.is_some() || s.database_cpu_s.is_some() {
            row("nats-server".into(), pct(s.broker_cpu_s), "-".into());
            row("postgresql".into(), pct(s.database_cpu_s), "-".into());
            let all = s
                .server_cpu_s
                .map(|c| c + s.broker_cpu_s.unwrap_or(0.0) + s.database_cpu_s.unwrap_or(0.0));
            row(
                format!("all: {} µs/dlv", opt(s.cluster_cpu_us_per_delivery, 2)),
                pct(all),
                "-".into(),
            );
        }
    }
    format!(
        "\nper node (cpu: % of one core over the step; rss: MiB at its end; postgresql: the \
         backends of the bench's database)\n{}",
        table(&["peer", "offered/s", "process", "cpu", "rss MiB"], &rows)
    )
}

/// `idle` per node: connections (opened of requested, when some failed), memory before and after,
/// per connection opened, open files, CPU while connecting.
pub fn idle_nodes_table(nodes: &[crate::idle::IdleNode]) -> String {
    let mib = |b: Option<u64>| opt(b.map(|b| b as f64 / 1048576.0), 1);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.connections_opened == n.connections as u64 {
                    n.connections.to_string()
                } else {
                    format!("{} of {}", n.connections_opened, n.connections)
                },
                mib(n.rss_before_bytes),
                mib(n.rss_after_connect_bytes),
                mib(n.rss_after_hold_bytes),
                opt(n.rss_per_connection_bytes.map(|b| b / 1024.0), 2),
                n.open_fds.map_or("-".into(), |f| f.to_string()),
                opt(n.cpu_s_connecting, 2),
            ]
        })
        .collect();
    format!(
        "per node\n{}",
        table(
            &[
                "node",
                "connections",
                "rss before MiB",
                "after connect",
                "after hold",
                "KiB/conn",
                "open files",
                "cpu connecting s",
            ],
            &rows,
        )
    )
}

/// Targets of the issue that a `direct` run can check, for each encoding that ran.
pub fn direct_targets(steps: &[StepResult]) -> Vec<Target> {
    per_encoding(steps, |row| {
        let natter: Vec<&StepResult> = steps.iter().filter(|s| s.peer == row).collect();
        let mut targets = Vec::new();
        let at_5000 = natter.iter().find(|s| s.offered_rate == 5000.0);
        targets.push(Target {
            name: "direct p99 at 5,000 msg/s".into(),
            target: "send→receive p99 ≤ 5 ms".into(),
            measured: at_5000.map_or("not run at 5,000/s".into(), |s| {
                format!("{} ms", ms(s.receive_latency_ms.p99))
            }),
            met: at_5000.map(|s| s.sustained && s.receive_latency_ms.p99 <= 5.0),
        });
        let best = max_sustained(steps, row);
        targets.push(Target {
            name: "direct sustained rate".into(),
            target: "≥ 30,000 msg/s with p99 < 50 ms".into(),
            measured: best.map_or("none sustained".into(), |r| format!("{r:.0} msg/s")),
            met: (!natter.is_empty()).then(|| best.unwrap_or(0.0) >= 30_000.0),
        });
        targets.extend(peer_targets(steps, row));
        targets
    })
}

/// Targets of the issue that a `fanout` run can check, for each encoding that ran.
pub fn fanout_targets(steps: &[StepResult], group_size: usize) -> Vec<Target> {
    per_encoding(steps, |row| {
        let best = steps
            .iter()
            .filter(|s| s.peer == row && s.sustained)
            .map(carried_per_s)
            .fold(0.0f64, f64::max);
        let mut targets = vec![Target {
            name: format!("fanout deliveries in groups of {group_size}"),
            target: "≥ 250,000 deliveries/s in groups of 100, p99 < 50 ms".into(),
            measured: format!("{best:.0} deliveries/s"),
            met: (group_size == 100 && steps.iter().any(|s| s.peer == row))
                .then_some(best >= 250_000.0),
        }];
        targets.extend(peer_targets(steps, row));
        targets
    })
}

/// Deliveries per second a sustained step carried: its offered rate times the deliveries each
/// message makes, every one of which arrived (what `sustained` means). Not `delivered_per_s`,
/// which spans the first to the last delivery: the last message's fan-out runs a few
/// milliseconds past the schedule, so a step that carries exactly a target's rate measures a
/// hair under it (249,838 against 250,000 per second at 2,500 messages/s into groups of 100).
fn carried_per_s(step: &StepResult) -> f64 {
    if step.sent == 0 {
        return 0.0;
    }
    step.offered_rate * step.expected_deliveries as f64 / step.sent as f64
}

/// The targets `judge` gives each Natter row; named after their encoding when both ran.
fn per_encoding(steps: &[StepResult], judge: impl Fn(&str) -> Vec<Target>) -> Vec<Target> {
    let rows = natter_rows(steps);
    if rows.len() <= 1 {
        return judge(rows.first().copied().unwrap_or("natter"));
    }
    let mut targets = Vec::new();
    for row in rows {
        let encoding = if row == "natter-proto" {
            "protobuf"
        } else {
            "JSON"
        };
        targets.extend(judge(row).into_iter().map(|mut t| {
            t.name = format!("{} ({encoding})", t.name);
            t
        }));
    }
    targets
}

fn peer_targets(steps: &[StepResult], row: &str) -> Vec<Target> {
    let mut targets = Vec::new();
    let r = ratios_of(steps, row);
    let vs_socketio: Vec<&Ratio> = r.iter().filter(|r| r.peer == "socketio").collect();
    if !vs_socketio.is_empty() {
        // Compared where both sustained the load.
        let comparable: Vec<&&Ratio> = vs_socketio
            .iter()
            .filter(|r| {
                steps.iter().any(|s| {
                    s.peer == "socketio" && s.offered_rate == r.offered_rate && s.sustained
                })
            })
            .collect();
        let worse: Vec<String> = comparable
            .iter()
            .filter(|r| r.receive_p99_ratio > 1.0)
            .map(|r| format!("{:.0}/s ({:.2}×)", r.offered_rate, r.receive_p99_ratio))
            .collect();
        targets.push(Target {
            name: "p99 vs Socket.IO at equal load".into(),
            target: "Natter p99 ≤ Socket.IO p99 wherever Socket.IO sustains the load".into(),
            measured: if worse.is_empty() {
                format!("no worse at {} rate(s)", comparable.len())
            } else {
                format!("worse at {}", worse.join(", "))
            },
            met: Some(worse.is_empty() && !comparable.is_empty()),
        });
    }
    // JetStream publishing as Natter's clients send (every send carries an id checked against
    // duplicates), and without that check: both judged, neither hidden.
    for (peer, name, target) in [
        (
            "jetstream",
            "durable throughput vs JetStream",
            "Natter's highest sustained rate ≥ JetStream's (no duplicate check)",
        ),
        (
            "jetstream-dedupe",
            "durable throughput vs JetStream with Nats-Msg-Id",
            "Natter's highest sustained rate ≥ JetStream's, each publish checked for duplicates",
        ),
        (
            "jetstream-durable",
            "durable throughput vs JetStream with Nats-Msg-Id and durable consumers",
            "Natter's highest sustained rate ≥ JetStream's, each publish checked for duplicates \
             and delivered from the stream through a durable consumer per connection",
        ),
    ] {
        if steps.iter().any(|s| s.peer == peer) {
            let natter = max_sustained(steps, row).unwrap_or(0.0);
            let jetstream = max_sustained(steps, peer).unwrap_or(0.0);
            targets.push(Target {
                name: name.into(),
                target: target.into(),
                measured: format!("{natter:.0}/s vs {jetstream:.0}/s"),
                met: Some(natter >= jetstream && natter > 0.0),
            });
        }
    }
    targets
}

pub fn targets_text(targets: &[Target]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.target.clone(),
                t.measured.clone(),
                match t.met {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => "n/a".into(),
                },
            ]
        })
        .collect();
    format!(
        "\ntargets\n{}",
        table(&["target", "wanted", "measured", ""], &rows)
    )
}

/// The whole JSON report.
pub fn document(
    scenario: &str,
    config: Value,
    body: Value,
    targets: &[Target],
    started_ms: u64,
    elapsed_s: f64,
) -> Value {
    json!({
        "schema": SCHEMA,
        "scenario": scenario,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_unix_ms": started_ms,
        "elapsed_s": elapsed_s,
        "machine": crate::procs::machine(),
        "config": config,
        "result": body,
        "targets": targets,
    })
}

const COLORS: [(&str, &str); 7] = [
    ("natter", "#1f77b4"),
    ("natter-proto", "#17becf"),
    ("socketio", "#ff7f0e"),
    ("nats", "#2ca02c"),
    ("jetstream", "#9467bd"),
    ("jetstream-dedupe", "#8c564b"),
    ("jetstream-durable", "#e377c2"),
];

fn color(peer: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(p, _)| *p == peer)
        .map_or("#444444", |(_, c)| c)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG chart of receive-latency percentiles (log scale) against offered load, one colour per
/// peer, one dash pattern per percentile.
pub fn svg_chart(title: &str, steps: &[StepResult]) -> String {
    let (w, h) = (900.0, 540.0);
    let (left, right, top, bottom) = (80.0, 200.0, 50.0, 60.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max_rate = steps
        .iter()
        .map(|s| s.offered_rate)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let x_max = nice_ceiling(max_rate);
    let values: Vec<f64> = steps
        .iter()
        .flat_map(|s| {
            let p = &s.receive_latency_ms;
            [p.p50, p.p99, p.p999]
        })
        .filter(|v| *v > 0.0)
        .collect();
    let y_min = 10f64.powf(
        values
            .iter()
            .copied()
            .fold(f64::MAX, f64::min)
            .max(0.001)
            .log10()
            .floor(),
    );
    let y_max = 10f64
        .powf(values.iter().copied().fold(0.01, f64::max).log10().ceil())
        .max(y_min * 10.0);
    let x = |rate: f64| left + plot_w * rate / x_max;
    let y = |v: f64| {
        let v = v.clamp(y_min, y_max);
        top + plot_h * (1.0 - (v.log10() - y_min.log10()) / (y_max.log10() - y_min.log10()))
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut decade = y_min;
    while decade <= y_max * 1.0001 {
        let yy = y(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            fmt_axis(decade)
        );
        decade *= 10.0;
    }
    for i in 0..=5 {
        let rate = x_max * f64::from(i) / 5.0;
        let xx = x(rate);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            fmt_rate(rate)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (messages/s)</text>"#,
        left + plot_w / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">send→receive latency (ms, log scale)</text>"#,
        top + plot_h / 2.0
    );
    // Series.
    let percentiles: [Series; 3] = [
        ("p50", "2 4", |p| p.p50),
        ("p99", "", |p| p.p99),
        ("p99.9", "8 4", |p| p.p999),
    ];
    let mut peers: Vec<&str> = Vec::new();
    for s in steps {
        if !peers.contains(&s.peer.as_str()) {
            peers.push(&s.peer);
        }
    }
    let mut legend_y = top + 10.0;
    for peer in &peers {
        let points: Vec<&StepResult> = steps.iter().filter(|s| s.peer == *peer).collect();
        for (name, dash, get) in &percentiles {
            let coords: Vec<String> = points
                .iter()
                .filter(|s| get(&s.receive_latency_ms) > 0.0)
                .map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        x(s.offered_rate),
                        y(get(&s.receive_latency_ms))
                    )
                })
                .collect();
            if coords.is_empty() {
                continue;
            }
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                coords.join(" "),
                color(peer)
            );
            for s in &points {
                let v = get(&s.receive_latency_ms);
                if v > 0.0 {
                    let fill = if s.sustained { color(peer) } else { "white" };
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}" stroke="{}"><title>{peer} {name} at {:.0}/s: {} ms</title></circle>"#,
                        x(s.offered_rate),
                        y(v),
                        color(peer),
                        s.offered_rate,
                        ms(v)
                    );
                }
            }
            let lx = left + plot_w + 15.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{peer} {name}</text>"#,
                lx + 30.0,
                color(peer),
                lx + 36.0,
                legend_y + 4.0
            );
            legend_y += 18.0;
        }
        legend_y += 6.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11">hollow point: not sustained</text>"#,
        left + plot_w + 15.0,
        legend_y + 8.0
    );
    // A 50 ms line: the bar most targets use.
    if 50.0 <= y_max && 50.0 >= y_min {
        let yy = y(50.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#cc0000" stroke-dasharray="1 3"/><text x="{:.1}" y="{:.1}" fill="#cc0000" font-size="10">50 ms</text>"##,
            left + plot_w,
            left + 4.0,
            yy - 3.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A percentile series of the chart: name, dash pattern, value.
type Series = (&'static str, &'static str, fn(&Percentiles) -> f64);

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn fmt_axis(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(peer: &str, rate: f64, p99: f64, delivered: f64) -> StepResult {
        let p = Percentiles {
            count: 10,
            p50: p99 / 2.0,
            p90: p99 * 0.8,
            p99,
            p999: p99 * 1.5,
            max: p99 * 2.0,
            mean: p99 / 2.0,
        };
        StepResult {
            peer: peer.into(),
            encoding: match peer {
                "natter" => Some("json".into()),
                "natter-proto" => Some("proto".into()),
                _ => None,
            },
            nodes_count: 1,
            offered_rate: rate,
            duration_s: 10.0,
            sent: 10,
            acked: 10,
            delivered: 20,
            duplicates: 0,
            expected_deliveries: 20,
            sent_per_s: rate,
            delivered_per_s: delivered,
            ack_latency_ms: Some(p),
            receive_latency_ms: p,
            send_lag_ms: Percentiles::default(),
            errors: 0,
            first_error: None,
            connections_closed: 0,
            wall_s: 12.0,
            server_cpu_s: Some(5.0),
            bench_cpu_s: None,
            server_rss_bytes: None,
            step_deliveries: 24,
            wire_bytes_read: 2400,
            bytes_per_delivery: Some(100.0),
            server_cpu_us_per_delivery: Some(5.0),
            nodes: Vec::new(),
            broker_cpu_s: None,
            database_cpu_s: None,
            cluster_cpu_us_per_delivery: None,
            load_average: 0.0,
            sustained: p99 < 50.0,
        }
    }

    #[test]
    fn json_and_proto_rows_compare_per_delivery_and_peers_compare_with_json() {
        let mut proto = step("natter-proto", 1000.0, 1.0, 2000.0);
        proto.bytes_per_delivery = Some(40.0);
        proto.server_cpu_us_per_delivery = Some(4.0);
        let steps = vec![
            step("natter", 1000.0, 2.0, 2000.0),
            proto,
            step("socketio", 1000.0, 4.0, 2000.0),
        ];
        let c = encoding_comparison(&steps);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].bytes_ratio, Some(0.4));
        assert_eq!(c[0].server_cpu_ratio, Some(0.8));
        let r = ratios(&steps);
        assert_eq!(r.len(), 2, "each encoding against each peer: {r:?}");
        assert!(r.iter().all(|r| r.peer == "socketio"), "{r:?}");
        assert_eq!(
            r.iter().map(|r| r.natter.as_str()).collect::<Vec<_>>(),
            ["natter", "natter-proto"]
        );
        assert_eq!(r[1].receive_p99_ratio, 0.25);
        let text = traffic_table(&steps);
        assert!(text.contains("JSON vs Protocol Buffers"), "{text}");
        // Only protobuf ran: it is the row the targets judge, under the targets' plain names.
        let only = vec![step("natter-proto", 5000.0, 4.0, 10000.0)];
        assert_eq!(natter_rows(&only), ["natter-proto"]);
        let targets = direct_targets(&only);
        assert_eq!(targets[0].name, "direct p99 at 5,000 msg/s");
        assert_eq!(targets[0].met, Some(true));
    }

    /// With both encodings in one run every target is judged on each, and says which.
    #[test]
    fn both_encodings_are_judged_each_under_its_own_name() {
        let steps = vec![
            step("natter", 30000.0, 60.0, 60000.0),
            step("natter-proto", 30000.0, 40.0, 60000.0),
            step("jetstream", 30000.0, 45.0, 60000.0),
            step("jetstream-dedupe", 30000.0, 70.0, 60000.0),
            step("jetstream-durable", 30000.0, 20.0, 60000.0),
        ];
        let targets = direct_targets(&steps);
        let judged: Vec<(&str, Option<bool>)> =
            targets.iter().map(|t| (t.name.as_str(), t.met)).collect();
        assert_eq!(
            judged,
            [
                ("direct p99 at 5,000 msg/s (JSON)", None),
                ("direct sustained rate (JSON)", Some(false)),
                ("durable throughput vs JetStream (JSON)", Some(false)),
                // Neither sustained 30,000/s: no rate each, judged not met.
                (
                    "durable throughput vs JetStream with Nats-Msg-Id (JSON)",
                    Some(false)
                ),
                (
                    "durable throughput vs JetStream with Nats-Msg-Id and durable consumers (JSON)",
                    Some(false)
                ),
                ("direct p99 at 5,000 msg/s (protobuf)", None),
                ("direct sustained rate (protobuf)", Some(true)),
                ("durable throughput vs JetStream (protobuf)", Some(true)),
                (
                    "durable throughput vs JetStream with Nats-Msg-Id (protobuf)",
                    Some(true)
                ),
                (
                    "durable throughput vs JetStream with Nats-Msg-Id and durable consumers (protobuf)",
                    Some(true)
                ),
            ]
        );
        let fanout = fanout_targets(&steps, 100);
        assert_eq!(fanout.len(), 8, "{fanout:?}");
        assert!(fanout[4].name.ends_with("(protobuf)"), "{fanout:?}");
    }

    #[test]
    fn fanout_is_judged_on_what_a_sustained_step_carried() {
        // 2,500 messages/s into groups of 100, every delivery made, the measured span a little
        // longer than the schedule: the step carried 250,000 deliveries/s.
        let mut carried = step("natter", 2500.0, 40.0, 249_838.0);
        carried.sent = 25_000;
        carried.expected_deliveries = 2_500_000;
        carried.delivered = 2_500_000;
        let fanout = fanout_targets(&[carried.clone()], 100);
        assert_eq!(fanout[0].met, Some(true), "{fanout:?}");
        assert_eq!(fanout[0].measured, "250000 deliveries/s");
        // Not sustained (p99 over 50 ms): not counted, whatever it delivered.
        let mut late = carried;
        late.sustained = false;
        assert_eq!(fanout_targets(&[late], 100)[0].met, Some(false));
    }

    #[test]
    fn ratios_pair_steps_at_equal_load() {
        let steps = vec![
            step("natter", 1000.0, 2.0, 2000.0),
            step("natter", 5000.0, 4.0, 10000.0),
            step("socketio", 1000.0, 4.0, 2000.0),
        ];
        let r = ratios(&steps);
        assert_eq!(r.len(), 1);
        assert!((r[0].receive_p99_ratio - 0.5).abs() < 1e-9);
        let targets = direct_targets(&steps);
        assert_eq!(targets[0].met, Some(true));
        assert_eq!(targets[1].met, Some(false));
        assert_eq!(targets[2].met, Some(true));
    }

    #[test]
    fn the_chart_is_well_formed_svg_with_one_line_per_series() {
        let steps = vec![
            step("natter", 1000.0, 2.0, 2000.0),
            step("natter", 5000.0, 60.0, 10000.0),
            step("nats", 1000.0, 0.5, 2000.0),
        ];
        let svg = svg_chart("direct", &steps);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(svg.contains("natter p99"));
        let text = traffic_table(&steps);
        assert!(text.contains("natter") && text.contains("NO"));
    }
}
