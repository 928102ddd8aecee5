//! Planning one sync page: which changes a user gets, and the cursor that follows them.
//!
//! Every change has a position in one store-wide stream. A page holds the changes of the user's
//! conversations with positions in `(cursor, new_cursor]`, smallest first: messages one by one, and
//! each conversation's current state once, at the position of its newest state change. A state
//! item stands for every earlier state change of that conversation, so markers and membership
//! cost nothing per recipient.
//!
//! That position moves on with every marker, so a conversation's state may lie pages beyond its
//! messages. A page whose messages' conversation has its state item in a later page carries that
//! state too (and the later page carries it again): a client never holds a message of a
//! conversation it has no state for. A catch-up in one page, the common case, is unaffected.

use std::collections::HashSet;

use natter_proto::{Conversation, ConversationId, Message, Pos, Seq, SyncPage, UserId};

use crate::store::ChangedConversation;

/// One sync page asked of a store (`Store::sync_page`): `user`'s changes after `cursor`, up to
/// `head` (read before, so that everything at or below it is committed), at most `limit` items
/// and about `bytes_max` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest {
    pub user: UserId,
    pub cursor: Pos,
    pub head: Pos,
    pub limit: u32,
    pub bytes_max: usize,
}

impl SyncRequest {
    /// The conversations among `changed` whose messages after the cursor must be read, with
    /// the highest `seq` the user may read in each (a past member's leaving).
    pub fn messages_to_read(
        &self,
        changed: &[ChangedConversation],
    ) -> Vec<(ConversationId, Option<Seq>)> {
        changed
            .iter()
            .filter(|c| c.message_pos > self.cursor)
            .map(|c| (c.id, c.left_seq))
            .collect()
    }

