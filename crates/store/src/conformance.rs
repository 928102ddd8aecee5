//! The store conformance suite: what every `natter_core::Store` must do, engine-independent.
//!
//! Each check takes a fresh, empty store. An engine's tests call [`run_all`] (or single checks)
//! with a factory; the SQLite tests are below, and a cluster engine runs the very same checks.

use std::sync::{Arc, Mutex};

use natter_core::store::{CommitBatch, ConversationStore, MessageStore, NewMessage, SyncRequest};
use natter_core::{Event, Store};
use natter_proto::{Content, ConversationKind, ErrorCode, Role, UserId};

fn text(s: &str) -> Content {
    Content::Text { text: s.into() }
}

async fn user(store: &dyn Store, name: &str) -> UserId {
    store
        .create_user(name, name, "hash", 1)
        .await
        .expect("create user")
        .id
}

/// One conversation's messages with `pos` in `(after, up_to]` (and `seq <= max_seq`).
pub async fn pos_range(
    store: &dyn Store,
    id: u64,
    after: u64,
    up_to: u64,
    max_seq: Option<u64>,
    limit: u32,
) -> Vec<natter_proto::Message> {
    let mut found = store
        .messages_in_pos_ranges(vec![(id, max_seq)], after, up_to, limit)
        .await
        .expect("read a position range");
    assert_eq!(found.len(), 1, "one answer per conversation asked");
    found.pop().unwrap_or_default()
}

fn new_message(conversation_id: u64, sender_id: UserId, client_msg_id: &str) -> NewMessage {
    NewMessage {
        conversation_id,
        sender_id,
        client_msg_id: client_msg_id.into(),
        content: text(client_msg_id),
        reply_to: None,
        sent_at_ms: 5,
    }
}

/// Every check, in order, each on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    usernames_are_unique(&*fresh().await).await;
    tokens_find_their_device_until_revoked(&*fresh().await).await;
    a_direct_conversation_exists_once_per_pair(&*fresh().await).await;
    seq_is_gap_free_and_pos_increases(&*fresh().await).await;
    a_resent_client_msg_id_is_acked_once(&*fresh().await).await;
    only_members_send(&*fresh().await).await;
    roles_guard_membership_changes(&*fresh().await).await;
    a_removed_member_reads_only_what_they_saw(&*fresh().await).await;
    markers_move_forward_only_and_count_unread(&*fresh().await).await;
    history_pages_both_ways(&*fresh().await).await;
    changes_since_a_cursor_are_found(&*fresh().await).await;
    sync_pages_large_and_small_hold_each_message_once(&*fresh().await).await;
    position_ranges_find_exactly_the_messages_between(&*fresh().await).await;
    commits_reach_the_listener_in_order(&*fresh().await).await;
    concurrent_sends_get_distinct_consecutive_seqs(fresh().await).await;
    appends_in_one_group_are_answered_each_on_its_own(fresh().await).await;
}

