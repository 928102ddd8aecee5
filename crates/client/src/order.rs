//! Exactly-once, in-order delivery of messages: the pure core of the client's delivery contract.
//!
//! Messages reach a client by several paths that overlap — sync pages, live `message` events,
//! history pages fetched to fill gaps, and all of them again after a reconnect. [`Reorderer`] keeps,
//! per conversation, the highest contiguous `seq` handed to the application, drops anything at or
//! below it, releases the next `seq` at once and holds back anything beyond it until the gap is
//! filled. It does no I/O: it tells its owner which gaps to fetch ([`Reorderer::gaps`]) and takes
//! the history pages back ([`Reorderer::fill`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use natter_proto::{ConversationId, HistoryPage, Message, Seq};

/// What [`Reorderer::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Already delivered (or already held back): dropped.
    Duplicate,
    /// It was the next one: released, possibly with held-back successors.
    Released,
    /// A gap lies before it: held back until the gap is filled.
    HeldBack,
}

/// What [`Reorderer::fill`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The conversation has no gap any more.
    Closed,
    /// Messages were released but a gap remains: fetch again from the new position.
    Progress,
    /// Nothing could be released: the page did not contain what was missing.
    NoProgress,
}

/// A run of missing messages that should be fetched with `history {after, limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The conversation missing messages.
    pub conversation_id: ConversationId,
    /// The highest contiguous `seq` delivered: fetch history after it.
    pub after: Seq,
    /// The highest `seq` known to exist; `until - after` messages at most are missing.
    pub until: Seq,
}

impl Gap {
    /// How many messages are missing at most.
    pub fn len(&self) -> u64 {
        self.until.saturating_sub(self.after)
    }

    /// Never true for a gap returned by [`Reorderer::gaps`]; here for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
struct Track {
    /// Highest contiguous `seq` released.
    delivered: Seq,
    /// Highest `seq` seen, held back or not; above `delivered` means there is a gap, even when
    /// the buffer dropped the messages for lack of room.
    known_top: Seq,
    held: BTreeMap<Seq, Message>,
}

impl Track {
    fn has_gap(&self) -> bool {
        self.known_top > self.delivered
    }

    /// Release held-back messages that have become contiguous.
    fn drain(&mut self, out: &mut Vec<Message>) {
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= self.delivered {
                entry.remove();
            } else if seq == self.delivered + 1 {
                out.push(entry.remove());
                self.delivered = seq;
            } else {
                break;
            }
        }
        if self.known_top < self.delivered {
            self.known_top = self.delivered;
        }
    }
}

/// Per-conversation dedupe and ordering. See the [module docs](self).
#[derive(Debug)]
pub struct Reorderer {
    tracks: HashMap<ConversationId, Track>,
    /// Conversations with a gap, kept up to date so that asking for gaps costs nothing when
    /// there are none, however many conversations there are.
    gapped: BTreeSet<ConversationId>,
    held_max: usize,
}

impl Default for Reorderer {
    fn default() -> Self {
        Reorderer::new()
    }
}

impl Reorderer {
    /// How many held-back messages one conversation keeps by default.
    pub const DEFAULT_HELD_MAX: usize = 10_000;

    /// A reorderer that has delivered nothing: every conversation starts at `seq` 1.
    pub fn new() -> Reorderer {
        Reorderer {
            tracks: HashMap::new(),
            gapped: BTreeSet::new(),
            held_max: Self::DEFAULT_HELD_MAX,
        }
    }

    /// Resume from saved per-conversation delivered `seq`s (see `ClientState`).
    pub fn with_delivered(delivered: &HashMap<ConversationId, Seq>) -> Reorderer {
        let mut reorderer = Reorderer::new();
        for (&conversation_id, &seq) in delivered {
            reorderer.tracks.insert(
                conversation_id,
                Track {
                    delivered: seq,
                    known_top: seq,
                    held: BTreeMap::new(),
                },
            );
        }
        reorderer
    }

    /// Bound the messages held back per conversation. Past it the highest ones are dropped; they
    /// are not lost, since the gap still reaches up to them and fetching it brings them back.
    pub fn set_held_max(&mut self, held_max: usize) {
        self.held_max = held_max.max(1);
    }

