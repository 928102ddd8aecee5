//! Chat over real sockets: sends, acks, fan-out to every device, groups, receipts, sync.

use std::time::Duration;

use natter_proto::{Ack, Conversation, ServerFrame, SyncPage};
use serde_json::json;

use crate::harness::{Raw, Server, text};

fn ack(value: serde_json::Value) -> Ack {
    serde_json::from_value(value).expect("an ack")
}

fn conversation(value: serde_json::Value) -> Conversation {
    serde_json::from_value(value).expect("a conversation")
}

#[tokio::test]
async fn every_device_of_every_member_gets_every_message_once() {
    let server = Server::start("fanout", &[]);
    let alice = server.register("alice").await;
    let alice_tablet = server.login("alice").await;
    let bob = server.register("bob").await;
    let mut a1 = Raw::connect(&server, &alice.token).await;
    let mut a2 = Raw::connect(&server, &alice_tablet.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;

    let direct = conversation(
        a1.call(json!({"type": "create_direct", "user_id": bob.user.id}))
            .await
            .unwrap(),
    );
    let first = ack(a1
        .call(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "m-1", "content": text("hi bob")}))
        .await
        .unwrap());
    assert_eq!((first.seq, first.duplicate), (1, false));

    for device in [&mut a2, &mut b] {
        let frame = device
            .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
            .await;
        let ServerFrame::Message { cursor, message } = frame else {
            unreachable!()
        };
        assert_eq!((message.seq, message.content.text()), (1, Some("hi bob")));
        assert_eq!(cursor, message.pos);
    }

    // The same client message id again: the first ack, nothing stored, nothing pushed.
    let again = ack(a1
        .call(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "m-1", "content": text("hi bob")}))
        .await
        .unwrap());
    assert_eq!(
        (again.seq, again.pos, again.duplicate),
        (first.seq, first.pos, true)
    );
    assert!(
        !b.sees_within(Duration::from_millis(300), |f| matches!(
            f,
            ServerFrame::Message { .. }
        ))
        .await
    );

    let reply = ack(b
        .call(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "b-1", "content": text("hello"), "reply_to": 1}))
        .await
        .unwrap());
    assert_eq!(reply.seq, 2);
    let frame = a2
        .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    let ServerFrame::Message { message, .. } = frame else {
        unreachable!()
    };
    assert_eq!((message.seq, message.reply_to), (2, Some(1)));
}

