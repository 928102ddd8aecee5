//! The high-level client against a small in-process fake of the server (loopback only).
//!
//! The fake implements just enough of the protocol — `hello`, `sync`, `history`, `send` with
//! `client_msg_id` dedupe, `message` pushes — plus knobs to misbehave the way real networks and
//! servers do: drop a connection after committing a send, hide a push to open a gap, push during
//! sync, revoke the token, refuse the handshake.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use natter_client::proto::{
    Ack, ClientFrame, Command, Content, Conversation, ConversationId, ConversationKind, ErrorBody,
    ErrorCode, Hello, HistoryPage, Limits, Message, Pos, Seq, ServerFrame, SyncPage, User,
    encode_error, encode_result,
};
use natter_client::{Backoff, Client, ClientConfig, ClientError, ClientEvent, ClientState, Events};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const WAIT: Duration = Duration::from_secs(10);

/// How long a fake that holds its hello waits for the client's first frame.
const HELLO_HELD_AT_MOST: Duration = Duration::from_secs(2);

enum Out {
    Frame(String),
    Close(u16),
    Drop,
}

#[derive(Default)]
struct World {
    next_pos: Pos,
    messages: BTreeMap<ConversationId, Vec<Message>>,
    acks: HashMap<String, Ack>,
    conns: Vec<mpsc::UnboundedSender<Out>>,
    /// Messages per sync page.
    sync_page: usize,
    /// Commit this many sends, then drop the connection instead of acking.
    drop_after_commit: usize,
    /// Live pushes of these (conversation, seq) are skipped, opening a gap.
    hidden_pushes: HashSet<(ConversationId, Seq)>,
    /// On the first sync, push the newest message live before answering.
    push_during_sync: bool,
    /// Close with 4001 right after the next hello.
    revoke: bool,
    /// Refuse the WebSocket handshake with 401.
    reject: bool,
    /// Say hello only once the client's first frame has come (or after `HELLO_HELD_AT_MOST`),
    /// and note that frame's command in `before_hello`: which commands a client pipelines.
    hold_hello: bool,
    before_hello: Vec<String>,
    /// Every command received, as `type` names, and every client_msg_id sent.
    commands: Vec<String>,
    sent_ids: Vec<String>,
    connections: usize,
}

impl World {
    fn commit(
        &mut self,
        conversation_id: ConversationId,
        client_msg_id: Option<String>,
        text: &str,
    ) -> Message {
        self.next_pos += 1;
        let list = self.messages.entry(conversation_id).or_default();
        let message = Message {
            conversation_id,
            seq: list.len() as Seq + 1,
            pos: self.next_pos,
            sender_id: 1,
            client_msg_id,
            content: Content::Text { text: text.into() },
            reply_to: None,
            sent_at_ms: 0,
        };
        list.push(message.clone());
        message
    }

    fn push(&mut self, message: &Message) {
        if self
            .hidden_pushes
            .contains(&(message.conversation_id, message.seq))
        {
            return;
        }
        let frame = ServerFrame::Message {
            cursor: message.pos,
            message: message.clone(),
        }
        .encode_json();
        self.conns
            .retain(|conn| conn.send(Out::Frame(frame.clone())).is_ok());
    }

    fn conversation(&self, id: ConversationId) -> Conversation {
        let list = self
            .messages
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Conversation {
            id,
            kind: ConversationKind::Group,
            title: Some(format!("conv {id}")),
            members: vec![],
            last_seq: list.len() as Seq,
            last_pos: list.last().map_or(0, |m| m.pos),
            created_at_ms: 0,
            last_activity_at_ms: 0,
            last_message: None,
            unread_count: None,
        }
    }

    fn sync(&self, cursor: Pos) -> SyncPage {
        let mut all: Vec<&Message> = self
            .messages
            .values()
            .flatten()
            .filter(|m| m.pos > cursor)
            .collect();
        all.sort_by_key(|m| m.pos);
        let page: Vec<Message> = all
            .iter()
            .take(self.sync_page)
            .map(|m| (*m).clone())
            .collect();
        let more = all.len() > page.len();
        let cursor = page.last().map_or(self.next_pos, |m| m.pos);
        let ids: std::collections::BTreeSet<ConversationId> =
            page.iter().map(|m| m.conversation_id).collect();
        SyncPage {
            cursor,
            more,
            conversations: ids.into_iter().map(|id| self.conversation(id)).collect(),
            messages: page,
        }
    }

