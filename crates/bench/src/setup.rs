//! Setting a Natter node up through its REST API: users (argon2 on the server: slow on purpose,
//! so the bench registers few users and opens many connections per token), direct conversations
//! and groups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use natter_proto::{LoginResponse, RegisterRequest};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::stats::{Progress, note};
use crate::wire::{self, Rng};

/// A registered user and the token of its first device (shared by all its connections).
#[derive(Debug, Clone)]
pub struct Account {
    pub id: u64,
    pub token: String,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

/// A prefix that makes this run's usernames unique on a long-lived server.
pub fn run_prefix() -> String {
    format!("nb{:08x}", Rng::seeded().next() as u32)
}

async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..5u64 {
        match wire::http_request(addr, "POST", path, token, Some(body)).await {
            Ok((status, text)) if (200..300).contains(&status) => return Ok(text),
            Ok((status, text)) if status == 429 || status >= 500 => {
                last = format!("HTTP {status}: {text}");
            }
            Ok((status, text)) => return Err(format!("POST {path}: HTTP {status}: {text}")),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(format!("POST {path}: {last}"))
}

/// Register `count` users `<prefix>-<i>`, user `i` on node `i mod len` (any node of a cluster
/// can register anyone; spreading the argon2 hashes spreads their cost), `concurrency` at a time
/// per node.
pub async fn register(
    addrs: &[SocketAddr],
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Account>, String> {
    if addrs.is_empty() {
        return Err("no node to register users on".into());
    }
    let done = Arc::new(AtomicU64::new(0));
    let shown = done.clone();
    let total = count;
    let _progress = Progress::start(move |_| {
        format!(
            "registering users: {}/{total}",
            shown.load(Ordering::Relaxed)
        )
    });
    let started = std::time::Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1) * addrs.len()));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let addr = addrs[i % addrs.len()];
        let permits = permits.clone();
        let done = done.clone();
        let username = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let body = serde_json::to_string(&RegisterRequest {
                username,
                password: "natter-bench-password".into(),
                display_name: None,
                device_name: Some("bench".into()),
            })
            .map_err(|e| e.to_string())?;
            let text = post(addr, "/v1/register", None, &body).await?;
            let response: LoginResponse =
                serde_json::from_str(&text).map_err(|e| format!("register: {e}: {text}"))?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, String>(Account {
                id: response.user.id,
                token: response.token,
            })
        }));
    }
    let mut accounts = Vec::with_capacity(count);
    for task in tasks {
        accounts.push(task.await.map_err(|e| e.to_string())??);
    }
    note(format!(
        "registered {count} users in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(accounts)
}

/// A direct conversation between `a` and `b` (created by `a`).
pub async fn direct(addr: SocketAddr, a: &Account, b: &Account) -> Result<u64, String> {
    let body = format!("{{\"kind\":\"direct\",\"user_id\":{}}}", b.id);
    let text = post(addr, "/v1/conversations", Some(&a.token), &body).await?;
    let c: IdOnly = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok(c.id)
}

/// A group owned by `owner` with `members` (the owner is a member by creation).
pub async fn group(
    addr: SocketAddr,
    owner: &Account,
    title: &str,
    members: &[u64],
) -> Result<u64, String> {
    let body =
        serde_json::json!({"kind": "group", "title": title, "member_ids": members}).to_string();
    let text = post(addr, "/v1/conversations", Some(&owner.token), &body).await?;
    let c: IdOnly = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok(c.id)
}

/// Run setup calls `concurrency` at a time, in order of the results.
pub async fn all<T, F>(calls: Vec<F>, concurrency: usize) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(calls.len());
    for call in calls {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            call.await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}
