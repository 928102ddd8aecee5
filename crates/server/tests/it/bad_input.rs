//! Bad input gets its documented error, and the server keeps serving everyone.

use natter_proto::ServerFrame;
use serde_json::json;

use crate::harness::{Raw, Server, http_get, text};

async fn still_serves(raw: &mut Raw) {
    raw.call(json!({"type": "ping"}))
        .await
        .expect("ping after bad input");
}

#[tokio::test]
async fn malformed_unknown_and_invalid_frames_get_their_error_codes() {
    let server = Server::start("malformed", &[]);
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;

    a.send_text("{not json".into()).await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { id: None, error } if error.code.as_str() == "malformed_frame"),
        "{frame:?}"
    );

    a.send_text(r#"{"type":"ping"}"#.into()).await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { error, .. } if error.code.as_str() == "malformed_frame"),
        "{frame:?}"
    );

    let error = a.call(json!({"type": "teleport"})).await.unwrap_err();
    assert_eq!(error.code.as_str(), "unknown_type");

    let error = a
        .call(json!({"type": "send", "conversation_id": "one"}))
        .await
        .unwrap_err();
    assert_eq!(error.code.as_str(), "invalid_request");

    let error = a
        .call(json!({"type": "send", "conversation_id": 1, "client_msg_id": "x", "content": {"type": "system", "event": {"kind": "member_left", "user_id": 1}}}))
        .await
        .unwrap_err();
    assert_eq!(error.code.as_str(), "unsupported_content");
    still_serves(&mut a).await;
}

#[tokio::test]
async fn oversized_frames_and_messages_are_refused_and_the_connection_lives_on() {
    let server = Server::start(
        "oversized",
        &["--frame-bytes-max", "4096", "--message-bytes-max", "1024"],
    );
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let id = a.create_direct(bob.user.id).await;

    let big = "x".repeat(2000);
    let error = a
        .call(json!({"type": "send", "conversation_id": id, "client_msg_id": "big", "content": text(&big)}))
        .await
        .unwrap_err();
    assert_eq!(error.code.as_str(), "message_too_large");

    let huge = "y".repeat(8000);
    a.command(json!({"type": "send", "conversation_id": id, "client_msg_id": "huge", "content": text(&huge)}))
        .await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { error, .. } if error.code.as_str() == "frame_too_large"),
        "{frame:?}"
    );
    still_serves(&mut a).await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_before_the_upgrade() {
    let server = Server::start("token", &[]);
    let result = tokio_tungstenite::connect_async(server.ws_url("nt_not-a-real-token")).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = result else {
        panic!("expected an HTTP refusal, got {result:?}");
    };
    assert_eq!(response.status().as_u16(), 401);
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
    assert!(body.contains("unauthorized"), "{body}");
    let (status, body) = http_get(server.port, "/v1/me").await;
    assert_eq!(status, 401);
    assert!(body.contains("\"code\":\"unauthorized\""));
}

#[tokio::test]
async fn a_flood_over_the_rate_limit_is_refused_while_others_are_served() {
    let server = Server::start("flood", &["--sends-per-second", "5"]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let id = a.create_direct(bob.user.id).await;

    let mut limited = 0;
    for i in 0..40 {
        match a
            .call(json!({"type": "send", "conversation_id": id, "client_msg_id": format!("f{i}"), "content": text("spam")}))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code.as_str(), "rate_limited");
                assert!(e.retry_after_ms.is_some());
                limited += 1;
            }
        }
    }
    assert!(limited >= 20, "only {limited} sends limited");
    let ack = b
        .call(json!({"type": "send", "conversation_id": id, "client_msg_id": "b1", "content": text("still here")}))
        .await
        .unwrap();
    assert!(ack["seq"].as_u64().unwrap() > 1);
}