pub async fn usernames_are_unique(store: &dyn Store) {
    user(store, "alice").await;
    let error = store
        .create_user("alice", "Alice", "hash", 1)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::UsernameTaken);
    let record = store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(record.user.display_name, "alice");
    store.set_user_disabled("alice", true).await.unwrap();
    assert!(
        store
            .user_by_username("alice")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert_eq!(
        store
            .set_user_disabled("nobody", true)
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
}

pub async fn tokens_find_their_device_until_revoked(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let device = store
        .create_device(alice, b"hash-1", "phone", 10)
        .await
        .unwrap();
    let (record, found) = store.device_by_token(b"hash-1").await.unwrap().unwrap();
    assert_eq!((record.user.id, found), (alice, device));
    assert!(store.device_by_token(b"other").await.unwrap().is_none());
    assert_eq!(store.list_devices(alice).await.unwrap().len(), 1);
    let bobs = store
        .create_device(bob, b"hash-2", "laptop", 10)
        .await
        .unwrap();
    let unknown = 1_000_000;
    assert_eq!(
        store
            .refused_among(vec![device, bobs, unknown])
            .await
            .unwrap(),
        vec![unknown]
    );
    // Nobody revokes another user's device.
    assert!(store.revoke_device(bob, device).await.is_err());
    store.revoke_device(alice, device).await.unwrap();
    assert!(store.device_by_token(b"hash-1").await.unwrap().is_none());
    assert!(store.list_devices(alice).await.unwrap().is_empty());
    assert_eq!(
        store.refused_among(vec![device, bobs]).await.unwrap(),
        vec![device]
    );
    // A disabled user's devices are refused too, until the user is enabled again.
    store.set_user_disabled("bob", true).await.unwrap();
    assert_eq!(store.refused_among(vec![bobs]).await.unwrap(), vec![bobs]);
    store.set_user_disabled("bob", false).await.unwrap();
    assert!(store.refused_among(vec![bobs]).await.unwrap().is_empty());
    assert!(store.refused_among(Vec::new()).await.unwrap().is_empty());
}

pub async fn a_direct_conversation_exists_once_per_pair(store: &dyn Store) {
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, created) = store.create_direct(alice, bob, 1).await.unwrap();
    assert!(created);
    let (again, created_again) = store.create_direct(bob, alice, 2).await.unwrap();
    assert_eq!((again, created_again), (id, false));
    let conversation = store.conversation(id, alice).await.unwrap();
    assert_eq!(conversation.kind, ConversationKind::Direct);
    assert_eq!(conversation.members.len(), 2);
    assert!(store.share_conversation(alice, bob).await.unwrap());
}

pub async fn seq_is_gap_free_and_pos_increases(store: &dyn Store) {
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    let mut last_pos = 0;
    for i in 1..=20u64 {
        let sender = if i % 2 == 0 { alice } else { bob };
        let ack = store
            .append(new_message(id, sender, &format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(ack.seq, i);
        assert!(ack.pos > last_pos);
        last_pos = ack.pos;
    }
    assert!(store.head().await.unwrap() >= last_pos);
}

pub async fn a_resent_client_msg_id_is_acked_once(store: &dyn Store) {
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    let first = store.append(new_message(id, alice, "same")).await.unwrap();
    let again = store.append(new_message(id, alice, "same")).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((first.seq, first.pos), (again.seq, again.pos));
    // The id is the sender's: another sender may use the same one.
    let other = store.append(new_message(id, bob, "same")).await.unwrap();
    assert_eq!(other.seq, 2);
    let page = store.history(id, None, None, None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    // A resend is acknowledged as what was stored, whatever it says now: another conversation,
    // a `reply_to` that does not exist, or a sender who has left since.
    let group = store.create_group(alice, "g", &[bob], 2).await.unwrap();
    let mut elsewhere = new_message(group, alice, "same");
    elsewhere.reply_to = Some(99);
    let again = store.append(elsewhere).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.conversation_id, again.seq), (id, first.seq));
    let said = store
        .append(new_message(group, bob, "before"))
        .await
        .unwrap();
    store.remove_member(bob, group, bob, 3).await.unwrap();
    let after_leaving = store
        .append(new_message(group, bob, "before"))
        .await
        .unwrap();
    assert!(after_leaving.duplicate);
    assert_eq!((after_leaving.seq, after_leaving.pos), (said.seq, said.pos));
    let refused = store
        .append(new_message(group, bob, "new"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotMember);
}

pub async fn only_members_send(store: &dyn Store) {
    let (alice, bob, eve) = (
        user(store, "alice").await,
        user(store, "bob").await,
        user(store, "eve").await,
    );
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    let error = store.append(new_message(id, eve, "x")).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotMember);
    assert!(store.membership(id, eve).await.unwrap().is_none());
    let error = store
        .append(new_message(999, alice, "y"))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotMember);
}

