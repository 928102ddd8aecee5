//! JSON encode/decode of the frames on Natter's hot paths: a `send` command in, its ack out, a
//! `message` event out (encoded once per event, then fanned out), and a full sync page.
//!
//!     cargo bench -p natter-proto --bench frames

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use natter_proto::{
    Ack, ClientFrame, Command, Content, Conversation, ConversationKind, Member, Message, Role,
    ServerFrame, SyncPage, encode_result,
};

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
        client_msg_id: Some(format!("c-{seq}")),
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
            client_msg_id: "c-42".into(),
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
        let wire = frame.encode_json();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("send/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&frame).encode_json())
        });
        group.bench_function(format!("send/decode/{bytes}B"), |b| {
            b.iter(|| ClientFrame::decode_json(black_box(&wire)))
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    let ack = Ack {
        conversation_id: 1234,
        client_msg_id: "c-42".into(),
        seq: 42,
        pos: 1_000_042,
        sent_at_ms: 1_763_900_000_000,
        duplicate: false,
    };
    group.bench_function("ack/encode", |b| {
        b.iter(|| encode_result(black_box(42), black_box(&ack)))
    });
    for bytes in [64usize, 1024] {
        let event = ServerFrame::Message {
            cursor: 1_000_042,
            message: message(42, bytes),
        };
        let wire = event.encode_json();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("message/encode/{bytes}B"), |b| {
            b.iter(|| black_box(&event).encode_json())
        });
        group.bench_function(format!("message/decode/{bytes}B"), |b| {
            b.iter(|| ServerFrame::decode_json(black_box(&wire)))
        });
    }
    group.finish();
}

fn sync_pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_page");
    group.sample_size(30);
    let page = sync_page(500);
    let wire = encode_result(7, &page);
    group.throughput(Throughput::Elements(500));
    group.bench_function("encode/500", |b| {
        b.iter(|| encode_result(7, black_box(&page)))
    });
    group.bench_function("decode/500", |b| {
        b.iter(|| ServerFrame::decode_json(black_box(&wire)))
    });
    group.finish();
}

criterion_group!(benches, commands, events, sync_pages);
criterion_main!(benches);