#[tokio::test]
async fn groups_follow_roles_and_outsiders_see_nothing() {
    let server = Server::start("groups", &[]);
    let owner = server.register("owner").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let mut o = Raw::connect(&server, &owner.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let mut c = Raw::connect(&server, &carol.token).await;

    let group = conversation(
        o.call(json!({"type": "create_group", "title": "team", "member_ids": [bob.user.id]}))
            .await
            .unwrap(),
    );
    assert_eq!(group.members.len(), 2);
    b.expect_event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;

    // Carol is not a member: she can neither write, read nor watch.
    let refused = c
        .call(json!({"type": "send", "conversation_id": group.id, "client_msg_id": "c", "content": text("let me in")}))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "not_member");
    let refused = c
        .call(json!({"type": "history", "conversation_id": group.id}))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "not_member");
    let refused = c
        .call(json!({"type": "typing", "conversation_id": group.id}))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "not_member");

    // Nor can she look the owner up by id: they have never shared a conversation.
    let lookup = json!({"type": "lookup_user", "user_id": owner.user.id});
    let refused = c.call(lookup.clone()).await.unwrap_err();
    assert_eq!(refused.code.as_str(), "not_found");

    // A plain member cannot add people; the owner can, and the new member hears of it.
    let refused = b
        .call(json!({"type": "add_members", "conversation_id": group.id, "user_ids": [carol.user.id]}))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "forbidden");
    o.call(
        json!({"type": "add_members", "conversation_id": group.id, "user_ids": [carol.user.id]}),
    )
    .await
    .unwrap();
    c.expect_event(|f| matches!(f, ServerFrame::Conversation { conversation, .. } if conversation.id == group.id))
        .await;
    o.call(json!({"type": "send", "conversation_id": group.id, "client_msg_id": "o-1", "content": text("welcome")}))
        .await
        .unwrap();
    c.expect_event(|f| matches!(f, ServerFrame::Message { message, .. } if message.content.text() == Some("welcome")))
        .await;

    // Removed, Carol stops hearing the group.
    o.call(json!({"type": "remove_member", "conversation_id": group.id, "user_id": carol.user.id}))
        .await
        .unwrap();
    c.expect_event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;
    o.call(json!({"type": "send", "conversation_id": group.id, "client_msg_id": "o-2", "content": text("secret")}))
        .await
        .unwrap();
    assert!(
        !c.sees_within(Duration::from_millis(300), |f| {
            matches!(f, ServerFrame::Message { message, .. } if message.content.text() == Some("secret"))
        })
        .await
    );
    let page = c
        .call(json!({"type": "history", "conversation_id": group.id, "limit": 50}))
        .await
        .unwrap();
    assert!(!page.to_string().contains("secret"));
    assert!(page.to_string().contains("welcome"));

    // Once in a conversation together, always known by id to each other (the names of past
    // members' messages), by WebSocket and by REST; by name, as ever, to anyone.
    let found = c.call(lookup).await.unwrap();
    assert_eq!(found["username"], "owner");
    let carol_by_id = server
        .rest()
        .with_token(bob.token.clone())
        .user_by_id(carol.user.id)
        .await
        .unwrap();
    assert_eq!(carol_by_id.username, "carol");
    let both = json!({"type": "lookup_user", "user_id": owner.user.id, "username": "owner"});
    let refused = c.call(both).await.unwrap_err();
    assert_eq!(refused.code.as_str(), "invalid_request");

    // The owner hands over ownership before leaving.
    let refused = o
        .call(json!({"type": "leave", "conversation_id": group.id}))
        .await
        .unwrap_err();
    assert_eq!(refused.code.as_str(), "conflict");
    o.call(json!({"type": "set_role", "conversation_id": group.id, "user_id": bob.user.id, "role": "owner"}))
        .await
        .unwrap();
    o.call(json!({"type": "leave", "conversation_id": group.id}))
        .await
        .unwrap();
    let list = b.call(json!({"type": "conversations"})).await.unwrap();
    assert!(list.to_string().contains("\"role\":\"owner\""));
}

