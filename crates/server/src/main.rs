//! `natter`: the server (`natter serve`), its administration (`natter user …`) and a terminal
//! client (`natter login`, `natter send`, `natter listen`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use natter_server::config::Config;
use natter_server::{admin, node};

#[derive(Parser)]
#[command(
    name = "natter",
    version,
    about = "Real-time messaging server and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded SQLite and in-process broker by default).
    Serve(ServeArgs),
    /// Manage users directly in a node's database.
    #[command(subcommand)]
    User(UserCommand),
    /// Apply schema migrations to the database (they also run at every start).
    Migrate {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Log in to a server (and register with --register) and remember the session.
    Login {
        username: String,
        #[arg(long, env = "NATTER_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Else NATTER_PASSWORD, else read from standard input.
        #[arg(long)]
        password: Option<String>,
        /// Create the account if it does not exist.
        #[arg(long)]
        register: bool,
        #[arg(long, env = "NATTER_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
    /// Send a text message: to a username (direct chat) or to `#<conversation id>`.
    Send {
        to: String,
        text: String,
        #[arg(long, env = "NATTER_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
    /// Print events as they arrive, resuming from where the last `listen` stopped.
    Listen {
        #[arg(long, env = "NATTER_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
}

/// Where a node's data and settings come from.
#[derive(Args)]
struct DataArgs {
    /// Optional TOML file; flags and NATTER_* variables override it.
    #[arg(long, env = "NATTER_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "NATTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `postgres://…`: the cluster's PostgreSQL database (default: SQLite in the data directory).
    #[arg(long, env = "NATTER_DATABASE")]
    database: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "NATTER_LISTEN")]
    listen: Option<SocketAddr>,
    /// `crash` (default) or `power`.
    #[arg(long, env = "NATTER_DURABILITY")]
    durability: Option<String>,
    /// `nats://…`: fan events out between nodes over NATS (default: in-process).
    #[arg(long, env = "NATTER_BROKER")]
    broker: Option<String>,
    /// This node's name in the cluster (default: `node`); each start adds a suffix of its own.
    #[arg(long, env = "NATTER_NODE_ID")]
    node_id: Option<String>,
    #[arg(long, env = "NATTER_FRAME_BYTES_MAX")]
    frame_bytes_max: Option<usize>,
    #[arg(long, env = "NATTER_MESSAGE_BYTES_MAX")]
    message_bytes_max: Option<usize>,
    #[arg(long, env = "NATTER_OUTBOUND_QUEUE_FRAMES_MAX")]
    outbound_queue_frames_max: Option<usize>,
    #[arg(long, env = "NATTER_SENDS_PER_SECOND")]
    sends_per_second: Option<u32>,
    #[arg(long, env = "NATTER_TYPING_PER_SECOND")]
    typing_per_second: Option<u32>,
    #[arg(long, env = "NATTER_CONNECTIONS_PER_USER_MAX")]
    connections_per_user_max: Option<usize>,
    #[arg(long, env = "NATTER_LOGIN_ATTEMPTS_PER_MINUTE")]
    login_attempts_per_minute: Option<u32>,
    /// 0: the open-file limit minus a margin.
    #[arg(long, env = "NATTER_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    #[arg(long, env = "NATTER_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "NATTER_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    #[arg(long, env = "NATTER_TYPING_TTL_MS")]
    typing_ttl_ms: Option<u64>,
    #[arg(long, env = "NATTER_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        username: String,
        /// Else NATTER_PASSWORD, else read from standard input.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List every user.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Disable a user (their tokens stop working), or enable them again with --enable.
    Disable {
        username: String,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn load_config(data: &DataArgs) -> Result<Config, String> {
    let mut config = match &data.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &data.data_dir {
        config.data_dir = dir.clone();
    }
    if data.database.is_some() {
        config.database = data.database.clone();
    }
    config.validate()?;
    Ok(config)
}

/// The configuration for `natter user …`, which works on a node's existing data: a mistyped
/// `--data-dir` must not quietly create an empty database and a user in it.
fn existing_data(data: &DataArgs) -> Result<Config, String> {
    let config = load_config(data)?;
    if config.database.is_none() && !config.data_dir.exists() {
        return Err(format!(
            "no data directory at {} (`natter serve` creates it; check --data-dir)",
            config.data_dir.display()
        ));
    }
    Ok(config)
}

fn serve_config(args: ServeArgs) -> Result<Config, String> {
    let mut config = load_config(&args.data)?;
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(value) = args.$field {
                config.limits.$field = value;
            }
        )*};
    }
    set!(
        frame_bytes_max,
        message_bytes_max,
        outbound_queue_frames_max,
        sends_per_second,
        typing_per_second,
        connections_per_user_max,
        login_attempts_per_minute,
        connections_max,
        heartbeat_interval_ms,
        idle_timeout_ms,
        typing_ttl_ms,
        shutdown_grace_ms
    );
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(durability) = args.durability {
        config.durability = durability;
    }
    if args.broker.is_some() {
        config.broker = args.broker;
    }
    if args.node_id.is_some() {
        config.node_id = args.node_id;
    }
    config.validate()?;
    Ok(config)
}

fn client_config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(natter_client::cli::default_config_path)
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => node::serve(serve_config(args)?).await,
        Command::User(UserCommand::Create {
            username,
            password,
            display_name,
            data,
        }) => {
            let config = existing_data(&data)?;
            let password = admin::read_password(password)?;
            admin::create_user(config, &username, &password, display_name.as_deref()).await
        }
        Command::Migrate { data } => {
            println!("{}", node::migrate(&load_config(&data)?).await?);
            Ok(())
        }
        Command::User(UserCommand::List { data }) => admin::list_users(existing_data(&data)?).await,
        Command::User(UserCommand::Disable {
            username,
            enable,
            data,
        }) => admin::set_disabled(existing_data(&data)?, &username, !enable).await,
        Command::Login {
            username,
            server,
            password,
            register,
            client_config,
        } => {
            let password = admin::read_password(password)?;
            let path = client_config_path(client_config);
            let session = natter_client::cli::login(&server, &username, &password, register, &path)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "logged in as {} (device {}); session saved in {}",
                session.user.username,
                session.device_id,
                path.display()
            );
            Ok(())
        }
        Command::Send {
            to,
            text,
            client_config,
        } => {
            let ack = natter_client::cli::send(&client_config_path(client_config), &to, &text)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "sent: conversation {} seq {}{}",
                ack.conversation_id,
                ack.seq,
                if ack.duplicate { " (already sent)" } else { "" }
            );
            Ok(())
        }
        Command::Listen { client_config } => {
            natter_client::cli::listen(&client_config_path(client_config))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NATTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("natter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {e}");
            ExitCode::FAILURE
        }
    }
}
