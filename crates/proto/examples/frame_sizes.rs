//! Bytes per frame in each encoding, for typical frames, and the time to encode and decode them.
//!
//! `cargo run --release -p natter-proto --example frame_sizes` prints the tables of the
//! "Binary encoding (Protocol Buffers)" section of docs/protocol.md. The sizes do not depend on the
//! build; the timings do (use `--release`), and are one core's single-threaded loop, indicative
//! only: the server's CPU per delivered message is measured end to end by natter-bench.

use std::hint::black_box;
use std::time::Instant;

use natter_proto::*;

const CLIENT_MSG_ID: &str = "9f2c4e7a1b3d5f60718293a4b5c6d7e8"; // 32 hex digits, as natter-client makes
const TEXT: &str = "On my way, see you in ten minutes!";
const SENT_AT_MS: u64 = 1_760_000_000_000;

fn message(seq: Seq) -> Message {
    Message {
        conversation_id: 4821,
        seq,
        pos: 2_914_337 + seq,
        sender_id: 10_042,
        client_msg_id: Some(CLIENT_MSG_ID.into()),
        content: Content::Text { text: TEXT.into() },
        reply_to: None,
        sent_at_ms: SENT_AT_MS + seq,
    }
}

fn main() {
    let message = message(1537);
    let ack = Ack {
        conversation_id: 4821,
        client_msg_id: CLIENT_MSG_ID.into(),
        seq: 1537,
        pos: 2_915_874,
        sent_at_ms: SENT_AT_MS,
        duplicate: false,
    };
    let send = ClientFrame {
        id: 118,
        command: Command::Send {
            conversation_id: 4821,
            client_msg_id: CLIENT_MSG_ID.into(),
            content: Content::Text { text: TEXT.into() },
            reply_to: None,
        },
    };
    let receipt = Receipt {
        conversation_id: 4821,
        user_id: 10_043,
        delivered_seq: 1537,
        read_seq: 1537,
        pos: 2_915_875,
    };
    let presence = Presence {
        user_id: 10_043,
        online: false,
        last_seen_at_ms: Some(SENT_AT_MS),
    };
    let history = HistoryPage {
        messages: (1488..1538).map(self::message).collect(),
        more: true,
    };
    let event = EventRef::Message {
        cursor: message.pos,
        message: &message,
    };

    println!("| frame | JSON bytes | protobuf bytes | protobuf / JSON |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, json: usize, proto: usize| {
        println!(
            "| {name} | {json} | {proto} | {:.0} % |",
            100.0 * proto as f64 / json as f64
        );
    };
    row(
        &format!("`send` command ({}-byte text)", TEXT.len()),
        send.encode_json().len(),
        send.encode_proto().len(),
    );
    row(
        "`result` of `send` (ack)",
        encode_result(118, &ack).len(),
        encode_result_proto(118, ack.clone()).len(),
    );
    row(
        "`message` event (each recipient)",
        event.encode_json().len(),
        event.encode_proto().len(),
    );
    let receipt_event = EventRef::Receipt {
        cursor: receipt.pos,
        receipt: &receipt,
    };
    row(
        "`receipt` event",
        receipt_event.encode_json().len(),
        receipt_event.encode_proto().len(),
    );
    let typing = EventRef::Typing {
        conversation_id: 4821,
        user_id: 10_043,
        active: true,
        ttl_ms: 5000,
    };
    row(
        "`typing` event",
        typing.encode_json().len(),
        typing.encode_proto().len(),
    );
    let presence_event = EventRef::Presence(&presence);
    row(
        "`presence` event",
        presence_event.encode_json().len(),
        presence_event.encode_proto().len(),
    );
    row(
        "`result` of `history`, 50 messages",
        encode_result(119, &history).len(),
        encode_result_proto(119, history.clone()).len(),
    );

    println!();
    println!("| one `message` event | JSON | protobuf |");
    println!("|---|---:|---:|");
    let json = event.encode_json();
    let proto = event.encode_proto();
    let rounds = 200_000;
    let encode_json = time(rounds, || black_box(black_box(&event).encode_json()).len());
    let encode_proto = time(rounds, || black_box(black_box(&event).encode_proto()).len());
    let decode_json = time(rounds, || {
        ServerFrame::decode_json(black_box(&json)).is_ok() as usize
    });
    let decode_proto = time(rounds, || {
        ServerFrame::decode_proto(black_box(&proto)).is_ok() as usize
    });
    println!("| encode (server, once per event) | {encode_json:.0} ns | {encode_proto:.0} ns |");
    println!("| decode (client, as `ServerFrame`) | {decode_json:.0} ns | {decode_proto:.0} ns |");
}

/// Mean nanoseconds per call over `rounds` calls, after a warm-up.
fn time(rounds: u32, mut f: impl FnMut() -> usize) -> f64 {
    let mut sink = 0;
    for _ in 0..rounds / 10 {
        sink += f();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        sink += f();
    }
    black_box(sink);
    started.elapsed().as_nanos() as f64 / rounds as f64
}