    fn history(&self, id: ConversationId, after: Seq, limit: usize) -> HistoryPage {
        let list = self
            .messages
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let rest: Vec<Message> = list.iter().filter(|m| m.seq > after).cloned().collect();
        let more = rest.len() > limit;
        HistoryPage {
            messages: rest.into_iter().take(limit).collect(),
            more,
        }
    }
}

type Shared = Arc<Mutex<World>>;

fn hello() -> Hello {
    Hello {
        protocol: 1,
        server_version: "fake".into(),
        user: User {
            id: 1,
            username: "alice".into(),
            display_name: "Alice".into(),
        },
        device_id: 1,
        limits: Limits {
            frame_bytes_max: 64 * 1024,
            message_bytes_max: 16 * 1024,
            sends_per_second: 100,
            history_page_max: 3,
            sync_page_max: 100,
            heartbeat_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            typing_ttl_ms: 5_000,
        },
    }
}

async fn start_fake(world: World) -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Mutex::new(world));
    let accept_shared = shared.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, accept_shared.clone()));
        }
    });
    (addr, shared)
}

async fn serve(stream: tokio::net::TcpStream, world: Shared) {
    let reject = world.lock().unwrap().reject;
    // The signature is tungstenite's, large error and all.
    #[allow(clippy::result_large_err)]
    let callback = move |_: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if reject {
            let body = r#"{"code":"unauthorized","message":"bad token"}"#.to_string();
            return Err(tokio_tungstenite::tungstenite::http::Response::builder()
                .status(401)
                .body(Some(body))
                .unwrap());
        }
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (revoke, hold_hello) = {
        let mut w = world.lock().unwrap();
        w.connections += 1;
        w.conns.push(tx.clone());
        (std::mem::take(&mut w.revoke), w.hold_hello)
    };
    let mut first = None;
    if hold_hello
        && let Ok(Some(Ok(WsMessage::Text(text)))) =
            tokio::time::timeout(HELLO_HELD_AT_MOST, ws.next()).await
    {
        let frame = ClientFrame::decode_json(&text).unwrap();
        let name = frame.command.name().to_string();
        world.lock().unwrap().before_hello.push(name);
        first = Some(frame);
    }
    let hello = ServerFrame::Hello(hello()).encode_json();
    if ws.send(WsMessage::text(hello)).await.is_err() {
        return;
    }
    if revoke {
        let _ = tx.send(Out::Close(4001));
    }
    // Read after the hello, as the server does (protocol.md §3.2).
    if let Some(frame) = first {
        handle(&world, &tx, frame);
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Frame(text)) => {
                    if ws.send(WsMessage::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Out::Close(code)) => {
                    let frame = CloseFrame { code: code.into(), reason: "revoked".into() };
                    let _ = ws.send(WsMessage::Close(Some(frame))).await;
                    // Let the client answer the close, then go.
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
                    return;
                }
                Some(Out::Drop) | None => return,
            },
            incoming = ws.next() => {
                let Some(Ok(WsMessage::Text(text))) = incoming else {
                    match incoming {
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                };
                let frame = ClientFrame::decode_json(&text).unwrap();
                handle(&world, &tx, frame);
            }
        }
    }
}

