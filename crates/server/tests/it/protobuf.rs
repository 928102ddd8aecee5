//! The protobuf encoding over real sockets: negotiated by subprotocol, binary frames both ways,
//! and JSON and protobuf clients in one conversation, each served in its own encoding.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use natter_proto::prost::Message as _;
use natter_proto::{
    Ack, ClientFrame, Command, Content, Conversation, ErrorBody, HistoryPage, SUBPROTOCOL_JSON,
    SUBPROTOCOL_PROTO, ServerFrame, pb,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{Raw, Server, text};

/// A WebSocket client that offers the given subprotocols.
async fn open(
    server: &Server,
    token: &str,
    offered: &str,
) -> (WebSocketStream<MaybeTlsStream<TcpStream>>, Option<String>) {
    let mut request = server.ws_url(token).into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(offered).expect("header"),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connect");
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ascii").to_string());
    (ws, protocol)
}

/// A protobuf client: binary frames only; a text frame from the server fails the test.
struct Proto {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Proto {
    async fn connect(server: &Server, token: &str) -> Proto {
        let (ws, protocol) = open(server, token, SUBPROTOCOL_PROTO).await;
        assert_eq!(protocol.as_deref(), Some(SUBPROTOCOL_PROTO));
        let mut client = Proto { ws, next_id: 0 };
        let hello = client.next_frame().await;
        assert!(matches!(hello, ServerFrame::Hello(_)), "{hello:?}");
        client
    }

    async fn send_raw(&mut self, message: WsMessage) {
        self.ws.send(message).await.expect("send");
    }

    async fn command(&mut self, command: Command) -> u64 {
        self.next_id += 1;
        let frame = ClientFrame {
            id: self.next_id,
            command,
        };
        self.send_raw(WsMessage::Binary(frame.encode_proto().into()))
            .await;
        self.next_id
    }

    async fn next_frame(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("connection open")
                .expect("frame");
            match message {
                WsMessage::Binary(bytes) => {
                    return ServerFrame::decode_proto(&bytes).expect("valid protobuf frame");
                }
                WsMessage::Text(text) => panic!("a text frame on a protobuf connection: {text}"),
                WsMessage::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    async fn reply(&mut self, id: u64) -> Result<serde_json::Value, ErrorBody> {
        loop {
            match self.next_frame().await {
                ServerFrame::Result { id: got, data } if got == id => return Ok(data),
                ServerFrame::Error {
                    id: Some(got),
                    error,
                } if got == id => return Err(error),
                _ => continue,
            }
        }
    }

    async fn call(&mut self, command: Command) -> Result<serde_json::Value, ErrorBody> {
        let id = self.command(command).await;
        self.reply(id).await
    }

    async fn expect_event(&mut self, mut want: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let frame = self.next_frame().await;
            if want(&frame) {
                return frame;
            }
        }
    }
}

fn hello_text(s: &str) -> Content {
    Content::Text { text: s.into() }
}

#[tokio::test]
async fn the_handshake_selects_the_encoding_the_client_offers_first() {
    let server = Server::start("proto-handshake", &[]);
    let alice = server.register("alice").await;

    for (offered, chosen) in [
        (SUBPROTOCOL_PROTO, SUBPROTOCOL_PROTO),
        ("natter.v1.proto, natter.v1.json", SUBPROTOCOL_PROTO),
        ("natter.v1.json, natter.v1.proto", SUBPROTOCOL_JSON),
        ("something.else, natter.v1.proto", SUBPROTOCOL_PROTO),
        (SUBPROTOCOL_JSON, SUBPROTOCOL_JSON),
    ] {
        let (mut ws, protocol) = open(&server, &alice.token, offered).await;
        assert_eq!(protocol.as_deref(), Some(chosen), "offered {offered:?}");
        let hello = loop {
            match ws.next().await.expect("open").expect("frame") {
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => break other,
            }
        };
        match (chosen, hello) {
            (SUBPROTOCOL_PROTO, WsMessage::Binary(bytes)) => {
                let hello = ServerFrame::decode_proto(&bytes).expect("protobuf hello");
                assert!(matches!(hello, ServerFrame::Hello(_)), "{hello:?}");
            }
            (SUBPROTOCOL_JSON, WsMessage::Text(text)) => {
                let hello = ServerFrame::decode_json(&text).expect("JSON hello");
                assert!(matches!(hello, ServerFrame::Hello(_)), "{hello:?}");
            }
            (chosen, hello) => panic!("{chosen}: unexpected hello {hello:?}"),
        }
    }
    // No subprotocol at all: JSON, and the handshake names none (the harness's client).
    let mut raw = Raw::connect(&server, &alice.token).await;
    raw.call(json!({"type": "ping"})).await.expect("JSON ping");
}

#[tokio::test]
async fn protobuf_and_json_clients_chat_each_in_their_own_encoding() {
    let server = Server::start("proto-chat", &[]);
    let alice = server.register("alice").await;
    let alice_phone = server.login("alice").await;
    let bob = server.register("bob").await;
    let mut a = Proto::connect(&server, &alice.token).await;
    let mut a_json = Raw::connect(&server, &alice_phone.token).await;
    let mut b = Raw::connect(&server, &bob.token).await;

    let direct: Conversation = serde_json::from_value(
        a.call(Command::CreateDirect {
            user_id: bob.user.id,
        })
        .await
        .expect("create_direct"),
    )
    .expect("a conversation");
    assert_eq!(direct.members.len(), 2);

    // Protobuf → JSON: Alice's other device (JSON) and Bob (JSON) get the same message.
    let ack: Ack = serde_json::from_value(
        a.call(Command::Send {
            conversation_id: direct.id,
            client_msg_id: "a-1".into(),
            content: hello_text("hi bob, in protobuf ✓"),
            reply_to: None,
        })
        .await
        .expect("send"),
    )
    .expect("an ack");
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    for device in [&mut a_json, &mut b] {
        let ServerFrame::Message { cursor, message } = device
            .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
            .await
        else {
            unreachable!()
        };
        assert_eq!(
            (message.seq, message.content.text(), cursor),
            (1, Some("hi bob, in protobuf ✓"), ack.pos)
        );
        assert_eq!(message.client_msg_id.as_deref(), Some("a-1"));
    }
    // Alice's protobuf connection hears her own message too.
    let ServerFrame::Message { message, .. } = a
        .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(message.seq, 1);

    // JSON → protobuf: Bob replies; Alice's protobuf connection gets it as a binary frame.
    b.call(json!({"type": "send", "conversation_id": direct.id, "client_msg_id": "b-1", "content": text("hello alice"), "reply_to": 1}))
        .await
        .expect("send");
    let ServerFrame::Message { cursor, message } = a
        .expect_event(|f| matches!(f, ServerFrame::Message { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (message.seq, message.reply_to, message.content.text()),
        (2, Some(1), Some("hello alice"))
    );
    assert_eq!(cursor, message.pos);
    assert_eq!(message.sender_id, bob.user.id);

    // Receipts and typing reach the protobuf connection as well. (Bob's markers already stand at
    // his own message; Alice's other device reads it.)
    a_json
        .call(json!({"type": "mark", "conversation_id": direct.id, "delivered": 2, "read": 2}))
        .await
        .expect("mark");
    let ServerFrame::Receipt { receipt, .. } = a
        .expect_event(|f| matches!(f, ServerFrame::Receipt { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!((receipt.user_id, receipt.read_seq), (alice.user.id, 2));
    b.call(json!({"type": "typing", "conversation_id": direct.id}))
        .await
        .expect("typing");
    let ServerFrame::Typing {
        user_id, active, ..
    } = a
        .expect_event(|f| matches!(f, ServerFrame::Typing { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!((user_id, active), (bob.user.id, true));

    // Results of every size: a history page in protobuf.
    let page: HistoryPage = serde_json::from_value(
        a.call(Command::History {
            conversation_id: direct.id,
            before: None,
            after: None,
            limit: None,
        })
        .await
        .expect("history"),
    )
    .expect("a history page");
    let texts: Vec<_> = page
        .messages
        .iter()
        .map(|m| m.content.text().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["hi bob, in protobuf ✓", "hello alice"]);
}

#[tokio::test]
async fn bad_binary_frames_get_protobuf_errors() {
    let server = Server::start("proto-bad", &[]);
    let alice = server.register("alice").await;
    let mut a = Proto::connect(&server, &alice.token).await;

    a.send_raw(WsMessage::Binary(vec![0xff, 0xff, 0xff].into()))
        .await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { id: None, error } if error.code.as_str() == "malformed_frame"),
        "{frame:?}"
    );

    // A JSON text frame on a protobuf connection.
    a.send_raw(WsMessage::Text(r#"{"id":1,"type":"ping"}"#.into()))
        .await;
    let frame = a.next_frame().await;
    assert!(
        matches!(&frame, ServerFrame::Error { error, .. } if error.code.as_str() == "malformed_frame"),
        "{frame:?}"
    );

    // No command (or one from a later protocol): unknown_type, with the request id.
    let empty = pb::ClientFrame {
        id: 41,
        command: None,
    }
    .encode_to_vec();
    a.send_raw(WsMessage::Binary(empty.into())).await;
    let error = a.reply(41).await.unwrap_err();
    assert_eq!(error.code.as_str(), "unknown_type");

    // A send without content: invalid_request.
    let no_content = pb::ClientFrame {
        id: 42,
        command: Some(pb::client_frame::Command::Send(pb::command::Send {
            conversation_id: 1,
            client_msg_id: "x".into(),
            content: None,
            reply_to: None,
        })),
    }
    .encode_to_vec();
    a.send_raw(WsMessage::Binary(no_content.into())).await;
    let error = a.reply(42).await.unwrap_err();
    assert_eq!(error.code.as_str(), "invalid_request");

    // Errors from the core arrive in protobuf too.
    let error = a
        .call(Command::Conversation {
            conversation_id: 999,
        })
        .await
        .unwrap_err();
    assert!(
        ["not_found", "not_member"].contains(&error.code.as_str()),
        "{error:?}"
    );
    a.call(Command::Ping {})
        .await
        .expect("ping after bad input");

    // And a binary frame on a JSON connection is still refused in JSON.
    let (mut ws, _) = open(&server, &alice.token, SUBPROTOCOL_JSON).await;
    ws.send(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("open")
            .expect("frame")
        {
            WsMessage::Text(text) => texts.push(ServerFrame::decode_json(&text).expect("JSON")),
            WsMessage::Binary(bytes) => panic!("a binary frame on a JSON connection: {bytes:?}"),
            _ => continue,
        }
    }
    assert!(matches!(texts[0], ServerFrame::Hello(_)), "{:?}", texts[0]);
    assert!(
        matches!(&texts[1], ServerFrame::Error { error, .. } if error.code.as_str() == "malformed_frame"),
        "{:?}",
        texts[1]
    );
}
