//! `natter user …`: administration that works directly on a node's database (the data
//! directory's SQLite file, or PostgreSQL with `--database`).

use std::io::BufRead;
use std::sync::Arc;

use natter_core::Store;

use crate::config::Config;
use crate::node::{assemble, open_store};

/// A password from the flag, else `NATTER_PASSWORD`, else one line of standard input.
pub fn read_password(flag: Option<String>) -> Result<String, String> {
    if let Some(password) = flag.or_else(|| std::env::var("NATTER_PASSWORD").ok()) {
        return Ok(password);
    }
    eprint!("password: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
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
