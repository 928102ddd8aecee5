//! The randomized delivery checker (D1–D4), in the spirit of Jepsen's.
//!
//! Eleven devices of eight users in three groups and a direct chat send at random, re-send
//! acknowledged ids, and drop and resume their sessions, while the server is killed with SIGKILL
//! twice and restarted on the same data directory. At the end every acknowledged message must
//! have reached every member device exactly once, in `seq` order, with one order for all.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_client::{Client, ClientConfig, ClientEvent};
use natter_proto::{Ack, Content, ConversationId, CreateConversationRequest, Seq, UserId};
use rand::{Rng, SeedableRng};

use crate::harness::Server;

/// How long the devices send for; the server is killed at a third and at two thirds of it.
const TRAFFIC: Duration = Duration::from_secs(15);
/// How long the devices may take to converge once the traffic stops.
const CONVERGENCE: Duration = Duration::from_secs(90);

/// What one device received, in arrival order: (conversation, seq, client id, sender).
type Received = Arc<Mutex<Vec<(ConversationId, Seq, Option<String>, UserId)>>>;

struct Device {
    name: String,
    user: UserId,
    token: String,
    conversations: Vec<ConversationId>,
    received: Received,
}

/// One delivered message as a device saw it: (seq, client id, sender).
type Delivery = (Seq, Option<String>, UserId);