fn handle(world: &Shared, tx: &mpsc::UnboundedSender<Out>, frame: ClientFrame) {
    let mut w = world.lock().unwrap();
    w.commands.push(frame.command.name().to_string());
    let id = frame.id;
    let reply = match frame.command {
        Command::Sync { cursor, .. } => {
            if std::mem::take(&mut w.push_during_sync) {
                let newest = w.messages.values().flatten().max_by_key(|m| m.pos).cloned();
                if let Some(newest) = newest {
                    w.push(&newest);
                }
            }
            encode_result(id, &w.sync(cursor))
        }
        Command::History {
            conversation_id,
            after,
            limit,
            ..
        } => encode_result(
            id,
            &w.history(
                conversation_id,
                after.unwrap_or(0),
                limit.unwrap_or(3) as usize,
            ),
        ),
        Command::Send {
            conversation_id,
            client_msg_id,
            content,
            ..
        } => {
            w.sent_ids.push(client_msg_id.clone());
            let ack = match w.acks.get(&client_msg_id) {
                Some(ack) => Ack {
                    duplicate: true,
                    ..ack.clone()
                },
                None => {
                    let text = content.text().unwrap_or_default().to_string();
                    let message = w.commit(conversation_id, Some(client_msg_id.clone()), &text);
                    let ack = Ack {
                        conversation_id,
                        client_msg_id: client_msg_id.clone(),
                        seq: message.seq,
                        pos: message.pos,
                        sent_at_ms: 0,
                        duplicate: false,
                    };
                    w.acks.insert(client_msg_id, ack.clone());
                    w.push(&message);
                    ack
                }
            };
            if w.drop_after_commit > 0 {
                w.drop_after_commit -= 1;
                let _ = tx.send(Out::Drop);
                return;
            }
            encode_result(id, &ack)
        }
        other => encode_error(
            Some(id),
            &ErrorBody {
                code: ErrorCode::UnknownType,
                message: format!("fake does not do {}", other.name()),
                retry_after_ms: None,
            },
        ),
    };
    let _ = tx.send(Out::Frame(reply));
}

fn world_with(conversations: &[(ConversationId, usize)], sync_page: usize) -> World {
    let mut world = World {
        sync_page,
        ..World::default()
    };
    // Interleave conversations so that sync pages mix them.
    let max = conversations.iter().map(|c| c.1).max().unwrap_or(0);
    for i in 0..max {
        for &(id, count) in conversations {
            if i < count {
                world.commit(id, None, &format!("{id}/{}", i + 1));
            }
        }
    }
    world
}

fn config(servers: Vec<String>) -> ClientConfig {
    let mut config = ClientConfig::new(servers, "token");
    config.backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(100),
    };
    config
}

/// Collect events until `stop` says so (the stopping event included).
async fn collect_until(
    events: &mut Events,
    mut stop: impl FnMut(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            let done = stop(&event);
            seen.push(event);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(result.is_ok(), "timed out; events so far: {seen:#?}");
    seen
}

fn delivered(events: &[ClientEvent], conversation_id: ConversationId) -> Vec<Seq> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) if m.conversation_id == conversation_id => Some(m.seq),
            _ => None,
        })
        .collect()
}

fn is_synced(event: &ClientEvent) -> bool {
    matches!(event, ClientEvent::Synced { .. })
}

/// The state saved while the client runs covers the events the application took, not those
/// still queued for it: an application killed with events queued gets them again on resume.
#[tokio::test]
async fn the_state_covers_the_events_taken_not_those_still_queued() {
    let (addr, world) = start_fake(world_with(&[(1, 10)], 100)).await;
    let mut client = Client::start(config(vec![addr.clone()])).unwrap();
    let mut events = client.events().unwrap();
    // Everything is queued for the application before it takes anything.
    let mut queued = Vec::new();
    while queued.len() < 12 {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(event)) => queued.push(event),
            other => panic!("no event: {other:?}"),
        }
        if queued.len() == 1 {
            // Taken: Connected. The rest arrives meanwhile; nothing of it is counted yet.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(client.state().delivered(1), 0);
            assert_eq!(client.state().cursor, 0);
        }
        if let Some(ClientEvent::Message(m)) = queued.last() {
            assert_eq!(
                client.state().delivered(1),
                m.seq,
                "covers up to the one taken"
            );
            assert_eq!(events.state().delivered(1), m.seq);
            if m.seq == 4 {
                break;
            }
        }
    }
    // Killed here, it resumes from seq 4: 5..=10 come again.
    let saved = client.state();
    assert_eq!(saved.delivered(1), 4);
    assert_eq!(
        saved.cursor, 0,
        "the cursor waits for the page's messages to be taken"
    );
    let state_at_close = client.close().await;
    assert_eq!(
        state_at_close.delivered(1),
        10,
        "close covers what is queued, to be drained"
    );
    let mut resumed_config = config(vec![addr]);
    resumed_config.state = Some(saved);
    let mut resumed = Client::start(resumed_config).unwrap();
    let mut again = resumed.events().unwrap();
    let seen = collect_until(&mut again, is_synced).await;
    assert_eq!(delivered(&seen, 1), (5..=10).collect::<Vec<_>>());
    assert_eq!(
        again.state().cursor,
        world.lock().unwrap().next_pos,
        "all taken: the cursor is the head"
    );
    resumed.close().await;
    // Draining what was queued at close brings its state to the one close returned.
    while events.recv().await.is_some() {}
    assert_eq!(events.state(), state_at_close);
}

