//! The PostgreSQL store, for a cluster: several natter nodes share one database.
//!
//! Reads go to a connection pool. Writes go, as in the SQLite engine, to ONE writer task per node
//! that takes every waiting job (up to `commit_group_max`) and runs them in ONE transaction, each
//! job in a savepoint so that one failure does not undo the others; it commits once, hands the
//! group's events to the commit listener in order, and only then answers: an answer is a durable
//! commit (D1). If the commit fails or the connection is lost, every job of the group gets an
//! error (never an ack) and the writer continues on a fresh connection.
//!
//! # Why `head` is safe with many writers
//!
//! The change stream's positions (`pos`) are handed out from one counter, `meta.pos`. A group's
//! transaction (READ COMMITTED) begins with `SELECT pg_advisory_xact_lock(WRITE_LOCK)`, and only
//! then, in a later statement and so with a newer snapshot, reads `meta.pos`. The group's changes
//! take the positions after it, in memory (like `WriteCtx::take_pos` in SQLite), and the group
//! writes the last one back to `meta.pos` just before its COMMIT. The lock is transaction-scoped:
//! PostgreSQL releases it only after the commit (or rollback) is complete and visible. So:
//!
//! - Every writer of every node holds the same lock from reading `meta.pos` until its commit:
//!   groups are serialized, each sees everything committed before it (its snapshot is taken after
//!   the previous holder's commit became visible), and positions are never handed out twice.
//! - Positions therefore become visible in commit order: when `meta.pos = P` is committed, every
//!   change at a position `<= P` belongs to that transaction or to one that committed before it.
//! - `head()` is simply `SELECT value FROM meta WHERE key = 'pos'`: it reads a committed value,
//!   so every change at or below it is committed, and any statement that starts after that read
//!   sees all of them.
//! - A group that fails never updates `meta.pos`; its positions are handed out again by the next
//!   group, and nothing of it was acknowledged.
//!
//! An error does not prove that nothing was committed: when the connection is lost during the
//! COMMIT itself, the group may have committed without the writer learning it. Its jobs get an
//! error all the same (never an ack without a known commit), its events do not reach the listener
//! (sync catches up from the change stream), and a resend is acknowledged as a duplicate (D3).
//!
//! The same lock and the unique indexes give the cross-node guarantees: a resent
//! `client_msg_id` is found by whichever node runs it next (D3), a direct conversation exists
//! once per pair, and `seq` stays gap-free per conversation.
//!
//! Numbers: the domain's `u64` (ids, `seq`, `pos`, times) are stored as `BIGINT`. Stored values
//! never exceed `i64::MAX`; a bound given by a caller above it is clamped (it matches nothing
//! more), a value to store above it is refused.

mod reads;
mod schema;
#[cfg(test)]
pub(crate) mod tests;
mod traits;
mod writer;
mod writes;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use natter_core::store::CommitListener;
use natter_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use writer::{Job, Reply};

pub use schema::VERSION as SCHEMA_VERSION;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq-style connection string: `postgres://user:password@host:port/database` or
    /// `host=… user=… dbname=…`. TLS is not supported.
    pub url: String,
    /// Read connections; the writer keeps one more of its own.
    pub pool_size: usize,
    /// Most jobs in one commit group.
    pub commit_group_max: usize,
    /// Most jobs waiting for the writer; senders wait beyond it.
    pub write_queue_max: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long a read waits for a free pooled connection before it fails.
    pub pool_wait_timeout: Duration,
    /// Longest a statement, a lock wait or an idle transaction may last on the server
    /// (`statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`); zero: none.
    /// It bounds how long a stuck node can hold the cluster's write lock.
    pub query_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_size: 8,
            commit_group_max: 512,
            write_queue_max: 4096,
            connect_timeout: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("commit_group_max", &self.commit_group_max)
            .field("write_queue_max", &self.write_queue_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

/// The connection string without its password, for logs.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_string();
    }
    // key=value form: hide the value of `password`.
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The PostgreSQL implementation of `natter_core::Store`.
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    pool: Pool,
    listener: Arc<OnceLock<CommitListener>>,
}

