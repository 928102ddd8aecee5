//! Encode/decode of the frames on Natter's hot paths, in both encodings (JSON text frames and
//! Protocol Buffers binary frames): a `send` command in, its ack out, a `message` event out
//! (encoded once per event and encoding, then fanned out), and a full sync page. Each benchmark
//! is named `…/json/…` or `…/proto/…` and calls what the server (or, for the client's side, the
//! SDKs) calls for that encoding.
//!
//!     cargo bench -p natter-proto --bench frames

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use natter_proto::{
    Ack, ClientFrame, Command, Content, Conversation, ConversationKind, EventRef, Member, Message,
    Role, ServerFrame, SyncPage, encode_result, encode_result_proto,
};

/// A client message id shaped as the SDKs make them: 32 hex digits.
const CLIENT_MSG_ID: &str = "0193a8c1f2e04b7d9c5a1e3f7b2d4c6e";

fn text(bytes: usize) -> String {
    let mut t = String::from("nb 123456789 42 ");
    while t.len() < bytes {
        t.push('x');
    }
    t
}

fn message(seq: u64, bytes: usize) -> Message {
    Message {
        conversation_id: 1234,
        seq,
        pos: 1_000_000 + seq,
        sender_id: 77,
        client_msg_id: Some(CLIENT_MSG_ID.into()),
        content: Content::Text { text: text(bytes) },
        reply_to: None,
        sent_at_ms: 1_763_900_000_000,
    }
}

fn send_command(bytes: usize) -> ClientFrame {
    ClientFrame {
        id: 42,
        command: Command::Send {
            conversation_id: 1234,
            client_msg_id: CLIENT_MSG_ID.into(),
            content: Content::Text { text: text(bytes) },
            reply_to: None,
        },
    }
}

fn sync_page(messages: usize) -> SyncPage {
    let members = (0..2)
        .map(|i| Member {
            user_id: 77 + i,
            username: format!("user{i}"),
            display_name: format!("User {i}"),
            role: Role::Member,
            delivered_seq: 10,
            read_seq: 9,
        })
        .collect();
    SyncPage {
        cursor: 2_000_000,
        more: true,
        conversations: vec![Conversation {
            id: 1234,
            kind: ConversationKind::Direct,
            title: None,
            members,
            last_seq: messages as u64,
            last_pos: 1_000_000 + messages as u64,
            created_at_ms: 1_763_900_000_000,
            last_activity_at_ms: 1_763_900_000_000,
            last_message: Some(message(messages as u64, 64)),
            unread_count: Some(3),
        }],
        messages: (1..=messages as u64).map(|s| message(s, 64)).collect(),
    }
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("command");
    for bytes in [64usize, 1024] {
        let frame = send_command(bytes);
        let json = frame.encode_json();
        let proto = frame.encode_proto();
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(format!("send/json/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&frame).encode_json())
        });
        group.bench_function(format!("send/json/decode/{bytes}B"), |b| {
            b.iter(|| ClientFrame::decode_json(black_box(&json)))
        });
        group.throughput(Throughput::Bytes(proto.len() as u64));
        group.bench_function(format!("send/proto/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&frame).encode_proto())
        });
        group.bench_function(format!("send/proto/decode/{bytes}B"), |b| {
            b.iter(|| ClientFrame::decode_proto(black_box(&proto)))
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    let ack = Ack {
        conversation_id: 1234,
        client_msg_id: CLIENT_MSG_ID.into(),
        seq: 42,
        pos: 1_000_042,
        sent_at_ms: 1_763_900_000_000,
        duplicate: false,
    };
    group.bench_function("ack/json/encode", |b| {
        b.iter(|| encode_result(black_box(42), black_box(&ack)))
    });
    // The server hands its ack over by value, so that its strings move into the message.
    group.bench_function("ack/proto/encode", |b| {
        b.iter_batched(
            || ack.clone(),
            |ack| encode_result_proto(black_box(42), ack),
            BatchSize::SmallInput,
        )
    });
    for bytes in [64usize, 1024] {
        let message = message(42, bytes);
        let event = EventRef::Message {
            cursor: 1_000_042,
            message: &message,
        };
        let json = event.encode_json();
        let proto = event.encode_proto();
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(format!("message/json/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&event).encode_json())
        });
        group.bench_function(format!("message/json/decode/{bytes}B"), |b| {
            b.iter(|| ServerFrame::decode_json(black_box(&json)))
        });
        group.throughput(Throughput::Bytes(proto.len() as u64));
        group.bench_function(format!("message/proto/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&event).encode_proto())
        });
        group.bench_function(format!("message/proto/decode/{bytes}B"), |b| {
            b.iter(|| ServerFrame::decode_proto(black_box(&proto)))
        });
    }
    group.finish();
}

fn sync_pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_page");
    group.sample_size(30);
    let page = sync_page(500);
    let json = encode_result(7, &page);
    let proto = encode_result_proto(7, page.clone());
    group.throughput(Throughput::Elements(500));
    group.bench_function("json/encode/500", |b| {
        b.iter(|| encode_result(7, black_box(&page)))
    });
    group.bench_function("json/decode/500", |b| {
        b.iter(|| ServerFrame::decode_json(black_box(&json)))
    });
    // By value, as the server's store hands it over; the clone is the batch's setup, not timed.
    group.bench_function("proto/encode/500", |b| {
        b.iter_batched(
            || page.clone(),
            |page| encode_result_proto(7, page),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("proto/decode/500", |b| {
        b.iter(|| ServerFrame::decode_proto(black_box(&proto)))
    });
    group.finish();
}

criterion_group!(benches, commands, events, sync_pages);
criterion_main!(benches);
