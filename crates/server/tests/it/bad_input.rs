//! Bad input gets its documented error, and the server keeps serving everyone.

use natter_proto::ServerFrame;
use serde_json::json;

use crate::harness::{Raw, Server, http_get, http_post_json, text};

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

    // A `type` that is not a string: the id was readable, so the error carries it.
    a.send_text(r#"{"id":12,"type":5}"#.into()).await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { id: Some(12), error } if error.code.as_str() == "malformed_frame"),
        "{frame:?}"
    );

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
async fn a_rest_body_is_a_json_object_or_refused() {
    let server = Server::start("rest-body", &[]);
    let port = server.port;
    let array = r#"["arrayuser","password-1",null,null]"#;
    let (status, body) = http_post_json(port, "/v1/register", array).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request"), "{body}");
    let object = r#"{"username":"objectuser","password":"password-1"}"#;
    let (status, body) = http_post_json(port, "/v1/register", object).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = http_post_json(port, "/v1/register", r#"{"username":"x"}"#).await;
    assert!(
        status == 400 && body.contains("password"),
        "{status} {body}"
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let server = Server::start("utf8", &[]);
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    still_serves(&mut a).await;
    a.send_text_bytes(b"{\"id\":1,\"type\":\"ping\",\"x\":\"\xff\"}")
        .await;
    assert_eq!(a.close_code().await, Some(1007));
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

/// Ids are stored as signed 64-bit integers: one at or above 2^63 names nothing that can exist,
/// and is refused as bad input (not a storage failure), over the socket and over REST alike.
#[tokio::test]
async fn ids_at_or_above_2_63_are_invalid_requests() {
    let server = Server::start("huge-ids", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let id = a.create_direct(bob.user.id).await;
    let huge: u64 = 1 << 63;
    for command in [
        json!({"type": "conversation", "conversation_id": huge}),
        json!({"type": "send", "conversation_id": huge, "client_msg_id": "h", "content": text("hi")}),
        json!({"type": "history", "conversation_id": huge}),
        json!({"type": "mark", "conversation_id": huge, "read": 1}),
        json!({"type": "typing", "conversation_id": huge, "active": true}),
        json!({"type": "create_direct", "user_id": huge}),
        json!({"type": "create_group", "title": "g", "member_ids": [bob.user.id, huge]}),
        json!({"type": "add_members", "conversation_id": id, "user_ids": [huge]}),
        json!({"type": "remove_member", "conversation_id": id, "user_id": huge}),
        json!({"type": "set_role", "conversation_id": huge, "user_id": bob.user.id, "role": "admin"}),
        json!({"type": "set_title", "conversation_id": huge, "title": "t"}),
        json!({"type": "leave", "conversation_id": huge}),
        json!({"type": "presence", "user_ids": [huge]}),
        json!({"type": "revoke_device", "device_id": huge}),
    ] {
        let error = a.call(command.clone()).await.unwrap_err();
        assert_eq!(
            error.code.as_str(),
            "invalid_request",
            "{command}: {error:?}"
        );
    }
    still_serves(&mut a).await;

    let rest = server.rest().with_token(alice.token.clone());
    match rest.conversation(huge).await {
        Err(natter_client::ClientError::Api(body, status)) => {
            assert_eq!((status, body.code.as_str()), (400, "invalid_request"));
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}
