//! Settings of `natter serve`: defaults, then the TOML file, then `NATTER_*` variables, then flags.
//!
//! Every limit is a named setting with its unit in its name; `docs/configuration.md` lists them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded database lives.
    pub data_dir: PathBuf,
    /// `crash` (survives kill -9) or `power` (also survives a power cut: fsync per commit group).
    pub durability: String,
    /// `postgres://…` to share a PostgreSQL database with other nodes; absent: embedded SQLite
    /// in `data_dir`.
    pub database: Option<String>,
    /// `nats://…` to fan events out to other nodes over NATS; absent: in-process (one node).
    pub broker: Option<String>,
    /// This node's name in the cluster (logs, NATS); absent: a random one at each start.
    pub node_id: Option<String>,
    pub limits: Limits,
}

/// Every bound the server enforces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame or REST body a client may send.
    pub frame_bytes_max: usize,
    /// Largest text of one message.
    pub message_bytes_max: usize,
    /// Frames waiting to be written to one connection; past it the reader is too slow and is
    /// disconnected (it comes back by sync).
    pub outbound_queue_frames_max: usize,
    /// Sustained sends per user per second (a burst of twice as many is allowed).
    pub sends_per_second: u32,
    /// Typing notifications per user per second.
    pub typing_per_second: u32,
    /// Open WebSocket connections per user.
    pub connections_per_user_max: usize,
    /// Login and register attempts per client IP address per minute.
    pub login_attempts_per_minute: u32,
    /// Open WebSocket connections per process; 0 means "the open-file limit minus a margin".
    pub connections_max: usize,
    pub history_page_max: u32,
    pub sync_page_max: u32,
    pub group_members_max: usize,
    /// How often the server pings an idle connection.
    pub heartbeat_interval_ms: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout_ms: u64,
    /// How long a typing indicator lasts unless renewed.
    pub typing_ttl_ms: u64,
    /// A write to a client that takes longer than this closes the connection.
    pub write_timeout_ms: u64,
    /// On SIGTERM, how long to wait for connections to finish.
    pub shutdown_grace_ms: u64,
    /// Most writes in one commit group (SQLite or PostgreSQL).
    pub commit_group_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./natter-data"),
            durability: "crash".into(),
            database: None,
            broker: None,
            node_id: None,
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: 64 * 1024,
            message_bytes_max: 16 * 1024,
            outbound_queue_frames_max: 1024,
            sends_per_second: 50,
            typing_per_second: 2,
            connections_per_user_max: 16,
            login_attempts_per_minute: 20,
            connections_max: 0,
            history_page_max: 200,
            sync_page_max: 500,
            group_members_max: 1000,
            heartbeat_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            typing_ttl_ms: 6_000,
            write_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            commit_group_max: 512,
        }
    }
}

/// File descriptors kept free for the database, the listener and answering refusals.
const FILE_DESCRIPTORS_RESERVED: usize = 500;

impl Config {
    /// Read a TOML file; unknown keys are an error, so that a typo does not pass silently.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Check values that a type cannot.
    pub fn validate(&self) -> Result<(), String> {
        if natter_store::Durability::parse(&self.durability).is_none() {
            return Err(format!(
                "durability must be `crash` or `power`, not `{}`",
                self.durability
            ));
        }
        if let Some(url) = &self.database
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(format!("database must be a postgres:// URL, not `{url}`"));
        }
        if let Some(url) = &self.broker
            && !url.starts_with("nats://")
        {
            return Err(format!("broker must be a nats:// URL, not `{url}`"));
        }
        let l = &self.limits;
        if l.message_bytes_max >= l.frame_bytes_max {
            return Err("message_bytes_max must be below frame_bytes_max".into());
        }
        if l.outbound_queue_frames_max < 16 {
            return Err("outbound_queue_frames_max must be at least 16".into());
        }
        if l.sends_per_second == 0 || l.typing_per_second == 0 || l.login_attempts_per_minute == 0 {
            return Err("rates must be above zero".into());
        }
        if l.history_page_max == 0
            || l.sync_page_max == 0
            || l.connections_per_user_max == 0
            || l.commit_group_max == 0
            || l.group_members_max < 2
        {
            return Err(
                "history_page_max, sync_page_max, connections_per_user_max and commit_group_max \
                 must be at least 1, group_members_max at least 2"
                    .into(),
            );
        }
        if l.heartbeat_interval_ms == 0 {
            return Err("heartbeat_interval_ms must be above zero".into());
        }
        if l.idle_timeout_ms <= l.heartbeat_interval_ms {
            return Err("idle_timeout_ms must exceed heartbeat_interval_ms".into());
        }
        Ok(())
    }

    /// The effective connection limit: the setting, or the open-file limit minus a margin.
    pub fn connections_max(&self) -> usize {
        if self.limits.connections_max > 0 {
            return self.limits.connections_max;
        }
        open_files_max()
            .saturating_sub(FILE_DESCRIPTORS_RESERVED)
            .max(16)
    }
}

/// The soft limit on open files of this process.
pub fn open_files_max() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return 1024 * 1024;
    }
    limit.rlim_cur as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_settings_override_defaults_and_typos_are_errors() {
        let config: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nsends_per_second = 5\n")
                .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.sends_per_second, 5);
        assert_eq!(
            config.limits.frame_bytes_max,
            Limits::default().frame_bytes_max
        );
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn the_connection_limit_leaves_room_below_the_open_file_limit() {
        let config = Config::default();
        assert!(config.connections_max() < open_files_max());
    }

    #[test]
    fn bad_durability_is_refused() {
        let config = Config {
            durability: "maybe".into(),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn heartbeats_are_checked_each_with_its_own_reason() {
        let mut config = Config::default();
        config.limits.heartbeat_interval_ms = 0;
        assert_eq!(
            config.validate(),
            Err("heartbeat_interval_ms must be above zero".to_string())
        );
        config.limits.heartbeat_interval_ms = config.limits.idle_timeout_ms;
        assert_eq!(
            config.validate(),
            Err("idle_timeout_ms must exceed heartbeat_interval_ms".to_string())
        );
    }
}