#[tokio::test]
async fn sync_pages_deliver_every_message_once_in_order() {
    let (addr, world) = start_fake(world_with(&[(1, 10), (2, 5)], 3)).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, is_synced).await;

    assert!(matches!(seen[0], ClientEvent::Connected { .. }));
    assert_eq!(delivered(&seen, 1), (1..=10).collect::<Vec<_>>());
    assert_eq!(delivered(&seen, 2), (1..=5).collect::<Vec<_>>());
    let head = world.lock().unwrap().next_pos;
    assert_eq!(seen.last(), Some(&ClientEvent::Synced { cursor: head }));
    let syncs = world
        .lock()
        .unwrap()
        .commands
        .iter()
        .filter(|c| *c == "sync")
        .count();
    assert_eq!(syncs, 5, "15 messages in pages of 3");

    // A live message after the sync is delivered and moves the cursor.
    let message = {
        let mut w = world.lock().unwrap();
        let m = w.commit(2, None, "live");
        w.push(&m);
        m
    };
    let seen = collect_until(&mut events, |e| matches!(e, ClientEvent::Message(_))).await;
    assert_eq!(delivered(&seen, 2), [6]);
    let state = client.close().await;
    assert_eq!(state.cursor, message.pos);
    assert_eq!(state.delivered, HashMap::from([(1, 10), (2, 6)]));
}

/// The first sync of every connection goes right after the upgrade, before the hello (protocol.md
/// §9.4): a server slow to say hello costs no extra round trip.
#[tokio::test]
async fn every_connection_syncs_without_waiting_for_the_hello() {
    let mut w = world_with(&[(1, 6)], 4);
    w.hold_hello = true;
    let (addr, world) = start_fake(w).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    let started = std::time::Instant::now();
    let seen = collect_until(&mut events, is_synced).await;
    assert_eq!(delivered(&seen, 1), (1..=6).collect::<Vec<_>>());
    assert!(
        started.elapsed() < HELLO_HELD_AT_MOST,
        "the fake waited for a first frame that never came"
    );
    assert_eq!(world.lock().unwrap().before_hello, ["sync"]);

    // Away while two more messages come; back on a new connection, from the cursor it had.
    {
        let mut w = world.lock().unwrap();
        w.commit(1, None, "7");
        w.commit(1, None, "8");
        for conn in w.conns.drain(..) {
            let _ = conn.send(Out::Drop);
        }
    }
    let seen = collect_until(&mut events, is_synced).await;
    assert_eq!(delivered(&seen, 1), [7, 8]);
    assert_eq!(world.lock().unwrap().before_hello, ["sync", "sync"]);
    let state = client.close().await;
    assert_eq!(state.delivered, HashMap::from([(1, 8)]));
}

#[tokio::test]
async fn a_missed_push_is_filled_from_history() {
    let (addr, world) = start_fake(world_with(&[(1, 2)], 10)).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    collect_until(&mut events, is_synced).await;

    {
        let mut w = world.lock().unwrap();
        w.hidden_pushes.extend([(1, 3), (1, 4)]);
        for text in ["3", "4", "5"] {
            let m = w.commit(1, None, text);
            w.push(&m);
        }
    }
    let seen = collect_until(
        &mut events,
        |e| matches!(e, ClientEvent::Message(m) if m.seq == 5),
    )
    .await;
    assert_eq!(delivered(&seen, 1), [3, 4, 5]);
    assert!(
        world
            .lock()
            .unwrap()
            .commands
            .contains(&"history".to_string())
    );
    let state = client.close().await;
    assert_eq!(state.delivered, HashMap::from([(1, 5)]));
    assert_eq!(state.cursor, world.lock().unwrap().next_pos);
}

