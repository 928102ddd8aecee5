//! One node: open the store, attach the broker and the hub, serve until a signal, stop cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use natter_broker::{InProcessBroker, NatsBroker};
use natter_core::{Broker, Core, CoreConfig, Store};
use natter_store::postgres::redact;
use natter_store::{Durability, PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::gateway::{self, AppState, limits::Limiters};
use crate::metrics::Metrics;
use crate::sessions::{CloseReason, Hub};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "natter.db";

/// Open the node's store: PostgreSQL when `database` is set, else the embedded SQLite database
/// of the data directory.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    if let Some(url) = &config.database {
        let mut postgres = PostgresConfig::new(url.clone());
        postgres.commit_group_max = config.limits.commit_group_max;
        let store = PostgresStore::open(postgres)
            .await
            .map_err(|e| format!("PostgreSQL at {}: {e}", redact(url)))?;
        return Ok(Arc::new(store));
    }
    let mut sqlite = SqliteConfig::new(config.data_dir.join(DATABASE_FILE));
    sqlite.durability = Durability::parse(&config.durability).unwrap_or_default();
    sqlite.commit_group_max = config.limits.commit_group_max;
    Ok(Arc::new(
        SqliteStore::open(sqlite).map_err(|e| e.to_string())?,
    ))
}

/// `natter migrate`: bring the configured database to the newest schema and say which it is.
pub async fn migrate(config: &Config) -> Result<String, String> {
    match &config.database {
        Some(url) => {
            let version = natter_store::postgres::migrate(url)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "PostgreSQL at {}: schema version {version}",
                redact(url)
            ))
        }
        None => {
            // Opening the embedded database applies its migrations.
            open_store(config).await?;
            Ok(format!(
                "SQLite at {}: up to date",
                config.data_dir.join(DATABASE_FILE).display()
            ))
        }
    }
}

fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        message_bytes_max: config.limits.message_bytes_max,
        history_page_max: config.limits.history_page_max,
        sync_page_max: config.limits.sync_page_max,
        group_members_max: config.limits.group_members_max,
        ..CoreConfig::default()
    }
}

/// Build a single node's parts around a store, with the in-process broker.
pub fn assemble(config: Config, store: Arc<dyn Store>) -> Arc<AppState> {
    assemble_with(config, store, Arc::new(InProcessBroker::new()), true)
}

/// Build the node's parts around a store and a broker. `single_node`: events arrive in commit
/// order, so live frames may carry cursors.
pub fn assemble_with(
    config: Config,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    single_node: bool,
) -> Arc<AppState> {
    let metrics = Arc::new(Metrics::new());
    let core = Core::new(
        store,
        broker.clone(),
        core_config(&config),
        Some(metrics.clone()),
    );
    let hub = Arc::new(Hub::new(
        config.node_id.clone().unwrap_or_else(random_node_id),
        broker.clone(),
        metrics.clone(),
        config.limits.typing_ttl_ms,
        single_node,
    ));
    broker.attach(hub.clone());
    core.set_presence_source(hub.clone());
    Arc::new(AppState {
        core,
        hub,
        metrics,
        limiters: Limiters::new(&config.limits),
        connections_max: config.connections_max(),
        connections_admitted: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        config,
    })
}

/// Hold an exclusive lock on the data directory for the life of the process: two servers on
/// one embedded database would each fan out only their own commits.
fn lock_data_dir(config: &Config) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let path = config.data_dir.join("natter.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "the data directory {} is in use by another `natter serve`",
            config.data_dir.display()
        ));
    }
    Ok(file)
}

/// Run `natter serve` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), String> {
    config.validate()?;
    let _lock = if config.database.is_none() {
        Some(lock_data_dir(&config)?)
    } else {
        None
    };
    let store = open_store(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    // One name for this run of the node, in the broker's envelopes, its heartbeats and its
    // presence events. The run's own suffix matters: a node restarted under the same name must
    // not be taken for the one that died, whose users' presence the others must drop.
    let mut config = config;
    let node_id = format!(
        "{}.{:08x}",
        config.node_id.as_deref().unwrap_or("node"),
        rand::random::<u32>()
    );
    config.node_id = Some(node_id.clone());
    let (broker, single_node): (Arc<dyn Broker>, bool) = match &config.broker {
        None => (Arc::new(InProcessBroker::new()), true),
        Some(url) => {
            let broker = NatsBroker::connect(url, &node_id).await?;
            tracing::info!(node_id, url, "cluster broker connected");
            (Arc::new(broker), false)
        }
    };
    let app = assemble_with(config, store, broker.clone(), single_node);

    tokio::spawn(close_refused_devices(app.clone()));
    let janitor = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            janitor.limiters.forget_idle();
            janitor.core.forget_old_touches();
            janitor.hub.forget_old_presence(natter_core::now_ms());
        }
    });

    // The URL goes to stdout: scripts and tests read it to find an ephemeral port.
    println!("natter listening on http://{address} (web app at http://{address}/)");
    tracing::info!(%address, connections_max = app.connections_max, "serving");

    let router = gateway::router(app.clone());
    let shutdown_app = app.clone();
    // Frames are small and latency matters: Nagle's algorithm would hold a frame back until the
    // previous one is acknowledged, which meets delayed ACKs as a 40 ms stall.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        begin_shutdown(&shutdown_app).await;
    })
    .await
    .map_err(|e| format!("server: {e}"))?;
    // Every connection is done and every commit published: the other nodes of a cluster are
    // told that this one leaves, so that they do not take its silence for a crash.
    broker.leave().await;
    tracing::info!("stopped");
    Ok(())
}

fn random_node_id() -> String {
    format!("node.{:08x}", rand::random::<u32>())
}

/// Stop taking connections, ask every client to reconnect elsewhere, and wait (bounded) for the
/// connections to finish what they accepted.
async fn begin_shutdown(app: &Arc<AppState>) {
    tracing::info!("shutting down");
    app.shutting_down.store(true, Ordering::Relaxed);
    app.hub.close_all(CloseReason::Shutdown);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(app.config.limits.shutdown_grace_ms);
    while app.hub.sessions_open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// How often a node looks for connected devices that may no longer connect.
const REFUSED_CHECK: Duration = Duration::from_secs(5);
/// Devices asked about in one store call.
const REFUSED_CHECK_BATCH: usize = 1000;

/// End the connections of devices that `device_by_token` would now refuse: logged out or
/// revoked on another node, or their user disabled by `natter user disable` (another process,
/// which no node hears of). A logout on this node closes its connections at once; this is the
/// bound for the rest.
async fn close_refused_devices(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(REFUSED_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let devices = app.hub.connected_devices();
        for batch in devices.chunks(REFUSED_CHECK_BATCH) {
            match app.core.store().refused_among(batch.to_vec()).await {
                Ok(refused) => {
                    for device in refused {
                        app.hub.close_device(device, CloseReason::Revoked);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking connected devices"),
            }
        }
    }
}