    /// The page, from `changed` and the messages read for `messages_to_read`, in its order.
    pub fn plan(&self, changed: &[ChangedConversation], read: Vec<Vec<Message>>) -> SyncPlan {
        let mut read = read.into_iter();
        let messages: Vec<Vec<Message>> = changed
            .iter()
            .map(|c| {
                if c.message_pos > self.cursor {
                    read.next().unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        plan_sync_page(
            self.cursor,
            self.head,
            changed,
            messages,
            self.limit as usize,
            self.bytes_max,
        )
    }
}

/// What one sync page will contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    pub cursor: Pos,
    pub more: bool,
    pub messages: Vec<Message>,
    /// Conversations whose current state goes into the page: those whose members, markers or title
    /// changed in it.
    pub conversation_ids: Vec<ConversationId>,
}

impl SyncPlan {
    /// The page, with the states of `conversation_ids` as the user sees them.
    pub fn into_page(self, conversations: Vec<Conversation>) -> SyncPage {
        SyncPage {
            cursor: self.cursor,
            more: self.more,
            conversations,
            messages: self.messages,
        }
    }
}

/// What an item is reckoned to weigh in a page, in bytes: its text plus the frame around it.
fn weight(message: &Option<Message>) -> usize {
    match message {
        Some(m) => 256 + m.content.text().map_or(256, str::len),
        None => 1024,
    }
}

/// Choose the earliest changes after `cursor` among `changed` (whose messages after the cursor,
/// up to `head`, ascending and at most `limit + 1` each, are in `messages`): at most `limit`
/// items and, past the first item, at most about `bytes_max` bytes, so that a page of large
/// messages stays a reasonable frame.
///
/// A page never splits the items of one position, and its cursor is `head` when it took
/// everything: nothing at or below `head` can appear later (the store guarantees it).
pub fn plan_sync_page(
    cursor: Pos,
    head: Pos,
    changed: &[ChangedConversation],
    messages: Vec<Vec<Message>>,
    limit: usize,
    bytes_max: usize,
) -> SyncPlan {
    let limit = limit.max(1);
    // (pos, conversation, message): `None` is the conversation's state item.
    let mut items: Vec<(Pos, ConversationId, Option<Message>)> = Vec::new();
    for (conversation, conversation_messages) in changed.iter().zip(messages) {
        let state_pos = conversation.state_pos.min(head);
        if state_pos > cursor {
            items.push((state_pos, conversation.id, None));
        }
        items.extend(
            conversation_messages
                .into_iter()
                .filter(|m| m.pos > cursor && m.pos <= head)
                .map(|m| (m.pos, conversation.id, Some(m))),
        );
    }
    items.sort_by_key(|(pos, _, message)| (*pos, message.is_some()));

    let mut taken = 0;
    let mut bytes = 0;
    while taken < items.len() && taken < limit {
        bytes += weight(&items[taken].2);
        if taken > 0 && bytes > bytes_max {
            break;
        }
        taken += 1;
    }
    // A cursor above `head` was never given out by this store (another deployment's, or one
    // from before a restore): the answer is `head`, lower than the cursor sent, which tells the
    // client so (protocol.md §9.4).
    let (new_cursor, more) = if taken < items.len() {
        let cutoff = items[taken - 1].0;
        items.retain(|(pos, _, _)| *pos <= cutoff);
        (cutoff, true)
    } else {
        (head, false)
    };

    // A conversation's state goes into the page at its state item, and also where the page has
    // its messages but the state item lies beyond the page (see the module doc). Otherwise a page
    // of plain messages stays plain: a client that has a conversation's messages got its state
    // when it changed (a reconnect storm must not read and send every member list again).
    let mut states_later: HashSet<ConversationId> = changed
        .iter()
        .filter(|c| c.state_pos.min(head) > new_cursor)
        .map(|c| c.id)
        .collect();
    let mut conversation_ids: Vec<ConversationId> = Vec::new();
    let mut page_messages = Vec::new();
    for (_, conversation_id, message) in items {
        match message {
            Some(message) => {
                // Taken out once given, so that the page carries it once.
                if states_later.remove(&conversation_id) {
                    conversation_ids.push(conversation_id);
                }
                page_messages.push(message);
            }
            None => conversation_ids.push(conversation_id),
        }
    }
    SyncPlan {
        cursor: new_cursor,
        more,
        messages: page_messages,
        conversation_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::Content;

    const BYTES: usize = 1 << 20;

    fn message(conversation_id: ConversationId, seq: u64, pos: Pos) -> Message {
        Message {
            conversation_id,
            seq,
            pos,
            sender_id: 1,
            client_msg_id: Some(format!("{conversation_id}-{seq}")),
            content: Content::Text { text: "x".into() },
            reply_to: None,
            sent_at_ms: 0,
        }
    }

    fn changed(id: ConversationId, message_pos: Pos, state_pos: Pos) -> ChangedConversation {
        ChangedConversation {
            id,
            message_pos,
            state_pos,
            left_seq: None,
        }
    }

    #[test]
    fn everything_fits_and_the_cursor_moves_to_head() {
        let plan = plan_sync_page(
            10,
            20,
            &[changed(1, 12, 5), changed(2, 15, 15)],
            vec![vec![message(1, 3, 12)], vec![message(2, 1, 15)]],
            100,
            BYTES,
        );
        assert_eq!(plan.cursor, 20);
        assert!(!plan.more);
        assert_eq!(plan.messages.len(), 2);
        // Conversation 1 only got a message; conversation 2 also changed state.
        assert_eq!(plan.conversation_ids, vec![2]);
    }

    #[test]
    fn a_full_page_stops_at_the_last_position_it_holds() {
        let messages = vec![
            vec![message(1, 1, 11), message(1, 2, 13), message(1, 3, 15)],
            vec![message(2, 1, 12), message(2, 2, 14)],
        ];
        let plan = plan_sync_page(
            10,
            30,
            &[changed(1, 15, 0), changed(2, 14, 0)],
            messages,
            3,
            BYTES,
        );
        assert!(plan.more);
        assert_eq!(plan.cursor, 13);
        let positions: Vec<Pos> = plan.messages.iter().map(|m| m.pos).collect();
        assert_eq!(positions, vec![11, 12, 13]);
    }

    #[test]
    fn items_of_one_position_are_never_split() {
        // A membership change writes a system message and a state change at the same position.
        let plan = plan_sync_page(
            0,
            9,
            &[changed(1, 5, 5)],
            vec![vec![message(1, 1, 5)]],
            1,
            BYTES,
        );
        assert_eq!(plan.cursor, 5);
        assert_eq!(plan.messages.len(), 1);
        assert_eq!(plan.conversation_ids, vec![1]);
    }

    #[test]
    fn changes_above_head_wait_for_a_later_sync() {
        let plan = plan_sync_page(
            0,
            5,
            &[changed(1, 7, 0)],
            vec![vec![message(1, 1, 7)]],
            10,
            BYTES,
        );
        assert!(plan.messages.is_empty());
        assert_eq!(plan.cursor, 5);
    }

    #[test]
    fn large_messages_end_a_page_early_but_never_leave_it_empty() {
        let big = |seq: u64, pos: Pos| {
            let mut m = message(1, seq, pos);
            m.content = Content::Text {
                text: "x".repeat(4000),
            };
            m
        };
        let plan = plan_sync_page(
            0,
            9,
            &[changed(1, 3, 0)],
            vec![vec![big(1, 1), big(2, 2), big(3, 3)]],
            100,
            5000,
        );
        assert_eq!((plan.messages.len(), plan.cursor, plan.more), (1, 1, true));
    }

    #[test]
    fn a_cursor_above_head_is_answered_with_head() {
        let plan = plan_sync_page(50, 40, &[changed(1, 30, 30)], vec![vec![]], 10, BYTES);
        assert_eq!((plan.cursor, plan.more), (40, false));
        assert!(plan.messages.is_empty() && plan.conversation_ids.is_empty());
    }

    #[test]
    fn a_page_with_messages_whose_state_comes_later_carries_that_state() {
        // Conversation 1's state moved on to 30 (a marker), 2's to 14, just past the first page.
        let messages = vec![
            vec![message(1, 1, 11), message(1, 2, 12), message(1, 3, 20)],
            vec![message(2, 1, 13)],
        ];
        let changed = [changed(1, 20, 30), changed(2, 13, 14)];
        let first = plan_sync_page(10, 40, &changed, messages.clone(), 3, BYTES);
        assert_eq!((first.cursor, first.more), (13, true));
        assert_eq!(first.conversation_ids, vec![1, 2]);

        let second = plan_sync_page(13, 40, &changed, messages.clone(), 2, BYTES);
        assert_eq!((second.cursor, second.more), (20, true));
        assert_eq!(second.conversation_ids, vec![2, 1]);

        // The page that reaches the state item carries it once, at its place.
        let last = plan_sync_page(20, 40, &changed, messages, 10, BYTES);
        assert_eq!((last.cursor, last.more), (40, false));
        assert_eq!(last.conversation_ids, vec![1]);
        assert!(last.messages.is_empty());
    }
}