#[tokio::test]
async fn receipts_reach_the_other_members_and_drive_unread_counts() {
    let server = Server::start("receipts", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let mut b2 = Raw::connect(&server, &bob_phone.token).await;
    let direct = conversation(
        a.call(json!({"type": "create_direct", "user_id": bob.user.id}))
            .await
            .unwrap(),
    );
    for i in 0..3 {
        a.call(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": format!("m{i}"), "content": text("x")}))
            .await
            .unwrap();
    }
    let listed = b.call(json!({"type": "conversations"})).await.unwrap();
    assert_eq!(listed["conversations"][0]["unread_count"], 3);

    b.call(json!({"type": "mark", "conversation_id": direct.id, "delivered": 3, "read": 2}))
        .await
        .unwrap();
    for device in [&mut a, &mut b2] {
        let frame = device
            .expect_event(|f| matches!(f, ServerFrame::Receipt { .. }))
            .await;
        let ServerFrame::Receipt { receipt, .. } = frame else {
            unreachable!()
        };
        assert_eq!(
            (receipt.user_id, receipt.delivered_seq, receipt.read_seq),
            (bob.user.id, 3, 2)
        );
    }
    let listed = b2.call(json!({"type": "conversations"})).await.unwrap();
    assert_eq!(listed["conversations"][0]["unread_count"], 1);
}

#[tokio::test]
async fn a_returning_device_syncs_what_it_missed_in_bounded_pages() {
    let server = Server::start("sync", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let ab = conversation(
        a.call(json!({"type": "create_direct", "user_id": bob.user.id}))
            .await
            .unwrap(),
    );
    let ac = conversation(
        a.call(json!({"type": "create_direct", "user_id": carol.user.id}))
            .await
            .unwrap(),
    );

    let mut b = Raw::connect(&server, &bob.token).await;
    let first: SyncPage =
        serde_json::from_value(b.call(json!({"type": "sync", "cursor": 0})).await.unwrap())
            .unwrap();
    assert!(!first.more);
    drop(b);

    for i in 0..25 {
        a.call(json!({"type": "send", "conversation_id": ab.id, "client_msg_id": format!("ab{i}"), "content": text("for bob")}))
            .await
            .unwrap();
        a.call(json!({"type": "send", "conversation_id": ac.id, "client_msg_id": format!("ac{i}"), "content": text("for carol")}))
            .await
            .unwrap();
    }

    let mut b = Raw::connect(&server, &bob.token).await;
    let mut cursor = first.cursor;
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let page: SyncPage = serde_json::from_value(
            b.call(json!({"type": "sync", "cursor": cursor, "limit": 10}))
                .await
                .unwrap(),
        )
        .unwrap();
        pages += 1;
        assert!(
            page.messages.len() <= 11,
            "a page holds about `limit` items"
        );
        assert!(page.cursor >= cursor);
        for message in &page.messages {
            assert_eq!(message.conversation_id, ab.id, "only bob's conversations");
            seqs.push(message.seq);
        }
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert!(pages >= 3);
    assert_eq!(seqs, (1..=25).collect::<Vec<u64>>());
    let empty: SyncPage = serde_json::from_value(
        b.call(json!({"type": "sync", "cursor": cursor}))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(empty.messages.is_empty() && !empty.more);
}

#[tokio::test]
async fn a_sync_sent_before_the_hello_arrives_is_answered_after_it() {
    let server = Server::start("pipelined-sync", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let direct = a.create_direct(bob.user.id).await;
    a.call(json!({"type": "send", "conversation_id": direct, "client_msg_id": "a-1", "content": text("while you were away")}))
        .await
        .unwrap();

    // A reconnecting client may send its sync at once, a round trip before the hello reaches it.
    let mut b = Raw::connect_without_hello(&server, &bob.token).await;
    let id = b.command(json!({"type": "sync", "cursor": 0})).await;
    let hello = b.next_frame().await;
    assert!(matches!(hello, ServerFrame::Hello(_)), "{hello:?}");
    let page: SyncPage = serde_json::from_value(b.reply(id).await.unwrap()).unwrap();
    assert_eq!(page.conversations.len(), 1);
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].conversation_id, direct);
    assert!(!page.more);
}

/// The server pings a connection one heartbeat interval after its hello, not at once (that would
/// cost every connect a write and a pong for nothing), keeps one that answers, and closes one it
/// hears nothing from, not even a pong, with 4000 (protocol.md §3.3).
#[tokio::test]
async fn heartbeats_start_an_interval_after_the_hello_and_silence_closes_with_4000() {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = Server::start(
        "heartbeat",
        &[
            "--heartbeat-interval-ms",
            "400",
            "--idle-timeout-ms",
            "1000",
        ],
    );
    let alice = server.register("alice").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let hello_read = std::time::Instant::now();
    let first = a.next_message(Duration::from_secs(5)).await;
    assert!(matches!(first, Some(WsMessage::Ping(_))), "{first:?}");
    assert!(
        hello_read.elapsed() >= Duration::from_millis(300),
        "pinged {:?} after the hello",
        hello_read.elapsed()
    );

    // Reading answers every ping: the connection stays up well past the idle timeout.
    let reading_until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < reading_until {
        match a.next_message(Duration::from_millis(500)).await {
            Some(WsMessage::Ping(_)) | None => {}
            other => panic!("a connection that answers pings got {other:?}"),
        }
    }

    // A client that never answers: pings, then a close with 4000 after the idle timeout. (Bytes
    // on a bare socket: a WebSocket library would answer the pings.)
    let frames = silent_client_frames(&server, &alice.token).await;
    let pings = frames.iter().filter(|(opcode, _)| *opcode == 0x9).count();
    assert!(pings >= 2, "{frames:?}");
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"idle timeout");
    assert_eq!(frames.last(), Some(&(0x8, close)), "{frames:?}");
}

/// Upgrade a bare TCP connection, send nothing more, and read until the server hangs up (at most
/// 10 s); the frames after the hello, as (opcode, payload).
async fn silent_client_frames(server: &Server, token: &str) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("upgrade");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut bytes))
        .await
        .expect("the server hangs up within 10 s")
        .expect("read");
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response")
        + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"), "{bytes:?}");
    // Server frames are unmasked, and these are small: a 7-bit length, or 16 bits after 126.
    let mut frames = Vec::new();
    let mut at = head_end;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, start) = match bytes[at + 1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                at + 4,
            ),
            len => (usize::from(len), at + 2),
        };
        frames.push((opcode, bytes[start..start + len].to_vec()));
        at = start + len;
    }
    let hello = frames.remove(0);
    assert_eq!(hello.0, 0x1, "the hello first");
    frames
}