    /// The highest contiguous `seq` released in a conversation (0 if none).
    pub fn delivered(&self, conversation_id: ConversationId) -> Seq {
        self.tracks
            .get(&conversation_id)
            .map_or(0, |track| track.delivered)
    }

    /// Every conversation's delivered `seq`, for saving; conversations at 0 are left out.
    pub fn delivered_all(&self) -> HashMap<ConversationId, Seq> {
        self.tracks
            .iter()
            .filter(|(_, track)| track.delivered > 0)
            .map(|(&id, track)| (id, track.delivered))
            .collect()
    }

    /// How many messages are held back in a conversation.
    pub fn held(&self, conversation_id: ConversationId) -> usize {
        self.tracks
            .get(&conversation_id)
            .map_or(0, |track| track.held.len())
    }

    /// Take one message from any source. Messages ready for the application are appended to
    /// `out`, in `seq` order.
    pub fn offer(&mut self, message: Message, out: &mut Vec<Message>) -> Offer {
        let conversation_id = message.conversation_id;
        let offer = self.offer_inner(message, out);
        self.refresh(conversation_id);
        offer
    }

    fn refresh(&mut self, conversation_id: ConversationId) {
        if self
            .tracks
            .get(&conversation_id)
            .is_some_and(Track::has_gap)
        {
            self.gapped.insert(conversation_id);
        } else {
            self.gapped.remove(&conversation_id);
        }
    }

    fn offer_inner(&mut self, message: Message, out: &mut Vec<Message>) -> Offer {
        let held_max = self.held_max;
        let track = self.tracks.entry(message.conversation_id).or_default();
        let seq = message.seq;
        if seq <= track.delivered {
            return Offer::Duplicate;
        }
        if seq == track.delivered + 1 {
            out.push(message);
            track.delivered = seq;
            track.drain(out);
            return Offer::Released;
        }
        track.known_top = track.known_top.max(seq);
        if track.held.contains_key(&seq) {
            return Offer::Duplicate;
        }
        track.held.insert(seq, message);
        if track.held.len() > held_max {
            // Keep the lowest ones: they are released first once the gap closes.
            track.held.pop_last();
        }
        Offer::HeldBack
    }

    /// The gap of one conversation, if it has one.
    pub fn gap(&self, conversation_id: ConversationId) -> Option<Gap> {
        let track = self.tracks.get(&conversation_id)?;
        track.has_gap().then_some(Gap {
            conversation_id,
            after: track.delivered,
            until: track.known_top,
        })
    }

    /// Every open gap, by conversation id.
    pub fn gaps(&self) -> Vec<Gap> {
        self.gapped.iter().filter_map(|&id| self.gap(id)).collect()
    }

    /// True when some conversation is waiting for missing messages.
    pub fn has_gaps(&self) -> bool {
        !self.gapped.is_empty()
    }

    /// Apply the answer to `history {conversation_id, after}`.
    ///
    /// History pages are in ascending `seq`. When the first message of a page lies beyond
    /// `after + 1`, the server has shown that nothing in between exists for this user (a member
    /// who joined late does not see what came before): that run is skipped rather than waited
    /// for forever. The skipped range is returned so that the application can be told.
    pub fn fill(
        &mut self,
        conversation_id: ConversationId,
        after: Seq,
        page: HistoryPage,
        out: &mut Vec<Message>,
    ) -> (Fill, Option<(Seq, Seq)>) {
        let before = self.delivered(conversation_id);
        let first = page
            .messages
            .iter()
            .filter(|m| m.conversation_id == conversation_id)
            .map(|m| m.seq)
            .min();
        for message in page.messages {
            if message.conversation_id == conversation_id {
                self.offer(message, out);
            }
        }
        let mut skipped = None;
        if let Some(first) = first
            && first > after + 1
            && let Some(track) = self.tracks.get_mut(&conversation_id)
            && track.delivered < first - 1
        {
            skipped = Some((track.delivered + 1, first - 1));
            track.delivered = first - 1;
            track.drain(out);
        }
        self.refresh(conversation_id);
        let Some(track) = self.tracks.get(&conversation_id) else {
            return (Fill::Closed, skipped);
        };
        let outcome = if !track.has_gap() {
            Fill::Closed
        } else if track.delivered > before {
            Fill::Progress
        } else {
            Fill::NoProgress
        };
        (outcome, skipped)
    }

