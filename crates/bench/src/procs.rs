//! Processes around the bench: the servers it starts (Natter, Socket.IO, NATS), the PostgreSQL
//! databases it creates for cluster runs, what /proc says about them, the loopback-only rule,
//! and cleaning up however the bench ends.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Process groups the bench started; killed on every way out.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Temporary directories to remove on the way out.
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// PostgreSQL databases the bench created (server URL, name), dropped on the way out.
static DATABASES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) on a process group we created; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Stop every process group the bench started (SIGTERM, then SIGKILL) and remove temp dirs.
pub fn cleanup() {
    let groups: Vec<i32> = CHILDREN
        .lock()
        .map(|mut c| c.drain(..).collect())
        .unwrap_or_default();
    for pgid in &groups {
        signal_group(*pgid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while groups.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pgid in &groups {
        signal_group(*pgid, libc::SIGKILL);
    }
    // After the nodes are gone, so that nothing reconnects to a database being dropped.
    let databases: Vec<(String, String)> = DATABASES
        .lock()
        .map(|mut d| d.drain(..).collect())
        .unwrap_or_default();
    for (server, name) in databases {
        if let Err(e) = drop_database(&server, &name) {
            eprintln!("natter-bench: could not drop the database {name}: {e}");
        }
    }
    let dirs: Vec<PathBuf> = TEMP_DIRS
        .lock()
        .map(|mut d| d.drain(..).collect())
        .unwrap_or_default();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh temporary directory, removed by [`cleanup`] unless `keep`.
pub fn temp_dir(label: &str, keep: bool) -> std::io::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("natter-bench-{}-{label}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if !keep && let Ok(mut dirs) = TEMP_DIRS.lock() {
        dirs.push(dir.clone());
    }
    Ok(dir)
}

/// Resolve `host:port` and refuse anything that is not a loopback address.
pub fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    let first = resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    if resolved.iter().any(|a| !a.ip().is_loopback()) || !first.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: natter-bench only targets this machine (127.0.0.0/8, ::1)"
        ));
    }
    Ok(first)
}

/// `http://127.0.0.1:8080/...` → `127.0.0.1:8080`, loopback only.
pub fn url_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .or_else(|| url.strip_prefix("nats://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    loopback(hostport)
}

/// A server process the bench started.
pub struct Server {
    pub pid: i32,
    pub addr: SocketAddr,
    pub child: Option<Child>,
    pub dir: Option<PathBuf>,
}

impl Server {
    /// Stop it now (SIGTERM to its group, SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() >= deadline => {
                        signal_group(pgid, libc::SIGKILL);
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            if let Ok(mut groups) = CHILDREN.lock() {
                groups.retain(|g| *g != pgid);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Start a process in its own process group and wait for the stdout line that starts with
/// `ready_prefix`; the line's `http://`/`nats://` URL gives the address, and ` pid N` (if
/// present) the real server's pid.
pub fn start(
    name: &str,
    mut command: Command,
    ready_prefix: &str,
    log: &Path,
    timeout: Duration,
) -> Result<Server, String> {
    use std::os::unix::process::CommandExt;
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let pid = child.id() as i32;
    if let Ok(mut groups) = CHILDREN.lock() {
        groups.push(pid);
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                // Keep draining so that the server never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut server = Server {
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        child: Some(child),
        dir: None,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{name} did not announce itself within {timeout:?}; see {}",
                log.display()
            ));
        }
        match lines_rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) if line.starts_with(ready_prefix) => {
                let url = line
                    .split_whitespace()
                    .find(|w| w.contains("://"))
                    .ok_or_else(|| format!("{name}: no URL in `{line}`"))?;
                server.addr = url_addr(url)?;
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "pid")
                    && let Some(p) = words.get(i + 1).and_then(|p| p.parse().ok())
                {
                    server.pid = p;
                }
                return Ok(server);
            }
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(child) = server.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "{name} exited ({status}) before it was ready; see {}",
                        log.display()
                    ));
                }
            }
            Err(_) => {
                return Err(format!(
                    "{name} closed its output before it was ready; see {}",
                    log.display()
                ));
            }
        }
    }
}

/// How the bench starts a Natter node.
#[derive(Clone)]
pub struct NatterLaunch {
    pub bin: PathBuf,
    pub extra: Vec<String>,
    pub keep: bool,
}

/// Where a Natter node keeps its data.
pub enum Storage<'a> {
    /// The embedded SQLite database of this data directory (which also holds the node's log).
    Sqlite { data_dir: &'a Path },
    /// A cluster node: PostgreSQL for storage, NATS for fan-out; `log_dir` holds its log.
    Cluster {
        database: &'a str,
        broker: &'a str,
        node_id: &'a str,
        log_dir: &'a Path,
    },
}