#[tokio::test]
async fn pushes_during_sync_are_deduped() {
    let mut w = world_with(&[(1, 9)], 2);
    w.push_during_sync = true;
    let (addr, _world) = start_fake(w).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, is_synced).await;
    assert_eq!(delivered(&seen, 1), (1..=9).collect::<Vec<_>>());
    client.close().await;
}

#[tokio::test]
async fn a_send_survives_a_dropped_connection_without_duplicating() {
    let mut w = world_with(&[(1, 1)], 10);
    w.drop_after_commit = 1;
    let (addr, world) = start_fake(w).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    collect_until(&mut events, is_synced).await;

    let content = Content::Text { text: "hi".into() };
    let ack = tokio::time::timeout(WAIT, client.send(1, content, None))
        .await
        .expect("send timed out")
        .expect("send failed");
    assert!(
        ack.duplicate,
        "the first attempt was committed, the retry is a duplicate"
    );
    assert_eq!(ack.seq, 2);
    let sent = world.lock().unwrap().sent_ids.clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1], "retries reuse the client_msg_id");
    assert_eq!(world.lock().unwrap().connections, 2);

    // The message itself arrives once, whether by push before the drop or by the resync.
    let seen = collect_until(&mut events, is_synced).await;
    let state = client.close().await;
    let mut rest = Vec::new();
    while let Some(event) = events.recv().await {
        rest.push(event);
    }
    let all: Vec<ClientEvent> = seen.into_iter().chain(rest).collect();
    assert_eq!(delivered(&all, 1), [2]);
    assert_eq!(state.delivered, HashMap::from([(1, 2)]));
    assert!(all.iter().any(|e| matches!(
        e,
        ClientEvent::Disconnected {
            reconnecting: true,
            ..
        }
    )));
}

#[tokio::test]
async fn a_revoked_token_stops_the_client() {
    let mut w = world_with(&[], 10);
    w.revoke = true;
    let (addr, world) = start_fake(w).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        seen.last(),
        Some(ClientEvent::Disconnected {
            code: Some(4001),
            reconnecting: false,
            ..
        })
    ));
    // The channel ends, and sends fail with the reason.
    let end = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
    assert!(end.is_none());
    let err = client
        .send(1, Content::Text { text: "x".into() }, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Disconnected {
                code: Some(4001),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        world.lock().unwrap().connections,
        1,
        "no reconnect after revocation"
    );
}

#[tokio::test]
async fn a_refused_handshake_stops_the_client() {
    let mut w = world_with(&[], 10);
    w.reject = true;
    let (addr, _world) = start_fake(w).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    let mut events = client.events().unwrap();
    // Waiting for a connection ends with the refusal, even before the events are read.
    let err = tokio::time::timeout(WAIT, client.wait_connected())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    let seen = collect_until(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        seen.last(),
        Some(ClientEvent::Disconnected {
            reconnecting: false,
            ..
        })
    ));
}

#[tokio::test]
async fn a_resumed_client_delivers_only_what_is_new() {
    let w = world_with(&[(1, 5)], 10);
    let third = w.messages[&1][2].pos;
    let (addr, _world) = start_fake(w).await;
    let state = ClientState {
        cursor: third,
        delivered: HashMap::from([(1, 3)]),
    };
    let mut client = Client::start(config(vec![addr]).with_state(state)).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, is_synced).await;
    assert_eq!(delivered(&seen, 1), [4, 5]);
    client.close().await;
}

