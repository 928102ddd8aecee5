//! The process: health, metrics, limits on connections, slow readers, and a clean shutdown.

use std::time::Duration;

use natter_proto::{ServerFrame, close_code};
use serde_json::json;

use crate::harness::{Raw, Server, http_get, text};

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let server = Server::start("health", &[]);
    assert_eq!(http_get(server.port, "/healthz").await.0, 200);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let direct = a
        .call(json!({"type": "create_direct", "user_id": bob.user.id}))
        .await
        .unwrap();
    a.call(json!({"type": "send", "conversation_id": direct["id"], "client_msg_id": "m", "content": text("hi")}))
        .await
        .unwrap();
    // The ack goes out before the commit listener counts the commit (the
    // client should not wait on bookkeeping), so the counters catch up a
    // moment later: poll for them, within a bound.
    let expected = [
        "natter_connections_open 1",
        "natter_messages_committed_total 1",
        "natter_send_ack_seconds_count 1",
        "natter_store_commit_seconds_count",
        "natter_slow_reader_disconnects_total 0",
        // The embedded store's write-ahead log: some frames, not restarted yet.
        "natter_store_log_frames ",
        "natter_store_log_restarts_total 0",
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.metrics().await;
        if expected.iter().all(|line| metrics.contains(line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in expected {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let (status, openapi) = http_get(server.port, "/v1/openapi.json").await;
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    assert!(openapi["paths"]["/v1/sync"].is_object());
}

#[tokio::test]
async fn connections_past_the_limit_get_503_while_the_others_keep_working() {
    let server = Server::start("full", &["--connections-max", "2"]);
    let alice = server.register("alice").await;
    let mut first = Raw::connect(&server, &alice.token).await;
    let _second = Raw::connect(&server, &alice.token).await;
    let result = tokio_tungstenite::connect_async(server.ws_url(&alice.token)).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = result else {
        panic!("expected 503, got {result:?}");
    };
    assert_eq!(response.status().as_u16(), 503);
    first.call(json!({"type": "ping"})).await.unwrap();
    assert!(
        server
            .metrics()
            .await
            .contains("natter_connections_refused_total 1")
    );
}

#[tokio::test]
async fn sigterm_asks_clients_to_reconnect_and_exits_cleanly() {
    let mut server = Server::start("sigterm", &[]);
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    a.call(json!({"type": "ping"})).await.unwrap();
    let status = {
        let terminate = tokio::task::spawn_blocking(move || {
            let status = server.terminate();
            (server, status)
        });
        let frame = a
            .expect_event(|f| matches!(f, ServerFrame::Reconnect { .. }))
            .await;
        assert!(matches!(frame, ServerFrame::Reconnect { .. }));
        assert_eq!(a.close_code().await, Some(close_code::SERVICE_RESTART));
        terminate.await.unwrap().1
    };
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sends_under_way_at_sigterm_are_answered_before_the_close() {
    let mut server = Server::start("sigterm-pipelined", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let id = a.create_direct(bob.user.id).await;
    // Many sends in flight, then SIGTERM while they commit.
    for k in 0..300 {
        a.command(json!({"type": "send", "conversation_id": id, "client_msg_id": format!("s-{k}"), "content": text("x")}))
            .await;
    }
    let terminate = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    let mut acked = std::collections::BTreeSet::new();
    loop {
        match a.next_frame().await {
            ServerFrame::Result { data, .. } => {
                acked.insert(data["seq"].as_u64().unwrap());
            }
            ServerFrame::Reconnect { .. } => break,
            _ => {}
        }
    }
    let (mut server, status) = terminate.await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    // Whatever was stored was answered first: the client has nothing it must resend blindly.
    server.restart();
    let mut b = Raw::connect(&server, &bob.token).await;
    let history = b
        .call(json!({"type": "history", "conversation_id": id, "limit": 200, "after": 0}))
        .await
        .unwrap();
    let mut stored: std::collections::BTreeSet<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    if history["more"] == json!(true) {
        let rest = b
            .call(json!({"type": "history", "conversation_id": id, "limit": 200, "after": 200}))
            .await
            .unwrap();
        stored.extend(
            rest["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap()),
        );
    }
    assert_eq!(
        stored, acked,
        "every stored message was acknowledged before the close"
    );
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_and_others_are_not_held_up() {
    let server = Server::start(
        "slow",
        &[
            "--outbound-queue-frames-max",
            "16",
            "--sends-per-second",
            "100000",
        ],
    );
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let id = a.create_direct(bob.user.id).await;
    // Bob's laptop connects and never reads again; his phone reads everything.
    let _stalled = Raw::connect(&server, &bob.token).await;
    let mut phone = Raw::connect(&server, &bob_phone.token).await;
    let body = "z".repeat(15_000);
    let mut disconnected = false;
    for i in 0..600 {
        a.call(json!({"type": "send", "conversation_id": id, "client_msg_id": format!("s{i}"), "content": text(&body)}))
            .await
            .unwrap();
        phone
            .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
            .await;
        if i % 50 == 49
            && server
                .metrics()
                .await
                .contains("natter_slow_reader_disconnects_total 1")
        {
            disconnected = true;
            break;
        }
    }
    assert!(disconnected, "the stalled reader was never disconnected");
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.call(json!({"type": "ping"})).await.unwrap();
}

#[tokio::test]
async fn running_out_of_file_descriptors_neither_kills_nor_spins_the_server() {
    // 128 descriptors, and a connection limit that will not stop the flood first.
    let server = Server::start_with_open_files_max("emfile", &["--connections-max", "1000"], 128);
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;

    let mut flood = Vec::new();
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    // The kernel accepted them into the backlog; the server cannot take them all. It must go on
    // serving the connections it has.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.call(json!({"type": "ping"})).await.unwrap();

    drop(flood);
    // Once descriptors are free again, new connections are served (the accept loop retries).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = crate::harness::http_get(server.port, "/healthz").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut again = Raw::connect(&server, &alice.token).await;
    again.call(json!({"type": "ping"})).await.unwrap();
}

#[tokio::test]
async fn admin_commands_work_on_the_data_directory_of_a_running_server() {
    let server = Server::start("admin", &[]);
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
            .args(args)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .env("NATTER_PASSWORD", "password-1")
            .env("NATTER_LOG", "warn")
            .output()
            .expect("run natter");
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(run(&["user", "create", "bob", "--display-name", "Bob"]).contains("created user bob"));
    let bob = server.login("bob").await;
    let direct = a
        .call(json!({"type": "create_direct", "user_id": bob.user.id}))
        .await
        .unwrap();
    let first = a
        .call(json!({"type": "send", "conversation_id": direct["id"], "client_msg_id": "1", "content": text("hi")}))
        .await
        .unwrap();
    // Another process wrote to the database; positions must still only go up.
    assert!(run(&["user", "list"]).contains("Bob"));
    run(&["user", "disable", "bob"]);
    run(&["user", "disable", "bob", "--enable"]);
    let second = a
        .call(json!({"type": "send", "conversation_id": direct["id"], "client_msg_id": "2", "content": text("again")}))
        .await
        .unwrap();
    assert!(second["pos"].as_u64() > first["pos"].as_u64());
    // A second server on the same data directory is refused.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .expect("run natter");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}

/// Logging out, over the socket or over REST, ends every connection of the device with 4001
/// (the one that asked after its reply), and the token opens nothing after it. Another device
/// of the same user stays connected.
#[tokio::test]
async fn logout_closes_every_connection_of_the_device() {
    let server = Server::start("logout", &[]);
    let alice = server.register("alice").await;
    let other_device = server.login("alice").await;
    let mut other = Raw::connect(&server, &other_device.token).await;

    let mut first = Raw::connect(&server, &alice.token).await;
    let mut second = Raw::connect(&server, &alice.token).await;
    first.call(json!({"type": "logout"})).await.expect("logout");
    assert_eq!(first.close_code().await, Some(4001));
    assert_eq!(second.close_code().await, Some(4001));
    let me = server.rest().with_token(alice.token.clone()).me().await;
    assert!(
        matches!(me, Err(natter_client::ClientError::Api(_, 401))),
        "{me:?}"
    );

    let third_device = server.login("alice").await;
    let mut third = Raw::connect(&server, &third_device.token).await;
    server
        .rest()
        .with_token(third_device.token.clone())
        .logout()
        .await
        .expect("REST logout");
    assert_eq!(third.close_code().await, Some(4001));

    other
        .call(json!({"type": "ping"}))
        .await
        .expect("the other device is still served");
}

/// A user disabled by `natter user disable` (another process, which the server does not hear)
/// loses their open connections within the node's check period; other users keep theirs.
#[tokio::test]
async fn a_disabled_users_open_connections_end() {
    let server = Server::start("disabled", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["user", "disable", "alice", "--data-dir"])
        .arg(&server.data_dir)
        .env("NATTER_LOG", "warn")
        .output()
        .expect("run natter");
    assert!(output.status.success(), "{output:?}");
    let closed = tokio::time::timeout(Duration::from_secs(20), a.close_code())
        .await
        .expect("closed within the check period");
    assert_eq!(closed, Some(4001));
    b.call(json!({"type": "ping"}))
        .await
        .expect("bob is still served");
}
