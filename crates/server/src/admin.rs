//! `natter user …`: administration that works directly on a node's database (the data
//! directory's SQLite file, or PostgreSQL with `--database`).

use std::io::BufRead;
use std::sync::Arc;

use natter_core::Store;

use crate::config::Config;
use crate::node::{assemble, open_store};

/// A password from the flag, else `NATTER_PASSWORD`, else one line of standard input (not
/// echoed when it is a terminal). An empty one is refused here, before any server is asked.
pub fn read_password(flag: Option<String>) -> Result<String, String> {
    if let Some(password) = flag.or_else(|| std::env::var("NATTER_PASSWORD").ok()) {
        return Ok(password);
    }
    eprint!("password: ");
    let mut line = String::new();
    {
        let _quiet = EchoOff::on_terminal();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password: {e}"))?;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("no password given (type it, or pass --password or NATTER_PASSWORD)".into());
    }
    Ok(password)
}

/// Standard input's terminal without echo while it lives, so that a typed password does not show;
/// nothing when standard input is no terminal (a pipe, a file).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn on_terminal() -> EchoOff {
        // SAFETY: isatty, tcgetattr and tcsetattr only read or write the termios struct given,
        // which lives on this stack frame, for file descriptor 0.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return EchoOff(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `on_terminal` on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

pub async fn create_user(
    config: Config,
    username: &str,
    password: &str,
    display_name: Option<&str>,
) -> Result<(), String> {
    let store: Arc<dyn Store> = open_store(&config).await?;
    let app = assemble(config, store);
    let user = app
        .core
        .create_user(username, password, display_name)
        .await
        .map_err(|e| e.to_string())?;
    println!("created user {} (id {})", user.username, user.id);
    Ok(())
}

pub async fn list_users(config: Config) -> Result<(), String> {
    let store = open_store(&config).await?;
    let users = store.list_users().await.map_err(|e| e.to_string())?;
    println!(
        "{:>6}  {:<32}  {:<32}  status",
        "id", "username", "display name"
    );
    for record in users {
        println!(
            "{:>6}  {:<32}  {:<32}  {}",
            record.user.id,
            record.user.username,
            record.user.display_name,
            if record.disabled {
                "disabled"
            } else {
                "active"
            }
        );
    }
    Ok(())
}

pub async fn set_disabled(config: Config, username: &str, disabled: bool) -> Result<(), String> {
    let store = open_store(&config).await?;
    let name = natter_core::auth::normalize_username(username).map_err(|e| e.to_string())?;
    store
        .set_user_disabled(&name, disabled)
        .await
        .map_err(|e| e.to_string())?;
    println!("{} {name}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}