/// Every acknowledgement, by (sender, client id).
type Acks = Arc<Mutex<HashMap<(UserId, String), Ack>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_reach_every_member_device_once_in_order_across_kills() {
    let mut server = Server::start("delivery", &["--sends-per-second", "10000"]);
    let url = server.url();
    let chaos = async move {
        // Two kills, mid-traffic, on the same data directory and port.
        for _ in 0..2 {
            tokio::time::sleep(TRAFFIC / 3).await;
            server = tokio::task::spawn_blocking(move || {
                server.kill();
                std::thread::sleep(Duration::from_millis(200));
                server.restart();
                server
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(TRAFFIC / 3).await;
        server
    };
    let (report, _server) = check_delivery(vec![url], chaos).await;
    eprintln!("delivery checker, one node, 2 kills: {report}");
}

/// Run the checker's traffic against `urls` (every device knows them all, starting at a
/// different one) while `chaos` runs; traffic stops when `chaos` ends. Panics on any violation;
/// returns a summary and what `chaos` returned.
pub async fn check_delivery<T>(
    urls: Vec<String>,
    chaos: impl std::future::Future<Output = T>,
) -> (String, T) {
    let rest = natter_client::RestClient::new(&urls[0]).expect("rest client");
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(
            rest.register(&natter_proto::RegisterRequest {
                username: format!("user{i}"),
                password: "password-1".into(),
                display_name: None,
                device_name: None,
            })
            .await
            .expect("register"),
        );
    }
    let authed = |i: usize| rest.clone().with_token(&users[i].token);
    let group = |owner: usize, members: &[usize], title: &str| {
        let member_ids: Vec<UserId> = members.iter().map(|m| users[*m].user.id).collect();
        let request = CreateConversationRequest::Group {
            title: title.into(),
            member_ids,
        };
        let client = authed(owner);
        async move { client.create_conversation(&request).await.unwrap().id }
    };
    let g1 = group(0, &[1, 2, 3], "g1").await;
    let g2 = group(3, &[4, 5], "g2").await;
    let g3 = group(5, &[6, 7, 0], "g3").await;
    let direct = authed(1)
        .create_conversation(&CreateConversationRequest::Direct {
            user_id: users[6].user.id,
        })
        .await
        .unwrap()
        .id;
    let membership: HashMap<ConversationId, Vec<usize>> = HashMap::from([
        (g1, vec![0, 1, 2, 3]),
        (g2, vec![3, 4, 5]),
        (g3, vec![5, 6, 7, 0]),
        (direct, vec![1, 6]),
    ]);

    // Users 0, 3 and 5 have a second device.
    let mut devices = Vec::new();
    for (i, login) in users.iter().enumerate() {
        let mut tokens = vec![login.token.clone()];
        if [0, 3, 5].contains(&i) {
            let second = rest
                .login(&natter_proto::LoginRequest {
                    username: login.user.username.clone(),
                    password: "password-1".into(),
                    device_name: Some("second".into()),
                })
                .await
                .expect("login");
            tokens.push(second.token);
        }
        for (d, token) in tokens.into_iter().enumerate() {
            devices.push(Device {
                name: format!("u{i}d{d}"),
                user: login.user.id,
                token,
                conversations: membership
                    .iter()
                    .filter(|(_, members)| members.contains(&i))
                    .map(|(id, _)| *id)
                    .collect(),
                received: Received::default(),
            });
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Acks::default();
    let mut tasks = Vec::new();
    for (n, device) in devices.iter().enumerate() {
        let mut device_urls = urls.clone();
        device_urls.rotate_left(n % urls.len());
        tasks.push(tokio::spawn(run_device(
            device_urls,
            device.name.clone(),
            device.user,
            device.token.clone(),
            device.conversations.clone(),
            device.received.clone(),
            acks.clone(),
            stop.clone(),
        )));
    }

    let chaos_result = chaos.await;
    stop.store(true, Ordering::Relaxed);
    let mut stats = Vec::new();
    for task in tasks {
        stats.push(task.await.expect("device task"));
    }
    let acks = acks.lock().unwrap().clone();
    let duplicates_checked: usize = stats.iter().map(|s| s.duplicates).sum();
    let resumes: usize = stats.iter().map(|s| s.resumes).sum();
    assert!(acks.len() > 100, "too little traffic: {} acks", acks.len());
    assert!(duplicates_checked > 0 && resumes > 0);

    // Converge: every device must see every acknowledged message of its conversations.
    let expected: Vec<(ConversationId, Seq)> =
        acks.values().map(|a| (a.conversation_id, a.seq)).collect();
    let deadline = tokio::time::Instant::now() + CONVERGENCE;
    loop {
        let missing: usize = devices
            .iter()
            .map(|d| {
                let got: HashSet<(ConversationId, Seq)> = d
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(c, s, _, _)| (*c, *s))
                    .collect();
                expected
                    .iter()
                    .filter(|(c, s)| d.conversations.contains(c) && !got.contains(&(*c, *s)))
                    .count()
            })
            .sum();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} acknowledged deliveries still missing after {CONVERGENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One order for all: per conversation, every member device saw the same sequence, from
    // seq 1 with no gap and no repeat, and it holds each acknowledged message at its seq.
    let by_id: HashMap<(ConversationId, Seq), &Ack> = acks
        .values()
        .map(|a| ((a.conversation_id, a.seq), a))
        .collect();
    for conversation in membership.keys() {
        let mut reference: Option<(String, Vec<Delivery>)> = None;
        for device in devices
            .iter()
            .filter(|d| d.conversations.contains(conversation))
        {
            let seen: Vec<Delivery> = device
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|(c, ..)| c == conversation)
                .map(|(_, s, id, sender)| (*s, id.clone(), *sender))
                .collect();
            let seqs: Vec<Seq> = seen.iter().map(|(s, ..)| *s).collect();
            let want: Vec<Seq> = (1..=seqs.len() as Seq).collect();
            assert_eq!(
                seqs, want,
                "{}: conversation {conversation} out of order",
                device.name
            );
            for (seq, client_msg_id, _) in &seen {
                if let Some(ack) = by_id.get(&(*conversation, *seq)) {
                    assert_eq!(client_msg_id.as_deref(), Some(ack.client_msg_id.as_str()));
                }
            }
            // Trailing messages past the last ack cannot exist: every send was awaited.
            let newest_acked = by_id
                .keys()
                .filter(|(c, _)| c == conversation)
                .map(|(_, s)| *s)
                .max()
                .unwrap_or(0);
            assert!(seqs.len() as Seq >= newest_acked);
            match &reference {
                None => reference = Some((device.name.clone(), seen)),
                Some((name, first)) => {
                    let common = first.len().min(seen.len());
                    assert_eq!(
                        first[..common],
                        seen[..common],
                        "{} and {name} disagree on conversation {conversation}",
                        device.name
                    );
                }
            }
        }
    }
    // No device heard of a conversation it is not in.
    for device in &devices {
        for (conversation, ..) in device.received.lock().unwrap().iter() {
            assert!(
                device.conversations.contains(conversation),
                "{} leaked",
                device.name
            );
        }
    }
    let delivered: usize = devices
        .iter()
        .map(|d| d.received.lock().unwrap().len())
        .sum();
    let report = format!(
        "{} acks, {delivered} deliveries, {duplicates_checked} duplicate sends, {resumes} resumes",
        acks.len()
    );
    (report, chaos_result)
}

#[derive(Default)]
struct DeviceStats {
    duplicates: usize,
    resumes: usize,
}

#[allow(clippy::too_many_arguments)]
async fn run_device(
    urls: Vec<String>,
    name: String,
    user: UserId,
    token: String,
    conversations: Vec<ConversationId>,
    received: Received,
    acks: Acks,
    stop: Arc<AtomicBool>,
) -> DeviceStats {
    let mut stats = DeviceStats::default();
    let mut sent: Vec<(ConversationId, String, Seq)> = Vec::new();
    let mut counter = 0u64;
    let mut state = None;
    let mut seeded = rand::rngs::StdRng::from_rng(&mut rand::rng());
    loop {
        let mut config = ClientConfig::new(urls.clone(), token.clone());
        config.state = state.take();
        let mut client = Client::start(config).expect("client starts");
        let mut events = client.events().expect("event receiver");
        let sink = received.clone();
        let device_name = name.clone();
        let collector = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    ClientEvent::Message(m) => {
                        sink.lock().unwrap().push((
                            m.conversation_id,
                            m.seq,
                            m.client_msg_id.clone(),
                            m.sender_id,
                        ));
                    }
                    ClientEvent::Skipped {
                        conversation_id,
                        first,
                        last,
                    } => {
                        panic!("{device_name}: skipped {first}..={last} of {conversation_id}");
                    }
                    _ => {}
                }
            }
        });
        // A session lasts a random while, then the device drops it and resumes from its state.
        let session_sends = seeded.random_range(20..120);
        for _ in 0..session_sends {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let resend = !sent.is_empty() && seeded.random_bool(0.1);
            if resend {
                let (conversation, id, seq) = sent[seeded.random_range(0..sent.len())].clone();
                let ack = client
                    .send_with_id(
                        conversation,
                        id.clone(),
                        Content::Text { text: id.clone() },
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{name}: resend failed: {e}"));
                assert!(ack.duplicate, "{name}: a re-sent id was stored again");
                assert_eq!(ack.seq, seq, "{name}: a re-sent id got another seq");
                stats.duplicates += 1;
            } else {
                counter += 1;
                let id = format!("{name}-{counter}");
                let conversation = conversations[seeded.random_range(0..conversations.len())];
                let ack = client
                    .send_with_id(
                        conversation,
                        id.clone(),
                        Content::Text { text: id.clone() },
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{name}: send failed: {e}"));
                assert_eq!(ack.conversation_id, conversation);
                let previous = acks.lock().unwrap().insert((user, id.clone()), ack.clone());
                assert!(previous.is_none(), "{name}: {id} acknowledged twice");
                sent.push((conversation, id, ack.seq));
            }
            tokio::time::sleep(Duration::from_millis(seeded.random_range(5..40))).await;
        }
        if stop.load(Ordering::Relaxed) {
            // Keep the last session open: it must converge while the checker waits.
            drop(collector);
            tokio::spawn(async move {
                tokio::time::sleep(CONVERGENCE + Duration::from_secs(30)).await;
                drop(client);
            });
            return stats;
        }
        state = Some(client.close().await);
        collector.await.expect("collector");
        stats.resumes += 1;
    }
}