pub async fn roles_guard_membership_changes(store: &dyn Store) {
    let (owner, admin, member, outsider) = (
        user(store, "owner").await,
        user(store, "admin").await,
        user(store, "member").await,
        user(store, "outsider").await,
    );
    let id = store
        .create_group(owner, "team", &[admin, member], 1)
        .await
        .unwrap();
    assert_eq!(
        store.conversation(id, owner).await.unwrap().unread_count,
        Some(0),
        "what you did yourself is not unread"
    );
    store
        .set_role(owner, id, admin, Role::Admin, 2)
        .await
        .unwrap();
    let refused = store
        .add_members(member, id, &[outsider], 3)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    store.add_members(admin, id, &[outsider], 3).await.unwrap();
    assert_eq!(
        store.conversation(id, owner).await.unwrap().members.len(),
        4
    );
    let refused = store.remove_member(admin, id, owner, 4).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    let refused = store.remove_member(owner, id, owner, 4).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
    store
        .set_role(owner, id, member, Role::Owner, 5)
        .await
        .unwrap();
    let roles: Vec<(UserId, Role)> = store
        .conversation(id, owner)
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| (m.user_id, m.role))
        .collect();
    assert!(roles.contains(&(member, Role::Owner)));
    assert!(roles.contains(&(owner, Role::Admin)));
    store.remove_member(owner, id, owner, 6).await.unwrap();
    assert!(
        !store
            .membership(id, owner)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    store.set_title(member, id, "renamed", 7).await.unwrap();
    assert_eq!(
        store
            .conversation(id, member)
            .await
            .unwrap()
            .title
            .as_deref(),
        Some("renamed")
    );
}

