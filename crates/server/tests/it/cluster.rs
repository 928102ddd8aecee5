//! Cluster mode: three nodes on one PostgreSQL database and one NATS server, all on 127.0.0.1.
//!
//! Each test creates its own database and starts its own `nats-server` on a free port, so that
//! killing and restarting NATS hurts nobody else. A missing PostgreSQL or nats-server is a
//! failure, never a skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use natter_proto::ServerFrame;
use serde_json::json;

use crate::delivery::check_delivery;
use crate::harness::{Raw, Server, temp_dir, text};

/// The PostgreSQL server the tests use; each test creates its own database in it.
fn postgres_base() -> String {
    std::env::var("NATTER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .trim_end_matches("/postgres")
        .to_string()
}

static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

/// A database of its own for one test, dropped at the end.
struct Database {
    name: String,
}

fn psql(sql: &str) {
    let output = Command::new("psql")
        .arg(format!("{}/postgres", postgres_base()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql must be installed for the cluster tests");
    assert!(
        output.status.success(),
        "psql `{sql}` failed (is PostgreSQL running at {}?): {}",
        postgres_base(),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Database {
    fn create() -> Database {
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("natter_it_{}_{n}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name}"));
        psql(&format!("CREATE DATABASE {name}"));
        Database { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", postgres_base(), self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", postgres_base()))
            .args([
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A `nats-server` of the test's own, on a free port.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nats {
    fn start() -> Nats {
        let mut nats = Nats {
            child: None,
            port: free_port(),
            dir: temp_dir("nats"),
        };
        nats.spawn();
        nats
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed for the cluster tests");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(300));
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nodes(database: &Database, nats: &Nats, count: usize) -> Vec<Server> {
    let (database, broker) = (database.url(), nats.url());
    (0..count)
        .map(|i| {
            Server::start(
                &format!("node{i}"),
                &[
                    "--database",
                    &database,
                    "--broker",
                    &broker,
                    "--node-id",
                    &format!("node{i}"),
                    "--sends-per-second",
                    "10000",
                ],
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_different_nodes_chat_and_see_presence_and_typing() {
    let database = Database::create();
    let nats = Nats::start();
    let nodes = start_nodes(&database, &nats, 3);
    let alice = nodes[0].register("alice").await;
    let bob = nodes[1].register("bob").await;
    let carol = nodes[2].register("carol").await;

    let mut b = Raw::connect(&nodes[1], &bob.token).await;
    let mut c = Raw::connect(&nodes[2], &carol.token).await;
    let mut a = Raw::connect(&nodes[0], &alice.token).await;
    let group = a
        .call(json!({"type": "create_group", "title": "across", "member_ids": [bob.user.id, carol.user.id]}))
        .await
        .unwrap();
    let id = group["id"].as_u64().unwrap();
    for device in [&mut b, &mut c] {
        device
            .expect_event(|f| matches!(f, ServerFrame::Conversation { conversation, .. } if conversation.id == id))
            .await;
    }

    a.call(json!({"type": "send", "conversation_id": id, "client_msg_id": "a1", "content": text("from node 0")}))
        .await
        .unwrap();
    for device in [&mut b, &mut c] {
        device
            .expect_event(|f| matches!(f, ServerFrame::Message { message, .. } if message.content.text() == Some("from node 0")))
            .await;
    }
    c.call(json!({"type": "send", "conversation_id": id, "client_msg_id": "c1", "content": text("from node 2")}))
        .await
        .unwrap();
    a.expect_event(|f| matches!(f, ServerFrame::Message { message, .. } if message.content.text() == Some("from node 2")))
        .await;

    b.call(json!({"type": "typing", "conversation_id": id}))
        .await
        .unwrap();
    a.expect_event(|f| matches!(f, ServerFrame::Typing { user_id, .. } if *user_id == bob.user.id))
        .await;
    drop(c);
    a.expect_event(
        |f| matches!(f, ServerFrame::Presence(p) if p.user_id == carol.user.id && !p.online),
    )
    .await;

    // Seq is one order across nodes: the history is 1, 2, 3 whoever sent.
    let history = b
        .call(json!({"type": "history", "conversation_id": id}))
        .await
        .unwrap();
    let seqs: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    // Bob also connects on node 2. Leaving node 1 says nothing to Alice: he is still online.
    let bob_phone = nodes[2].login("bob").await;
    let mut b2 = Raw::connect(&nodes[2], &bob_phone.token).await;
    b2.call(json!({"type": "ping"})).await.unwrap();
    // Node 2's announcement reaches Alice's node on its own path: wait for it, since nothing
    // orders it with what node 1 will say next.
    a.expect_event(
        |f| matches!(f, ServerFrame::Presence(p) if p.user_id == bob.user.id && p.online),
    )
    .await;
    drop(b);
    let bob_offline = |f: &ServerFrame| matches!(f, ServerFrame::Presence(p) if p.user_id == bob.user.id && !p.online);
    assert!(
        !a.sees_within(Duration::from_millis(800), bob_offline).await,
        "Bob is still connected on node 2"
    );
    let presence = a
        .call(json!({"type": "presence", "user_ids": [bob.user.id]}))
        .await
        .unwrap();
    assert_eq!(presence["presence"][0]["online"], json!(true), "{presence}");
    // Leaving node 2 too: now he is offline.
    drop(b2);
    a.expect_event(bob_offline).await;
    let presence = a
        .call(json!({"type": "presence", "user_ids": [bob.user.id]}))
        .await
        .unwrap();
    assert_eq!(
        presence["presence"][0]["online"],
        json!(false),
        "{presence}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_holds_across_node_kills_and_a_nats_restart() {
    let database = Database::create();
    let nats = Nats::start();
    let nodes = start_nodes(&database, &nats, 3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let traffic = Duration::from_secs(16);
    let chaos = async move {
        let (mut nodes, mut nats) = (nodes, nats);
        // Kill node 0, later node 1 (different nodes), and restart NATS once in between.
        for (step, victim) in [Some(0usize), None, Some(1)].into_iter().enumerate() {
            tokio::time::sleep(traffic / 4).await;
            (nodes, nats) = tokio::task::spawn_blocking(move || {
                match victim {
                    Some(i) => {
                        nodes[i].kill();
                        std::thread::sleep(Duration::from_millis(300));
                        nodes[i].restart();
                    }
                    None => nats.restart(),
                }
                (nodes, nats)
            })
            .await
            .unwrap();
            eprintln!("cluster chaos step {step} done");
        }
        tokio::time::sleep(traffic / 4).await;
        (nodes, nats)
    };
    let (report, _keep) = check_delivery(urls, chaos).await;
    eprintln!("delivery checker, three nodes, 2 node kills + NATS restart: {report}");
}