#[tokio::test]
async fn presence_and_typing_reach_only_those_who_share_a_conversation() {
    let server = Server::start("presence", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    server
        .rest()
        .with_token(&alice.token)
        .create_conversation(&natter_proto::CreateConversationRequest::Direct {
            user_id: bob.user.id,
        })
        .await
        .unwrap();
    let mut b = Raw::connect(&server, &bob.token).await;
    let mut e = Raw::connect(&server, &eve.token).await;
    let mut a = Raw::connect(&server, &alice.token).await;

    b.expect_event(
        |f| matches!(f, ServerFrame::Presence(p) if p.user_id == alice.user.id && p.online),
    )
    .await;
    let conversations = a.call(json!({"type": "conversations"})).await.unwrap();
    let id = conversations["conversations"][0]["id"].as_u64().unwrap();
    a.call(json!({"type": "typing", "conversation_id": id}))
        .await
        .unwrap();
    b.expect_event(|f| matches!(f, ServerFrame::Typing { user_id, active: true, .. } if *user_id == alice.user.id))
        .await;
    assert!(
        !e.sees_within(Duration::from_millis(300), |f| {
            matches!(f, ServerFrame::Presence(_) | ServerFrame::Typing { .. })
        })
        .await
    );

    let presence = e
        .call(json!({"type": "presence", "user_ids": [alice.user.id]}))
        .await
        .unwrap();
    assert_eq!(
        presence["presence"].as_array().unwrap().len(),
        0,
        "eve may not see alice"
    );
    let presence = b
        .call(json!({"type": "presence", "user_ids": [alice.user.id]}))
        .await
        .unwrap();
    assert_eq!(presence["presence"][0]["online"], true);

    drop(a);
    b.expect_event(
        |f| matches!(f, ServerFrame::Presence(p) if p.user_id == alice.user.id && !p.online),
    )
    .await;
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_and_its_token_refused() {
    let server = Server::start("devices", &[]);
    let alice = server.register("alice").await;
    let laptop = server.login("alice").await;
    let mut phone = Raw::connect(&server, &alice.token).await;
    let mut other = Raw::connect(&server, &laptop.token).await;
    let devices = phone.call(json!({"type": "devices"})).await.unwrap();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
    phone
        .call(json!({"type": "revoke_device", "device_id": laptop.device_id}))
        .await
        .unwrap();
    assert_eq!(
        other.close_code().await,
        Some(natter_proto::close_code::REVOKED)
    );
    let refused = server
        .rest()
        .with_token(&laptop.token)
        .me()
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unauthorized"), "{refused}");
}

#[tokio::test]
async fn pipelined_sends_are_stored_in_order_and_answered_in_order() {
    let server = Server::start("pipelined", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let direct = conversation(
        a.call(json!({"type": "create_direct", "user_id": bob.user.id}))
            .await
            .unwrap(),
    );

    // 100 sends (one a duplicate, one invalid, one malformed frame) without waiting for replies,
    // then a history that must see every message sent before it.
    let mut ids = Vec::new();
    for k in 0..100 {
        let id = match k {
            40 => a.command(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "p-10", "content": text("again")})).await,
            60 => a.command(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "p-60", "content": text("   ")})).await,
            _ => a.command(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": format!("p-{k}"), "content": text(&format!("m{k}"))})).await,
        };
        ids.push(id);
        if k == 80 {
            a.send_text("not json".into()).await;
        }
    }
    let history = a
        .command(json!({"type": "history", "conversation_id": direct.id, "limit": 200}))
        .await;

    // Replies come in the order of the commands, the error without an id in its place.
    let mut expected = ids.clone();
    expected.insert(81, 0);
    expected.push(history);
    let mut replies = Vec::new();
    // Where in Alice's stream each reply and each of her own message events came.
    let mut frame_index = 0usize;
    let mut reply_at = std::collections::HashMap::new();
    let mut echo_at = std::collections::HashMap::new();
    while replies.len() < expected.len() || echo_at.len() < 98 {
        frame_index += 1;
        match a.next_frame().await {
            ServerFrame::Result { id, data } => {
                reply_at.insert(id, frame_index);
                replies.push((id, Some(data)));
            }
            ServerFrame::Error { id, .. } => replies.push((id.unwrap_or(0), None)),
            ServerFrame::Message { message, .. } => {
                echo_at.insert(message.client_msg_id.unwrap_or_default(), frame_index);
            }
            _ => {}
        }
    }
    // On the sending connection, a send's ack comes before its own message event.
    for (k, id) in ids.iter().enumerate() {
        if let Some(echo) = echo_at.get(&format!("p-{k}")) {
            assert!(
                reply_at[id] < *echo,
                "the ack of p-{k} came after its message event"
            );
        }
    }
    let order: Vec<u64> = replies.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, expected);

    // The 98 stored messages got seq 1..=98 in the order they were sent.
    let mut seq = 0;
    for (k, (_, data)) in replies.iter().take(101).enumerate() {
        let sent = if k > 81 { k - 1 } else { k };
        match (k, data) {
            (81, None) | (60, None) => continue,
            (40, Some(data)) => assert!(ack(data.clone()).duplicate, "the duplicate is answered"),
            (_, Some(data)) => {
                seq += 1;
                let ack = ack(data.clone());
                assert_eq!((ack.seq, ack.client_msg_id), (seq, format!("p-{sent}")));
            }
            (_, None) => panic!("reply {k} is an error"),
        }
    }
    assert_eq!(seq, 98);
    let page = replies.last().and_then(|(_, data)| data.clone()).unwrap();
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(98));

    // Bob got all 98, in order.
    for want in 1..=98 {
        let ServerFrame::Message { message, .. } = b
            .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
            .await
        else {
            unreachable!()
        };
        assert_eq!(message.seq, want);
    }
}