#[tokio::test]
async fn a_cursor_without_delivered_seqs_redelivers_from_seq_one() {
    let w = world_with(&[(1, 5)], 10);
    let third = w.messages[&1][2].pos;
    let (addr, _world) = start_fake(w).await;
    let state = ClientState {
        cursor: third,
        delivered: HashMap::new(),
    };
    let mut client = Client::start(config(vec![addr]).with_state(state)).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(
        &mut events,
        |e| matches!(e, ClientEvent::Message(m) if m.seq == 5),
    )
    .await;
    assert_eq!(delivered(&seen, 1), [1, 2, 3, 4, 5]);
    client.close().await;
}

#[tokio::test]
async fn a_cursor_the_server_never_issued_starts_the_client_over() {
    let w = world_with(&[(1, 5)], 2);
    let (addr, world) = start_fake(w).await;
    // Saved against another deployment: a cursor far beyond this server's, seqs it never sent.
    let state = ClientState {
        cursor: 1_000_000,
        delivered: HashMap::from([(1, 9)]),
    };
    let mut client = Client::start(config(vec![addr]).with_state(state)).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, is_synced).await;
    let head = world.lock().unwrap().next_pos;
    let resets: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Reset { .. }))
        .collect();
    assert!(
        matches!(resets[..], [ClientEvent::Reset { cursor: 1_000_000, server_cursor }] if *server_cursor == head),
        "{seen:#?}"
    );
    assert_eq!(delivered(&seen, 1), [1, 2, 3, 4, 5]);
    let state = client.close().await;
    assert_eq!((state.cursor, state.delivered(1)), (head, 5));
}

#[tokio::test]
async fn unreachable_servers_are_skipped() {
    let (addr, _world) = start_fake(world_with(&[(1, 1)], 10)).await;
    // Port 1 on loopback refuses connections: the client moves on to the next address.
    let mut client = Client::start(config(vec!["127.0.0.1:1".into(), addr.clone()])).unwrap();
    let mut events = client.events().unwrap();
    let seen = collect_until(&mut events, is_synced).await;
    assert!(matches!(&seen[0], ClientEvent::Connected { server, .. } if *server == addr));
    assert!(client.is_connected());
    client.close().await;
}

