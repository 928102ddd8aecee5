//! Latency histograms (HDR), counters, the bench's clock, and the live progress line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

static BASE: OnceLock<Instant> = OnceLock::new();

/// The bench's clock: nanoseconds since the process's first call (monotonic).
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

struct Pair {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

/// A shared latency histogram with a resettable window for the progress line.
pub struct Recorder {
    inner: Mutex<Pair>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            inner: Mutex::new(Pair {
                total: histogram(),
                interval: histogram(),
            }),
        }
    }
}

impl Recorder {
    /// Record latencies in microseconds (one lock for the whole batch).
    pub fn record_us(&self, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        if let Ok(mut pair) = self.inner.lock() {
            for v in values {
                let v = (*v).max(1);
                pair.total.saturating_record(v);
                pair.interval.saturating_record(v);
            }
        }
    }

    /// p99 of what was recorded since the last call (ms), and reset the window.
    pub fn take_window_p99(&self) -> Option<f64> {
        let mut pair = self.inner.lock().ok()?;
        let p99 = (!pair.interval.is_empty())
            .then(|| pair.interval.value_at_quantile(0.99) as f64 / 1000.0);
        pair.interval.reset();
        p99
    }

    pub fn summary(&self) -> Percentiles {
        self.inner
            .lock()
            .map(|p| Percentiles::of(&p.total))
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut pair) = self.inner.lock() {
            pair.total.reset();
            pair.interval.reset();
        }
    }
}

/// Per-connection batching in front of a shared [`Recorder`].
#[derive(Default)]
pub struct Batch {
    values: Vec<u64>,
}

impl Batch {
    pub fn push_since(&mut self, intended_ns: u64, now: u64) {
        self.values.push(now.saturating_sub(intended_ns) / 1000);
    }

    pub fn flush(&mut self, recorder: &Recorder) {
        recorder.record_us(&self.values);
        self.values.clear();
        if self.values.capacity() > 4096 {
            self.values = Vec::new();
        }
    }
}

/// A monotonically increasing counter with a rate window for the progress line.
#[derive(Default)]
pub struct Counter {
    value: AtomicU64,
    window_start: AtomicU64,
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Increase since the last call.
    pub fn take_window(&self) -> u64 {
        let now = self.get();
        now.saturating_sub(self.window_start.swap(now, Ordering::Relaxed))
    }

    pub fn reset(&self) {
        self.value.store(0, Ordering::Relaxed);
        self.window_start.store(0, Ordering::Relaxed);
    }
}

/// The first of a run's failures (an error frame, a close), kept for the report; later ones
/// are only counted elsewhere.
#[derive(Default)]
pub struct FirstError(std::sync::Mutex<Option<String>>);

impl FirstError {
    /// Keep `why` unless one is kept already (`why` runs only then).
    pub fn note(&self, why: impl FnOnce() -> String) {
        if let Ok(mut first) = self.0.lock() {
            first.get_or_insert_with(why);
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|first| first.clone())
    }

    pub fn reset(&self) {
        if let Ok(mut first) = self.0.lock() {
            *first = None;
        }
    }
}

/// The live progress line on stderr: rewritten in place on a terminal, a line every few seconds
/// otherwise (logs). Stops when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(mut line: impl FnMut(f64) -> String + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let tty = std::io::stderr().is_terminal();
            let started = Instant::now();
            let mut last = Instant::now();
            let mut ticks = 0u64;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let window = last.elapsed().as_secs_f64();
                last = Instant::now();
                ticks += 1;
                let text = line(window);
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(
                        err,
                        "\r\x1b[2K{:>5.0}s {text}",
                        started.elapsed().as_secs_f64()
                    );
                } else if ticks.is_multiple_of(5) {
                    let _ = writeln!(err, "{:>5.0}s {text}", started.elapsed().as_secs_f64());
                }
                let _ = err.flush();
            }
            if tty {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A note on stderr (setup steps), on its own line.
pub fn note(text: impl AsRef<str>) {
    eprintln!("natter-bench: {}", text.as_ref());
}

/// Format a p99 for the progress line.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}ms"),
        Some(v) => format!("{v:.0}ms"),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let recorder = Recorder::default();
        let values: Vec<u64> = (1..=1000).map(|i| i * 10).collect();
        recorder.record_us(&values);
        let p = recorder.summary();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
        assert!(recorder.take_window_p99().is_some());
        assert!(recorder.take_window_p99().is_none());
    }

    #[test]
    fn counters_report_windows() {
        let c = Counter::default();
        c.add(5);
        assert_eq!(c.take_window(), 5);
        c.add(2);
        assert_eq!(c.take_window(), 2);
        assert_eq!(c.get(), 7);
    }
}
