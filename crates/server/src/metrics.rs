//! Prometheus metrics, served as text at `GET /metrics`.

use std::time::Duration;

use natter_core::StoreStats;
use prometheus::core::Collector;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    pub messages_committed: IntCounter,
    pub commit_groups: IntCounter,
    pub send_ack_seconds: Histogram,
    pub store_commit_seconds: Histogram,
    pub slow_reader_disconnects: IntCounter,
    pub connections_refused: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            )
            .unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let connections_open =
            IntGauge::new("natter_connections_open", "Open WebSocket connections")
                .unwrap_or_else(|_| unreachable_metric("natter_connections_open"));
        let _ = registry.register(Box::new(connections_open.clone()));
        Metrics {
            connections_open,
            frames_in: counter("natter_frames_in_total", "WebSocket frames received"),
            frames_out: counter("natter_frames_out_total", "WebSocket frames sent"),
            messages_committed: counter(
                "natter_messages_committed_total",
                "Messages durably committed",
            ),
            commit_groups: counter("natter_commit_groups_total", "Store commit groups"),
            send_ack_seconds: histogram(
                "natter_send_ack_seconds",
                "From a send command's arrival to its acknowledgement",
            ),
            store_commit_seconds: histogram(
                "natter_store_commit_seconds",
                "Duration of one store commit group",
            ),
            slow_reader_disconnects: counter(
                "natter_slow_reader_disconnects_total",
                "Connections closed because their outbound queue overflowed",
            ),
            connections_refused: counter(
                "natter_connections_refused_total",
                "WebSocket connections refused at the connection limit",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric, with the store's own figures.
    pub fn render(&self, store: StoreStats) -> String {
        let mut families = self.registry.gather();
        // The store's own figures, made afresh from `Store::stats` at each scrape (SQLite only:
        // absent on PostgreSQL), so that concurrent scrapes share no state.
        if let Some(frames) = store.log_frames {
            let name = "natter_store_log_frames";
            let help = "Frames (1 KiB pages) in SQLite's write-ahead log after the last commit";
            let gauge = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            gauge.set(i64::try_from(frames).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        if let Some(restarts) = store.log_restarts {
            let name = "natter_store_log_restarts_total";
            let help = "Times SQLite's write-ahead log started over";
            let counter = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            counter.inc_by(restarts);
            families.extend(counter.collect());
        }
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Metric names and options are constants: a failure here is a bug caught by the first test.
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition `{name}`")
}

impl natter_core::Observer for Metrics {
    fn committed(&self, messages: usize, duration: Duration) {
        self.commit_groups.inc();
        self.messages_committed.inc_by(messages as u64);
        self.store_commit_seconds.observe(duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_metric() {
        let metrics = Metrics::new();
        metrics.frames_in.inc();
        let stats = StoreStats {
            log_frames: Some(1200),
            log_restarts: Some(3),
        };
        let text = metrics.render(stats);
        for name in [
            "natter_connections_open",
            "natter_frames_in_total 1",
            "natter_frames_out_total",
            "natter_messages_committed_total",
            "natter_send_ack_seconds_bucket",
            "natter_store_commit_seconds_bucket",
            "natter_slow_reader_disconnects_total",
            "natter_store_log_frames 1200",
            "natter_store_log_restarts_total 3",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        // A later scrape counts on from there; an engine without a log shows none.
        let later = StoreStats {
            log_frames: Some(10),
            log_restarts: Some(5),
        };
        assert!(
            metrics
                .render(later)
                .contains("natter_store_log_restarts_total 5")
        );
        let postgres = metrics.render(StoreStats::default());
        assert!(!postgres.contains("natter_store_log"), "{postgres}");
    }
}