    /// Give up on a gap that cannot be filled: release what is held back from its lowest `seq`
    /// on. Returns the skipped range, if anything was skipped.
    pub fn skip_gap(
        &mut self,
        conversation_id: ConversationId,
        out: &mut Vec<Message>,
    ) -> Option<(Seq, Seq)> {
        let track = self.tracks.get_mut(&conversation_id)?;
        if !track.has_gap() {
            return None;
        }
        let first_held = track.held.keys().next().copied();
        let skip_to = match first_held {
            Some(seq) => seq - 1,
            None => track.known_top,
        };
        let skipped = (track.delivered + 1, skip_to);
        track.delivered = skip_to;
        track.drain(out);
        if first_held.is_none() {
            track.known_top = track.delivered;
        }
        self.refresh(conversation_id);
        Some(skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::Content;

    fn msg(conversation_id: ConversationId, seq: Seq) -> Message {
        Message {
            conversation_id,
            seq,
            pos: conversation_id * 1000 + seq,
            sender_id: 1,
            client_msg_id: Some(format!("c{conversation_id}-{seq}")),
            content: Content::Text {
                text: format!("{conversation_id}/{seq}"),
            },
            reply_to: None,
            sent_at_ms: 0,
        }
    }

    /// The set of gapped conversations is a cache: it must match the tracks exactly.
    fn check_gapped(r: &Reorderer) {
        let expected: BTreeSet<ConversationId> = r
            .tracks
            .iter()
            .filter(|(_, track)| track.has_gap())
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(r.gapped, expected);
    }

    fn seqs(out: &[Message]) -> Vec<Seq> {
        out.iter().map(|m| m.seq).collect()
    }

    fn page(conversation_id: ConversationId, range: std::ops::RangeInclusive<Seq>) -> HistoryPage {
        HistoryPage {
            messages: range.map(|s| msg(conversation_id, s)).collect(),
            more: false,
        }
    }

    #[test]
    fn in_order_messages_are_released_at_once() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        for seq in 1..=5 {
            assert_eq!(r.offer(msg(1, seq), &mut out), Offer::Released);
        }
        assert_eq!(seqs(&out), [1, 2, 3, 4, 5]);
        assert_eq!(r.delivered(1), 5);
        assert!(!r.has_gaps());
    }

    #[test]
    fn duplicates_are_dropped_whatever_their_source() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        r.offer(msg(1, 2), &mut out);
        assert_eq!(r.offer(msg(1, 1), &mut out), Offer::Duplicate);
        assert_eq!(r.offer(msg(1, 2), &mut out), Offer::Duplicate);
        // A held-back message offered twice is kept once.
        assert_eq!(r.offer(msg(1, 5), &mut out), Offer::HeldBack);
        assert_eq!(r.offer(msg(1, 5), &mut out), Offer::Duplicate);
        assert_eq!(r.held(1), 1);
        assert_eq!(seqs(&out), [1, 2]);
        // seq 0 does not exist and must not be released.
        assert_eq!(r.offer(msg(1, 0), &mut out), Offer::Duplicate);
    }