/// Start `natter serve` on a free loopback port, in its default durable mode, with the bench's
/// limits raised (rates, logins, per-user connections) — the same for a SQLite node and a
/// cluster node.
pub fn start_natter(
    launch: &NatterLaunch,
    storage: &Storage,
    connections_per_user: usize,
) -> Result<Server, String> {
    if !launch.bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p natter-server --bin natter`, or pass --server-bin",
            launch.bin.display()
        ));
    }
    let mut command = Command::new(&launch.bin);
    command.arg("serve").args(["--listen", "127.0.0.1:0"]);
    let dir = match storage {
        Storage::Sqlite { data_dir } => {
            command.arg("--data-dir").arg(data_dir);
            data_dir
        }
        Storage::Cluster {
            database,
            broker,
            node_id,
            log_dir,
        } => {
            command
                .args(["--database", database])
                .args(["--broker", broker])
                .args(["--node-id", node_id]);
            log_dir
        }
    };
    command
        .args(["--sends-per-second", "1000000"])
        .args(["--login-attempts-per-minute", "1000000"])
        .args([
            "--connections-per-user-max",
            &connections_per_user.max(16).to_string(),
        ])
        .args(&launch.extra);
    let log = dir.join("natter.log");
    let mut server = start(
        "natter",
        command,
        "natter listening on",
        &log,
        Duration::from_secs(30),
    )?;
    server.dir = Some(dir.to_path_buf());
    Ok(server)
}

/// Run a short command to its end, killed past `timeout`.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<std::process::Output, String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.map_err(|e| e.to_string()),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

/// Run one SQL statement with `psql` on the `postgres` database of `server`; its output.
pub fn psql(server: &str, sql: &str) -> Result<String, String> {
    let mut command = Command::new("psql");
    command.arg(format!("{server}/postgres")).args([
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
        "-A",
        "-t",
        "-c",
        sql,
    ]);
    let output = run_bounded(command, Duration::from_secs(30))
        .map_err(|e| format!("psql (is it installed?): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "psql `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `postgres://user@127.0.0.1:5432[/db]` → the server part, loopback only.
pub fn postgres_server(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{url}: not a postgres:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    loopback(&hostport)?;
    Ok(format!("postgres://{authority}"))
}

/// A database the bench created on a PostgreSQL server: dropped when this is dropped (unless
/// kept), and by [`cleanup`] on every other way out.
pub struct Database {
    pub server: String,
    pub name: String,
    keep: bool,
}

impl Database {
    /// Create `natter_bench_<pid>_<unix seconds>` (a name no other run uses).
    pub fn create(server: &str, keep: bool) -> Result<Database, String> {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("natter_bench_{}_{unix}_{n}", std::process::id());
        // Registered first: a create that times out may still have happened.
        if !keep && let Ok(mut databases) = DATABASES.lock() {
            databases.push((server.to_string(), name.clone()));
        }
        psql(server, &format!("CREATE DATABASE {name}"))?;
        Ok(Database {
            server: server.to_string(),
            name,
            keep,
        })
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Process ids of the server processes (backends) connected to this database now.
    pub fn backend_pids(&self) -> Vec<i32> {
        psql(
            &self.server,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ),
        )
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Ok(mut databases) = DATABASES.lock() {
            databases.retain(|(_, n)| *n != self.name);
        }
        if let Err(e) = drop_database(&self.server, &self.name) {
            eprintln!(
                "natter-bench: could not drop the database {}: {e}",
                self.name
            );
        }
    }
}

fn drop_database(server: &str, name: &str) -> Result<(), String> {
    psql(
        server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .map(|_| ())
}

/// A free TCP port on 127.0.0.1 (for peers that want one on their command line).
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Start the Socket.IO peer (`bench/peers/socketio/start.sh`).
pub fn start_socketio(peers_dir: &Path, keep: bool) -> Result<Server, String> {
    let dir = temp_dir("socketio", keep).map_err(|e| e.to_string())?;
    let mut command = Command::new("bash");
    command.arg(peers_dir.join("socketio/start.sh")).arg("0");
    start(
        "socketio",
        command,
        "socketio listening on",
        &dir.join("socketio.log"),
        Duration::from_secs(120),
    )
}

/// Start nats-server with JetStream on file storage (`bench/peers/nats/start.sh`).
pub fn start_nats(peers_dir: &Path, keep: bool) -> Result<Server, String> {
    let dir = temp_dir("nats", keep).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let mut command = Command::new("bash");
    command
        .arg(peers_dir.join("nats/start.sh"))
        .arg(port.to_string())
        .arg(&dir);
    let mut server = start(
        "nats",
        command,
        "nats listening on",
        &dir.join("start.log"),
        Duration::from_secs(30),
    )?;
    server.dir = Some(dir);
    Ok(server)
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's CPU time from a starting point: the bench's own share of the cores.
pub struct OwnCpu(Option<f64>);

impl OwnCpu {
    pub fn start() -> OwnCpu {
        OwnCpu(cpu_seconds(std::process::id() as i32))
    }

    /// Seconds of CPU since `start`, when /proc could be read both times.
    pub fn since(&self) -> Option<f64> {
        cpu_seconds(std::process::id() as i32)
            .zip(self.0)
            .map(|(now, then)| now - then)
    }
}

/// CPU time (user + system) of a process, in seconds.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / ticks)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Raise this process's soft open-file limit to its hard limit; returns the soft limit now.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// What the bench knows of the machine it runs on, for the JSON report.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpus": cpus,
        "cpu_model": model,
        "memory_kib": memory_kib,
        "load_average": load,
        "open_files_max": raise_nofile(),
    })
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(url_addr("http://127.0.0.1:8080").is_ok());
        assert!(url_addr("http://localhost:8080/v1").is_ok());
        assert!(url_addr("127.0.0.9:1").is_ok());
        assert!(url_addr("http://10.0.0.1:8080").is_err());
        assert!(url_addr("http://192.168.1.2:80").is_err());
        assert!(url_addr("8.8.8.8:53").is_err());
        assert_eq!(
            postgres_server("postgres://postgres@127.0.0.1:5432").unwrap(),
            "postgres://postgres@127.0.0.1:5432"
        );
        assert_eq!(
            postgres_server("postgresql://u:p@localhost/db").unwrap(),
            "postgres://u:p@localhost"
        );
        assert!(postgres_server("postgres://postgres@10.1.2.3:5432").is_err());
        assert!(postgres_server("mysql://127.0.0.1").is_err());
    }

    #[test]
    fn this_process_has_memory_and_cpu_in_proc() {
        let pid = std::process::id() as i32;
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).is_some());
    }
}