pub async fn a_removed_member_reads_only_what_they_saw(store: &dyn Store) {
    let (owner, bob) = (user(store, "owner").await, user(store, "bob").await);
    let id = store.create_group(owner, "g", &[bob], 1).await.unwrap();
    store
        .append(new_message(id, owner, "before"))
        .await
        .unwrap();
    store.remove_member(owner, id, bob, 2).await.unwrap();
    store.append(new_message(id, owner, "after")).await.unwrap();
    let left_seq = store.membership(id, bob).await.unwrap().unwrap().left_seq;
    let page = store.history(id, None, None, left_seq, 50).await.unwrap();
    let texts: Vec<Option<&str>> = page.messages.iter().map(|m| m.content.text()).collect();
    assert!(texts.contains(&Some("before")));
    assert!(!texts.contains(&Some("after")));
    assert_eq!(
        store
            .append(new_message(id, bob, "x"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotMember
    );
    assert!(!store.conversation_ids_of(bob).await.unwrap().contains(&id));
    // What the past member sees of the conversation stops at their leaving, counters included.
    let membership = store.membership(id, bob).await.unwrap().unwrap();
    let seen = store.conversation(id, bob).await.unwrap();
    assert_eq!(Some(seen.last_seq), membership.left_seq);
    assert_eq!(seen.last_message.map(|m| m.seq), membership.left_seq);
    assert!(seen.last_pos < store.conversation(id, owner).await.unwrap().last_pos);
    // Who shared a conversation: now, or once.
    let stranger = user(store, "stranger").await;
    assert!(!store.share_conversation(owner, bob).await.unwrap());
    assert!(store.shared_a_conversation(owner, bob).await.unwrap());
    assert!(store.shared_a_conversation(bob, owner).await.unwrap());
    assert!(!store.shared_a_conversation(owner, stranger).await.unwrap());
    assert!(!store.shared_a_conversation(stranger, bob).await.unwrap());
}

pub async fn markers_move_forward_only_and_count_unread(store: &dyn Store) {
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    for i in 0..5 {
        store
            .append(new_message(id, alice, &format!("m{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        store.conversation(id, bob).await.unwrap().unread_count,
        Some(5)
    );
    assert_eq!(
        store.conversation(id, alice).await.unwrap().unread_count,
        Some(0)
    );
    let receipt = store.mark(bob, id, None, Some(3)).await.unwrap();
    assert_eq!((receipt.delivered_seq, receipt.read_seq), (3, 3));
    let back = store.mark(bob, id, Some(1), Some(1)).await.unwrap();
    assert_eq!((back.delivered_seq, back.read_seq), (3, 3));
    let past_end = store.mark(bob, id, Some(99), None).await.unwrap();
    assert_eq!(past_end.delivered_seq, 5);
    assert_eq!(
        store.conversation(id, bob).await.unwrap().unread_count,
        Some(2)
    );
}

pub async fn history_pages_both_ways(store: &dyn Store) {
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    for i in 1..=10 {
        store
            .append(new_message(id, alice, &format!("m{i}")))
            .await
            .unwrap();
    }
    let seqs = |page: &natter_proto::HistoryPage| -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    };
    let newest = store.history(id, Some(11), None, None, 3).await.unwrap();
    assert_eq!((seqs(&newest), newest.more), (vec![8, 9, 10], true));
    let older = store.history(id, Some(8), None, None, 10).await.unwrap();
    assert_eq!((seqs(&older), older.more), ((1..=7).collect(), false));
    let after = store.history(id, None, Some(7), None, 2).await.unwrap();
    assert_eq!((seqs(&after), after.more), (vec![8, 9], true));
}

/// Alice with a direct conversation with Bob and one with Carol.
struct Trio {
    alice: UserId,
    bob: UserId,
    carol: UserId,
    ab: u64,
    ac: u64,
}

async fn trio(store: &dyn Store) -> Trio {
    let (alice, bob, carol) = (
        user(store, "alice").await,
        user(store, "bob").await,
        user(store, "carol").await,
    );
    let (ab, _) = store.create_direct(alice, bob, 1).await.unwrap();
    let (ac, _) = store.create_direct(alice, carol, 1).await.unwrap();
    Trio {
        alice,
        bob,
        carol,
        ab,
        ac,
    }
}

pub async fn changes_since_a_cursor_are_found(store: &dyn Store) {
    let Trio {
        alice,
        bob,
        carol,
        ab,
        ac,
    } = trio(store).await;
    store.append(new_message(ab, bob, "1")).await.unwrap();
    let cursor = store.head().await.unwrap();
    store.append(new_message(ac, carol, "2")).await.unwrap();
    store.mark(alice, ab, None, Some(1)).await.unwrap();
    let head = store.head().await.unwrap();
    let changed = store.changed_since(alice, cursor, head).await.unwrap();
    let mut ids: Vec<u64> = changed.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![ab, ac]);
    let messages = pos_range(store, ac, cursor, head, None, 10).await;
    assert_eq!(messages.len(), 1);
    // Several conversations at once answer as each alone does, in the order asked.
    let batched = store
        .messages_in_pos_ranges(vec![(ac, None), (ab, None), (ab, Some(0))], 0, head, 10)
        .await
        .unwrap();
    let texts: Vec<Vec<Option<&str>>> = batched
        .iter()
        .map(|list| list.iter().map(|m| m.content.text()).collect())
        .collect();
    assert_eq!(texts, vec![vec![Some("2")], vec![Some("1")], vec![]]);
    let seen = store
        .conversations_seen_by(vec![ac, ab], alice)
        .await
        .unwrap();
    assert_eq!(seen.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ac, ab]);
    assert_eq!(seen[1], store.conversation(ab, alice).await.unwrap());
    assert!(
        store
            .changed_since(alice, head, head)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A sync page holds every message after its cursor once, in position order, whatever its size:
/// a store may read a small page and a large one differently (SQLite reads a small one on the
/// calling thread), and a catch-up in pages of a few items must add up to the one large page.
pub async fn sync_pages_large_and_small_hold_each_message_once(store: &dyn Store) {
    let Trio {
        alice,
        bob,
        carol,
        ab,
        ac,
    } = trio(store).await;
    let mut sent: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..100u64 {
        let (id, sender) = if i % 10 == 0 { (ac, carol) } else { (ab, bob) };
        let ack = store
            .append(new_message(id, sender, &format!("p{i}")))
            .await
            .unwrap();
        sent.push((id, ack.seq, ack.pos));
    }
    // Alice's reading moves the state item of `ab` past every message of it.
    store.mark(alice, ab, None, Some(3)).await.unwrap();
    let head = store.head().await.unwrap();
    for start in [0, sent[50].2, sent[95].2, head] {
        for limit in [500, 7] {
            let (mut cursor, mut pages, mut found) = (start, 0, Vec::new());
            let mut states = std::collections::HashSet::new();
            loop {
                let page = store
                    .sync_page(SyncRequest {
                        user: alice,
                        cursor,
                        head,
                        limit,
                        bytes_max: 1 << 20,
                    })
                    .await
                    .unwrap();
                assert!(page.messages.len() <= limit as usize);
                assert!(page.cursor >= cursor, "a page's cursor never goes back");
                states.extend(page.conversations.iter().map(|c| c.id));
                if start == 0 {
                    // A client that starts from nothing never gets a message before its state.
                    let stateless = page
                        .messages
                        .iter()
                        .find(|m| !states.contains(&m.conversation_id));
                    assert!(
                        stateless.is_none(),
                        "by {limit}: {stateless:?} came before its state"
                    );
                }
                found.extend(
                    page.messages
                        .iter()
                        .map(|m| (m.conversation_id, m.seq, m.pos)),
                );
                cursor = page.cursor;
                pages += 1;
                if !page.more {
                    break;
                }
                assert!(pages < 100, "pages from {start} by {limit} never end");
            }
            let expected: Vec<_> = sent.iter().filter(|m| m.2 > start).copied().collect();
            assert_eq!(found, expected, "from {start} in pages of {limit}");
            assert_eq!(cursor, head, "from {start} in pages of {limit}");
            if limit == 500 {
                assert_eq!(pages, 1, "from {start}: one page holds it all");
            }
        }
    }
}

pub async fn commits_reach_the_listener_in_order(store: &dyn Store) {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = seen.clone();
    store.set_commit_listener(Arc::new(move |batch: CommitBatch| {
        let mut sink = sink.lock().unwrap();
        for event in batch.events {
            if let Some(pos) = event.pos() {
                sink.push(pos);
            }
            if let Event::Message(m) = event {
                assert!(m.seq > 0);
            }
        }
    }));
    let (alice, bob) = (user(store, "alice").await, user(store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    for i in 0..10 {
        store
            .append(new_message(id, alice, &format!("m{i}")))
            .await
            .unwrap();
    }
    // The listener runs right after the writer answered: give the last commit a moment.
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= 11 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 11, "creation and ten messages");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

/// Two conversations written in turns, with receipts (positions that are not messages) between:
/// every range of positions, from every position to every other, reads exactly the messages of
/// one conversation inside it, in order, cut by `max_seq` and `limit`.
pub async fn position_ranges_find_exactly_the_messages_between(store: &dyn Store) {
    let Trio {
        alice,
        bob,
        carol,
        ab,
        ac,
    } = trio(store).await;
    let mut positions = vec![0, store.head().await.unwrap()];
    let mut stored: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..23u64 {
        let id = if i % 3 == 0 { ac } else { ab };
        let ack = store
            .append(new_message(id, alice, &format!("r{i}")))
            .await
            .unwrap();
        stored.push((id, ack.seq, ack.pos));
        positions.push(ack.pos);
        if i % 4 == 1 {
            let reader = if id == ab { bob } else { carol };
            let receipt = store.mark(reader, id, None, Some(ack.seq)).await.unwrap();
            positions.push(receipt.pos);
        }
    }
    positions.push(store.head().await.unwrap() + 5);
    for &id in &[ab, ac] {
        for &after in &positions {
            for &up_to in &positions {
                for (max_seq, limit) in [(None, 100), (Some(4), 100), (None, 2)] {
                    let expected: Vec<(u64, u64)> = stored
                        .iter()
                        .filter(|(c, seq, pos)| {
                            *c == id
                                && *pos > after
                                && *pos <= up_to
                                && max_seq.is_none_or(|m| *seq <= m)
                        })
                        .map(|(_, seq, pos)| (*seq, *pos))
                        .take(limit as usize)
                        .collect();
                    let found: Vec<(u64, u64)> = pos_range(store, id, after, up_to, max_seq, limit)
                        .await
                        .iter()
                        .map(|m| (m.seq, m.pos))
                        .collect();
                    assert_eq!(
                        found, expected,
                        "{id} ({after}, {up_to}] {max_seq:?} {limit}"
                    );
                }
            }
        }
    }
}

pub async fn concurrent_sends_get_distinct_consecutive_seqs(store: Arc<dyn Store>) {
    let (alice, bob) = (user(&*store, "alice").await, user(&*store, "bob").await);
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let sender = if i % 2 == 0 { alice } else { bob };
            store
                .append(new_message(id, sender, &format!("c{i}")))
                .await
                .unwrap()
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
}

#[cfg(test)]
mod sqlite {
    use super::*;
    use crate::{SqliteConfig, SqliteStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = std::env::temp_dir().join(format!("natter-conformance-{}", std::process::id()));
        let counter = std::sync::atomic::AtomicUsize::new(0);
        run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("{n}.db"));
            let _ = std::fs::remove_file(&path);
            async move {
                Arc::new(SqliteStore::open(SqliteConfig::new(path)).unwrap()) as Arc<dyn Store>
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_database_keeps_its_messages_and_positions() {
        let path = std::env::temp_dir().join(format!("natter-reopen-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (id, alice, bob, pos) = {
            let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
            let alice = user(&store, "alice").await;
            let bob = user(&store, "bob").await;
            let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
            let ack = store.append(new_message(id, alice, "kept")).await.unwrap();
            (id, alice, bob, ack.pos)
        };
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        assert_eq!(store.head().await.unwrap(), pos);
        let ack = store.append(new_message(id, alice, "next")).await.unwrap();
        assert_eq!(ack.seq, 2);
        assert!(ack.pos > pos);
        // A change that is not a message is the head too (a group ending in a message does not
        // record its position apart: the message's is the head).
        let receipt = store.mark(bob, id, None, Some(2)).await.unwrap();
        assert!(receipt.pos > ack.pos);
        drop(store);
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        assert_eq!(store.head().await.unwrap(), receipt.pos);
        let ack = store.append(new_message(id, alice, "last")).await.unwrap();
        assert_eq!(ack.pos, receipt.pos + 1);
        drop(store);
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        assert_eq!(store.head().await.unwrap(), ack.pos);
        let _ = std::fs::remove_file(&path);
    }

    /// Under writes that never pause, the write-ahead log still starts over: the checkpoint
    /// thread copies it back and the writer finishes the job past `wal_frames_max`, so the log
    /// file stays near that length instead of growing with everything ever written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_restarts_under_writes_that_never_pause() {
        let path = std::env::temp_dir().join(format!("natter-wal-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut config = SqliteConfig::new(&path);
        config.wal_frames_max = 2_000;
        let store = Arc::new(SqliteStore::open(config).unwrap());
        let (alice, bob) = (user(&*store, "alice").await, user(&*store, "bob").await);
        let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
        // ~3 KiB a message, 16 senders: ~120,000 frames written, sixty times the limit.
        let body = "w".repeat(3_000);
        let senders: Vec<_> = (0..16)
            .map(|k| {
                let (store, body) = (store.clone(), body.clone());
                tokio::spawn(async move {
                    for i in 0..1_800 {
                        let mut message = new_message(id, alice, &format!("{k}-{i}"));
                        message.content = text(&body);
                        store.append(message).await.unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        // The log started over, more than once: 60 times its limit went through it.
        let restarts = store.stats().log_restarts.unwrap_or(0);
        assert!(restarts >= 2, "the log restarted {restarts} times");
        // 2,000 frames of 1 KiB plus headers, and what arrives while the checkpoint thread's
        // pass runs: the writer waits for that pass (a pass under way holds the checkpoint
        // lock), lifting the thread out of `SCHED_IDLE` where the process may. Without the lift,
        // beside the rest of the suite on two busy cores, a starved pass let the log reach 74
        // MB in a debug build; beside two busy loops the log restarted 9-13 times and reached
        // up to 13 MB, against 68-72 times and 4 MB with it. A log that never restarts keeps
        // all ~175 MB written.
        assert!(wal < 64 * 1024 * 1024, "the log grew to {wal} bytes");
        assert!(store.head().await.unwrap() >= 28_800);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// Appends run without a savepoint each: when the database fails under one halfway (here a
    /// trigger refuses its insert after its seq was taken), the whole commit group is rolled back
    /// and every caller in it gets the error. What was acknowledged is stored, with seqs 1..n and
    /// no gap; nothing else is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_failure_under_an_append_loses_its_group_not_the_order() {
        let path = std::env::temp_dir().join(format!("natter-broken-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
        let (alice, bob) = (user(&*store, "alice").await, user(&*store, "bob").await);
        let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.content LIKE '%boom%'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        let handles: Vec<_> = (0..200)
            .map(|k| {
                let store = store.clone();
                let id_text = if k % 25 == 7 {
                    format!("boom-{k}")
                } else {
                    format!("m-{k}")
                };
                tokio::spawn(async move { store.append(new_message(id, alice, &id_text)).await })
            })
            .collect();
        let mut acked = Vec::new();
        for (k, handle) in handles.into_iter().enumerate() {
            match handle.await.unwrap() {
                Ok(ack) => {
                    assert!(k % 25 != 7, "a refused insert was acknowledged");
                    acked.push((ack.seq, ack.client_msg_id));
                }
                Err(e) => assert_eq!(e.code, ErrorCode::Internal),
            }
        }
        acked.sort();
        let seqs: Vec<u64> = acked.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>());
        let history = store.history(id, None, None, None, 500).await.unwrap();
        let stored: Vec<(u64, String)> = history
            .messages
            .iter()
            .map(|m| (m.seq, m.client_msg_id.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            stored, acked,
            "exactly the acknowledged messages are stored"
        );
        let next = store.append(new_message(id, alice, "after")).await.unwrap();
        assert_eq!(next.seq, acked.len() as u64 + 1);
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(all(test, feature = "postgres"))]
mod postgres {
    use super::*;
    use crate::PostgresStore;
    use crate::postgres::tests::TestDb;

    /// Every check on a database of its own, on the server of `NATTER_TEST_POSTGRES_URL`; a
    /// server that cannot be reached fails the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_passes_the_conformance_suite() {
        let databases: Mutex<Vec<TestDb>> = Mutex::default();
        let databases = &databases;
        run_all(move || async move {
            let db = TestDb::create().await;
            let store = PostgresStore::open(db.config())
                .await
                .expect("open the PostgreSQL store");
            databases.lock().unwrap().push(db);
            Arc::new(store) as Arc<dyn Store>
        })
        .await;
    }
}

/// Appends share commit groups, and the engines run them without a savepoint each (SQLite) or
/// pipelined in one round trip (PostgreSQL): a duplicate within the group, a sender who is not a
/// member, a `reply_to` that does not exist and good messages, all in flight at once. Each gets
/// its own answer, the good ones get seqs without a gap, and a refusal changes nothing.
pub async fn appends_in_one_group_are_answered_each_on_its_own(store: Arc<dyn Store>) {
    let (alice, bob) = (user(&*store, "alice").await, user(&*store, "bob").await);
    let eve = user(&*store, "eve").await;
    let (id, _) = store.create_direct(alice, bob, 1).await.unwrap();

    let mut sends = Vec::new();
    for k in 0..60 {
        let message = match k % 6 {
            1 => new_message(id, eve, &format!("eve-{k}")),
            3 => NewMessage {
                reply_to: Some(10_000),
                ..new_message(id, alice, &format!("bad-reply-{k}"))
            },
            // The same sender and id as the message just before it: a duplicate in the same run.
            5 => new_message(id, alice, &format!("m-{}", k - 1)),
            2 => new_message(id, bob, &format!("m-{k}")),
            _ => new_message(id, alice, &format!("m-{k}")),
        };
        sends.push(message);
    }
    // Queue all of them before any can commit: they share commit groups.
    let handles: Vec<_> = sends
        .into_iter()
        .map(|message| {
            let store = store.clone();
            tokio::spawn(async move { store.append(message).await })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut acks = std::collections::BTreeMap::new();
    for (k, handle) in handles.into_iter().enumerate() {
        let outcome = handle.await.unwrap();
        match k % 6 {
            1 => assert_eq!(outcome.unwrap_err().code, ErrorCode::NotMember, "send {k}"),
            3 => assert_eq!(
                outcome.unwrap_err().code,
                ErrorCode::InvalidRequest,
                "send {k}"
            ),
            _ => {
                let ack = outcome.unwrap();
                if !ack.duplicate {
                    seqs.push(ack.seq);
                }
                acks.insert(k, ack);
            }
        }
    }
    // Of a message and its resend, exactly one was stored, and both got its seq.
    for k in (5..60).step_by(6) {
        let (first, again) = (&acks[&(k - 1)], &acks[&k]);
        assert!(first.duplicate != again.duplicate, "send {k}");
        assert_eq!((first.seq, first.pos), (again.seq, again.pos), "send {k}");
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    let history = store.history(id, None, None, None, 200).await.unwrap();
    assert_eq!(history.messages.len(), seqs.len());
    assert!(history.messages.iter().all(|m| m.sender_id != eve));
}