    #[test]
    fn a_gap_holds_back_successors_until_filled() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        assert_eq!(r.offer(msg(1, 4), &mut out), Offer::HeldBack);
        assert_eq!(r.offer(msg(1, 3), &mut out), Offer::HeldBack);
        assert_eq!(seqs(&out), [1]);
        assert_eq!(
            r.gaps(),
            [Gap {
                conversation_id: 1,
                after: 1,
                until: 4
            }]
        );
        assert_eq!(r.gaps()[0].len(), 3);
        assert_eq!(r.offer(msg(1, 2), &mut out), Offer::Released);
        assert_eq!(seqs(&out), [1, 2, 3, 4]);
        assert!(!r.has_gaps());
        assert_eq!(r.held(1), 0);
    }

    #[test]
    fn conversations_are_independent() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        r.offer(msg(2, 2), &mut out);
        r.offer(msg(3, 1), &mut out);
        assert_eq!(
            out.iter()
                .map(|m| (m.conversation_id, m.seq))
                .collect::<Vec<_>>(),
            [(1, 1), (3, 1)]
        );
        assert_eq!(r.gaps().len(), 1);
        assert_eq!(r.gaps()[0].conversation_id, 2);
        assert_eq!(r.gaps()[0].after, 0);
    }

    #[test]
    fn a_new_conversation_is_delivered_from_seq_one() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        assert_eq!(r.offer(msg(9, 3), &mut out), Offer::HeldBack);
        let gap = r.gap(9).unwrap();
        assert_eq!((gap.after, gap.until), (0, 3));
        let (fill, skipped) = r.fill(9, 0, page(9, 1..=3), &mut out);
        assert_eq!(fill, Fill::Closed);
        assert_eq!(skipped, None);
        assert_eq!(seqs(&out), [1, 2, 3]);
    }

    #[test]
    fn resumed_state_drops_what_was_delivered_before() {
        let delivered = HashMap::from([(1, 10), (2, 3)]);
        let mut r = Reorderer::with_delivered(&delivered);
        let mut out = Vec::new();
        assert_eq!(r.offer(msg(1, 10), &mut out), Offer::Duplicate);
        assert_eq!(r.offer(msg(1, 11), &mut out), Offer::Released);
        assert_eq!(r.offer(msg(2, 2), &mut out), Offer::Duplicate);
        assert_eq!(seqs(&out), [11]);
        assert!(!r.has_gaps());
        assert_eq!(r.delivered_all(), HashMap::from([(1, 11), (2, 3)]));
    }

    #[test]
    fn fill_with_a_partial_page_reports_progress() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 10), &mut out);
        let (fill, _) = r.fill(
            1,
            0,
            HistoryPage {
                messages: (1..=4).map(|s| msg(1, s)).collect(),
                more: true,
            },
            &mut out,
        );
        assert_eq!(fill, Fill::Progress);
        assert_eq!(r.gap(1).map(|g| (g.after, g.until)), Some((4, 10)));
        let (fill, _) = r.fill(1, 4, page(1, 5..=10), &mut out);
        assert_eq!(fill, Fill::Closed);
        assert_eq!(seqs(&out), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn fill_overlapping_live_delivery_is_deduped() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        r.offer(msg(1, 3), &mut out);
        // Meanwhile seq 2 arrived by sync, closing the gap before the history page came back.
        r.offer(msg(1, 2), &mut out);
        let (fill, skipped) = r.fill(1, 1, page(1, 2..=3), &mut out);
        assert_eq!(fill, Fill::Closed);
        assert_eq!(skipped, None);
        assert_eq!(seqs(&out), [1, 2, 3]);
    }

    #[test]
    fn fill_without_the_missing_messages_makes_no_progress() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        r.offer(msg(1, 5), &mut out);
        let empty = HistoryPage {
            messages: vec![],
            more: false,
        };
        assert_eq!(r.fill(1, 1, empty, &mut out), (Fill::NoProgress, None));
        assert_eq!(seqs(&out), [1]);
        assert!(r.has_gaps());
    }

    #[test]
    fn history_starting_past_the_gap_skips_what_the_user_cannot_see() {
        // Joined the group at seq 50: the server shows nothing before it.
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(4, 52), &mut out);
        let (fill, skipped) = r.fill(4, 0, page(4, 50..=52), &mut out);
        assert_eq!(fill, Fill::Closed);
        assert_eq!(skipped, Some((1, 49)));
        assert_eq!(seqs(&out), [50, 51, 52]);
        assert_eq!(r.delivered(4), 52);
    }

    #[test]
    fn skip_gap_releases_held_messages() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 1), &mut out);
        r.offer(msg(1, 4), &mut out);
        r.offer(msg(1, 5), &mut out);
        r.offer(msg(1, 8), &mut out);
        assert_eq!(r.skip_gap(1, &mut out), Some((2, 3)));
        assert_eq!(seqs(&out), [1, 4, 5]);
        assert_eq!(r.gap(1).map(|g| (g.after, g.until)), Some((5, 8)));
        check_gapped(&r);
        assert_eq!(r.skip_gap(1, &mut out), Some((6, 7)));
        check_gapped(&r);
        assert_eq!(seqs(&out), [1, 4, 5, 8]);
        assert_eq!(r.skip_gap(1, &mut out), None);
        assert_eq!(r.skip_gap(77, &mut out), None);
    }

    #[test]
    fn a_full_buffer_drops_the_highest_but_remembers_the_gap() {
        let mut r = Reorderer::new();
        r.set_held_max(3);
        let mut out = Vec::new();
        for seq in [5, 6, 7, 8, 9] {
            r.offer(msg(1, seq), &mut out);
        }
        assert_eq!(r.held(1), 3);
        assert_eq!(r.gap(1).map(|g| (g.after, g.until)), Some((0, 9)));
        // Filling the start releases what was kept; the gap still reaches the dropped ones.
        let (fill, _) = r.fill(1, 0, page(1, 1..=4), &mut out);
        assert_eq!(fill, Fill::Progress);
        assert_eq!(seqs(&out), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(r.gap(1).map(|g| (g.after, g.until)), Some((7, 9)));
        let (fill, _) = r.fill(1, 7, page(1, 8..=9), &mut out);
        assert_eq!(fill, Fill::Closed);
        assert_eq!(seqs(&out), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn skip_gap_with_nothing_held_forgets_the_dropped_top() {
        let mut r = Reorderer::new();
        r.set_held_max(1);
        let mut out = Vec::new();
        r.offer(msg(1, 3), &mut out);
        r.offer(msg(1, 4), &mut out);
        let (fill, _) = r.fill(1, 0, page(1, 1..=3), &mut out);
        assert_eq!(fill, Fill::Progress);
        assert_eq!(seqs(&out), [1, 2, 3]);
        assert_eq!(r.skip_gap(1, &mut out), Some((4, 4)));
        assert!(!r.has_gaps());
        assert_eq!(r.delivered(1), 4);
    }

    #[test]
    fn pages_of_other_conversations_are_ignored() {
        let mut r = Reorderer::new();
        let mut out = Vec::new();
        r.offer(msg(1, 2), &mut out);
        let (fill, _) = r.fill(1, 0, page(2, 1..=2), &mut out);
        assert_eq!(fill, Fill::NoProgress);
        assert!(out.is_empty());
        assert_eq!(r.delivered(2), 0);
    }

    /// Every interleaving of duplicated, shuffled deliveries ends with each message released once
    /// and in order.
    #[test]
    fn shuffled_duplicated_input_is_released_exactly_once_in_order() {
        use rand::SeedableRng;
        use rand::rngs::StdRng;
        use rand::seq::SliceRandom;
        let mut rng = StdRng::seed_from_u64(42);
        for round in 0..200 {
            let mut r = Reorderer::new();
            if round % 2 == 0 {
                r.set_held_max(4);
            }
            let mut input: Vec<Message> = Vec::new();
            for conversation_id in 1..=3 {
                for seq in 1..=20 {
                    input.push(msg(conversation_id, seq));
                    if seq % 3 == 0 {
                        input.push(msg(conversation_id, seq));
                    }
                }
            }
            input.shuffle(&mut rng);
            let mut out = Vec::new();
            for message in input {
                r.offer(message, &mut out);
                check_gapped(&r);
            }
            // Anything dropped for lack of room comes back through gap filling.
            while let Some(gap) = r.gaps().first().copied() {
                let page = page(gap.conversation_id, gap.after + 1..=gap.until);
                r.fill(gap.conversation_id, gap.after, page, &mut out);
                check_gapped(&r);
            }
            for conversation_id in 1..=3 {
                let got: Vec<Seq> = out
                    .iter()
                    .filter(|m| m.conversation_id == conversation_id)
                    .map(|m| m.seq)
                    .collect();
                assert_eq!(got, (1..=20).collect::<Vec<_>>(), "round {round}");
            }
        }
    }
}