/// Pushes lost at random, connections dropped now and then, sends in flight throughout: every
/// message still arrives exactly once and in order, and every send is acknowledged.
#[tokio::test]
async fn chaos_still_delivers_exactly_once_in_order() {
    use rand::{Rng, SeedableRng};
    let (addr, world) = start_fake(world_with(&[(1, 3), (2, 3), (3, 3)], 4)).await;
    let mut config = config(vec![addr]);
    config.send_window = 4;
    let mut client = Client::start(config).unwrap();
    let mut events = client.events().unwrap();
    let client = Arc::new(client);

    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..30 {
                let content = Content::Text {
                    text: format!("mine {i}"),
                };
                acks.push(client.send(1 + i % 3, content, None).await);
            }
            acks
        })
    };
    let writer = {
        let world = world.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            for i in 0..150u64 {
                {
                    let mut w = world.lock().unwrap();
                    let conversation_id = rng.random_range(1..=3);
                    let m = w.commit(conversation_id, None, &format!("other {i}"));
                    if rng.random_bool(0.2) {
                        w.hidden_pushes.insert((m.conversation_id, m.seq));
                    }
                    w.push(&m);
                    if i % 40 == 39 {
                        for conn in &w.conns {
                            let _ = conn.send(Out::Drop);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // A lost push is noticed when a later message shows the gap: end each
            // conversation with one that gets through.
            let mut w = world.lock().unwrap();
            for conversation_id in 1..=3 {
                let m = w.commit(conversation_id, None, "last");
                w.push(&m);
            }
        })
    };
    writer.await.unwrap();
    let acks = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");

    let totals: HashMap<ConversationId, Seq> = {
        let w = world.lock().unwrap();
        w.messages
            .iter()
            .map(|(&id, list)| (id, list.len() as Seq))
            .collect()
    };
    let mut got: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
    let done = |got: &HashMap<ConversationId, Vec<Seq>>| {
        totals
            .iter()
            .all(|(id, &n)| got.get(id).and_then(|v| v.last()).copied() == Some(n))
    };
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !done(&got) {
            match events.recv().await {
                Some(ClientEvent::Message(m)) => {
                    got.entry(m.conversation_id).or_default().push(m.seq)
                }
                Some(ClientEvent::Skipped { .. }) => panic!("nothing should be skipped"),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "not everything arrived: {got:?} of {totals:?}"
    );
    for (id, &n) in &totals {
        assert_eq!(got[id], (1..=n).collect::<Vec<_>>(), "conversation {id}");
    }
    let client = Arc::into_inner(client).unwrap();
    let state = client.close().await;
    assert_eq!(state.delivered, totals);
}

/// A slow application with a tiny queue still gets everything, in order: the client stops
/// reading instead of buffering without bound.
#[tokio::test]
async fn a_slow_application_gets_everything_in_order() {
    let (addr, _world) = start_fake(world_with(&[(1, 120), (2, 80)], 25)).await;
    let mut config = config(vec![addr]);
    config.event_capacity = 4;
    let mut client = Client::start(config).unwrap();
    let mut events = client.events().unwrap();
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if seen.len() % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let done = is_synced(&event);
            seen.push(event);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(result.is_ok());
    assert_eq!(delivered(&seen, 1), (1..=120).collect::<Vec<_>>());
    assert_eq!(delivered(&seen, 2), (1..=80).collect::<Vec<_>>());
    client.close().await;
}

/// The state returned by `close` covers exactly the events handed over: after draining the
/// channel, a client resumed from it continues where the drained events stopped.
#[tokio::test]
async fn the_closing_state_matches_the_events_handed_over() {
    let (addr, _world) = start_fake(world_with(&[(1, 60), (2, 60)], 10)).await;
    let mut first = config(vec![addr.clone()]);
    first.event_capacity = 8;
    let mut client = Client::start(first).unwrap();
    let mut events = client.events().unwrap();
    let mut seen = collect_until(
        &mut events,
        |e| matches!(e, ClientEvent::Message(m) if m.conversation_id == 1 && m.seq == 20),
    )
    .await;
    let state = client.close().await;
    while let Some(event) = events.recv().await {
        seen.push(event);
    }
    for id in [1, 2] {
        let got = delivered(&seen, id);
        assert_eq!(got, (1..=got.len() as Seq).collect::<Vec<_>>());
        assert_eq!(state.delivered(id), got.len() as Seq, "conversation {id}");
    }

    // Resume: the rest arrives, nothing twice.
    let mut client = Client::start(config(vec![addr]).with_state(state)).unwrap();
    let mut events = client.events().unwrap();
    let rest = collect_until(&mut events, is_synced).await;
    for id in [1, 2] {
        let mut all = delivered(&seen, id);
        all.extend(delivered(&rest, id));
        assert_eq!(all, (1..=60).collect::<Vec<_>>(), "conversation {id}");
    }
    client.close().await;
}

/// Dropping the event receiver is how a send-only user says it wants no events; the client
/// keeps working and its state keeps up.
#[tokio::test]
async fn dropping_the_events_keeps_the_client_going() {
    let (addr, _world) = start_fake(world_with(&[(1, 50)], 10)).await;
    let mut client = Client::start(config(vec![addr])).unwrap();
    drop(client.events());
    let ack = tokio::time::timeout(
        WAIT,
        client.send(1, Content::Text { text: "hi".into() }, None),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ack.seq, 51);
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.state().delivered(1) < 51 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            client.state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.close().await;
}

/// A send-only client does not sync, but its sends work.
#[tokio::test]
async fn a_send_only_client_does_not_sync() {
    let (addr, world) = start_fake(world_with(&[(1, 5)], 10)).await;
    let mut config = config(vec![addr]);
    config.sync = false;
    let mut client = Client::start(config).unwrap();
    let mut events = client.events().unwrap();
    let ack = tokio::time::timeout(
        WAIT,
        client.send(1, Content::Text { text: "hi".into() }, None),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ack.seq, 6);
    let state = client.close().await;
    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        seen.push(event);
    }
    assert!(delivered(&seen, 1).is_empty(), "{seen:?}");
    assert_eq!(state, ClientState::default());
    assert!(!world.lock().unwrap().commands.contains(&"sync".to_string()));
}