/// An error with its causes: `tokio_postgres` keeps the server's message in the source.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A database failure: the details go to the log, the caller gets `internal`.
pub(crate) fn db_error(e: tokio_postgres::Error) -> Error {
    tracing::error!(error = %describe(&e), "postgres");
    Error::internal("storage error")
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    tracing::error!(error = %describe(&e), "postgres pool");
    Error::internal("storage unavailable")
}

/// A `u64` as a `BIGINT` bound: values past `i64::MAX` clamp to it, which nothing stored exceeds.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `u64` to store as a `BIGINT`.
pub(crate) fn stored(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("{what} is out of range")))
}

fn pg_config(config: &PostgresConfig) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
        Error::internal(format!(
            "invalid PostgreSQL url `{}`: {}",
            redact(&config.url),
            describe(&e)
        ))
    })?;
    if pg.get_application_name().is_none() {
        pg.application_name("natter");
    }
    if !config.connect_timeout.is_zero() {
        pg.connect_timeout(config.connect_timeout);
    }
    let ms = config.query_timeout.as_millis();
    if ms > 0 {
        let timeouts = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
        );
        let options = match pg.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {timeouts}"),
            _ => timeouts,
        };
        pg.options(&options);
    }
    Ok(pg)
}

fn build_pool(config: &PostgresConfig, pg: tokio_postgres::Config, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let some = |d: Duration| (!d.is_zero()).then_some(d);
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(some(config.pool_wait_timeout))
        .create_timeout(some(config.connect_timeout))
        .recycle_timeout(some(config.connect_timeout))
        .build()
        .map_err(|e| Error::internal(format!("cannot build the PostgreSQL pool: {e}")))
}

/// Bring the database at `url` to the newest schema (what `natter migrate` runs); returns the
/// schema version. Safe to run from several nodes at once.
pub async fn migrate(url: &str) -> Result<u32> {
    let pg: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::internal(format!(
            "invalid PostgreSQL url `{}`: {}",
            redact(url),
            describe(&e)
        ))
    })?;
    migrate_with(&pg).await
}

/// Migrate on a connection of its own: closing it releases the migration lock whatever happens.
async fn migrate_with(pg: &tokio_postgres::Config) -> Result<u32> {
    let (mut client, connection) = pg.connect(NoTls).await.map_err(db_error)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "postgres migration connection");
        }
    });
    let migrated = schema::migrate(&mut client).await;
    drop(client);
    let _ = task.await;
    migrated
}

impl PostgresStore {
    /// Connect to `config.url`, migrate the schema if needed, and start this node's writer.
    /// Must be called within a Tokio runtime.
    pub async fn open(config: PostgresConfig) -> Result<PostgresStore> {
        let pg = pg_config(&config)?;
        migrate_with(&pg).await?;
        let pool = build_pool(&config, pg.clone(), config.pool_size.max(1))?;
        // Fail now, not at the first request, when the database cannot be reached.
        let conn = pool.get().await.map_err(pool_error)?;
        drop(conn);
        let writer_pool = build_pool(&config, pg, 1)?;
        let listener: Arc<OnceLock<CommitListener>> = Arc::new(OnceLock::new());
        let (jobs, queue) = mpsc::channel(config.write_queue_max.max(1));
        tokio::spawn(writer::run(
            writer_pool,
            queue,
            listener.clone(),
            config.commit_group_max.max(1),
        ));
        tracing::info!(url = %redact(&config.url), "opened the PostgreSQL store");
        Ok(PostgresStore {
            jobs,
            pool,
            listener,
        })
    }

    /// Run `op` in the writer's next commit group; resolves after the commit.
    async fn write<T, J: Into<Job>>(&self, job: impl FnOnce(Reply<T>) -> J) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply).into())
            .await
            .map_err(|_| Error::internal("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("the writer dropped a job"))?
    }

    /// A pooled connection for reads.
    async fn conn(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_error)
    }
}