#[tokio::test]
async fn a_device_that_reconnects_within_a_minute_is_not_written_again() {
    let server = Server::start("touch", &[]);
    let alice = server.register("alice").await;
    let last_seen = |devices: serde_json::Value| devices["devices"][0]["last_seen_at_ms"].as_u64();
    let mut a = Raw::connect(&server, &alice.token).await;
    // The first connection records the device's use, just after the hello: let it land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = last_seen(a.call(json!({"type": "devices"})).await.unwrap());
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = Raw::connect(&server, &alice.token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = last_seen(again.call(json!({"type": "devices"})).await.unwrap());
    assert_eq!(second, first, "reconnecting within a minute writes nothing");
}

/// A group change sends the new state, then the system message that records it, both at the
/// message's position: the state's cursor stays one below, so that a client that adopts it and
/// goes away before the message still gets the message from `sync` (protocol §9.5).
#[tokio::test]
async fn a_state_event_before_its_system_message_has_the_cursor_below_it() {
    let server = Server::start("state-cursor", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;
    let group = conversation(
        a.call(json!({"type": "create_group", "title": "g", "member_ids": [bob.user.id]}))
            .await
            .expect("create_group"),
    );
    // The group's own state and `created` message, which the loop below does not look at.
    b.expect_event(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    for command in [
        json!({"type": "set_title", "conversation_id": group.id, "title": "renamed"}),
        json!({"type": "set_role", "conversation_id": group.id, "user_id": bob.user.id, "role": "admin"}),
    ] {
        a.call(command).await.expect("change");
        let state_cursor = match b
            .expect_event(|f| matches!(f, ServerFrame::Conversation { .. }))
            .await
        {
            ServerFrame::Conversation {
                cursor,
                conversation,
            } => {
                assert_eq!(cursor + 1, conversation.last_pos);
                cursor
            }
            _ => unreachable!(),
        };
        let message_pos = match b
            .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
            .await
        {
            ServerFrame::Message { cursor, message } => {
                assert_eq!(cursor, message.pos);
                message.pos
            }
            _ => unreachable!(),
        };
        assert_eq!(message_pos, state_cursor + 1);
        let page: SyncPage = serde_json::from_value(
            b.call(json!({"type": "sync", "cursor": state_cursor}))
                .await
                .expect("sync"),
        )
        .expect("a sync page");
        assert!(
            page.messages.iter().any(|m| m.pos == message_pos),
            "{page:?}"
        );
    }
}
