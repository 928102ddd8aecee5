// Exactly-once, in-order delivery of messages: a port of the Rust client's `Reorderer`
// (crates/client/src/order.rs). Messages arrive by overlapping paths — sync pages, live events,
// history pages that fill gaps, and all of them again after a reconnect. Per conversation it keeps
// the highest contiguous seq handed to the application, drops anything at or below it, releases
// the next seq at once and holds back anything beyond it until the gap is filled. It does no I/O.

/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').HistoryPage} HistoryPage */

/**
 * A run of missing messages, to fetch with `history {conversation_id, after, limit}`.
 * @typedef {object} Gap
 * @property {number} conversation_id
 * @property {number} after The highest contiguous seq delivered: fetch history after it.
 * @property {number} until The highest seq known to exist.
 */

/** @typedef {'duplicate' | 'released' | 'held_back'} Offer */
/** @typedef {'closed' | 'progress' | 'no_progress'} FillOutcome */

class Track {
  /** @param {number} delivered */
  constructor(delivered = 0) {
    /** Highest contiguous seq released. */
    this.delivered = delivered;
    /** Highest seq seen; above `delivered` means a gap, even if the buffer dropped messages. */
    this.knownTop = delivered;
    /** @type {Map<number, Message>} */
    this.held = new Map();
  }

  hasGap() {
    return this.knownTop > this.delivered;
  }

  /** Release held-back messages that became contiguous. @param {Message[]} out */
  drain(out) {
    for (const seq of this.held.keys()) {
      if (seq <= this.delivered) this.held.delete(seq);
    }
    for (;;) {
      const next = this.held.get(this.delivered + 1);
      if (!next) break;
      this.held.delete(next.seq);
      out.push(next);
      this.delivered = next.seq;
    }
    if (this.knownTop < this.delivered) this.knownTop = this.delivered;
  }

  lowestHeld() {
    let low = Infinity;
    for (const seq of this.held.keys()) if (seq < low) low = seq;
    return low === Infinity ? undefined : low;
  }
}

export class Reorderer {
  /** How many held-back messages one conversation keeps by default. */
  static DEFAULT_HELD_MAX = 10_000;

  /**
   * @param {Record<string, number> | Map<number, number>} [delivered] Saved per-conversation
   *   delivered seqs to resume from.
   */
  constructor(delivered) {
    /** @type {Map<number, Track>} */
    this.tracks = new Map();
    /** Conversations with a gap. @type {Set<number>} */
    this.gapped = new Set();
    this.heldMax = Reorderer.DEFAULT_HELD_MAX;
    const entries = delivered instanceof Map ? delivered.entries() : Object.entries(delivered ?? {});
    for (const [id, seq] of entries) {
      if (seq > 0) this.tracks.set(Number(id), new Track(seq));
    }
  }

  /** The highest contiguous seq released in a conversation (0 if none). @param {number} id */
  delivered(id) {
    return this.tracks.get(id)?.delivered ?? 0;
  }

  /** Every conversation's delivered seq, for saving (zeros left out). @returns {Record<string, number>} */
  deliveredAll() {
    /** @type {Record<string, number>} */
    const out = {};
    for (const [id, track] of this.tracks) if (track.delivered > 0) out[id] = track.delivered;
    return out;
  }

  /**
   * Start a conversation at `seq` when nothing was delivered there yet (used when a client starts
   * from the present instead of from the beginning). Never moves backwards.
   * @param {number} id
   * @param {number} seq
   */
  startAt(id, seq) {
    const track = this.tracks.get(id);
    if (!track) {
      this.tracks.set(id, new Track(seq));
      return;
    }
    if (seq > track.delivered) {
      track.delivered = seq;
      track.drain([]);
      this.refresh(id);
    }
  }

  /** How many messages are held back in a conversation. @param {number} id */
  held(id) {
    return this.tracks.get(id)?.held.size ?? 0;
  }

  /**
   * Take one message from any source; messages ready for the application are appended to `out`,
   * in seq order.
   * @param {Message} message
   * @param {Message[]} out
   * @returns {Offer}
   */
  offer(message, out) {
    const offer = this.#offer(message, out);
    this.refresh(message.conversation_id);
    return offer;
  }

  /** @param {Message} message @param {Message[]} out @returns {Offer} */
  #offer(message, out) {
    let track = this.tracks.get(message.conversation_id);
    if (!track) {
      track = new Track();
      this.tracks.set(message.conversation_id, track);
    }
    const seq = message.seq;
    if (seq <= track.delivered) return 'duplicate';
    if (seq === track.delivered + 1) {
      out.push(message);
      track.delivered = seq;
      track.drain(out);
      return 'released';
    }
    track.knownTop = Math.max(track.knownTop, seq);
    if (track.held.has(seq)) return 'duplicate';
    track.held.set(seq, message);
    if (track.held.size > this.heldMax) {
      // Keep the lowest: they are released first. The gap still reaches the dropped ones.
      let high = -1;
      for (const s of track.held.keys()) if (s > high) high = s;
      track.held.delete(high);
    }
    return 'held_back';
  }

  /** @param {number} id */
  refresh(id) {
    if (this.tracks.get(id)?.hasGap()) this.gapped.add(id);
    else this.gapped.delete(id);
  }

  /** The gap of one conversation, if it has one. @param {number} id @returns {Gap | undefined} */
  gap(id) {
    const track = this.tracks.get(id);
    if (!track || !track.hasGap()) return undefined;
    return { conversation_id: id, after: track.delivered, until: track.knownTop };
  }

  /** Every open gap. @returns {Gap[]} */
  gaps() {
    /** @type {Gap[]} */
    const out = [];
    for (const id of [...this.gapped].sort((a, b) => a - b)) {
      const gap = this.gap(id);
      if (gap) out.push(gap);
    }
    return out;
  }

  hasGaps() {
    return this.gapped.size > 0;
  }

  /**
   * Apply the answer to `history {conversation_id, after}`. When the page starts beyond
   * `after + 1`, the server has shown that nothing in between exists for this user: that run is
   * skipped (and returned) rather than waited for forever.
   * @param {number} id
   * @param {number} after
   * @param {HistoryPage} page
   * @param {Message[]} out
   * @returns {{outcome: FillOutcome, skipped?: [number, number]}}
   */
  fill(id, after, page, out) {
    const before = this.delivered(id);
    const mine = page.messages.filter((m) => m.conversation_id === id);
    const first = mine.length ? Math.min(...mine.map((m) => m.seq)) : undefined;
    for (const message of mine) this.offer(message, out);
    /** @type {[number, number] | undefined} */
    let skipped;
    const track = this.tracks.get(id);
    if (first !== undefined && first > after + 1 && track && track.delivered < first - 1) {
      skipped = [track.delivered + 1, first - 1];
      track.delivered = first - 1;
      track.drain(out);
    }
    this.refresh(id);
    if (!track || !track.hasGap()) return { outcome: 'closed', skipped };
    return { outcome: track.delivered > before ? 'progress' : 'no_progress', skipped };
  }

  /**
   * Give up on a gap that cannot be filled: release what is held back from its lowest seq on.
   * @param {number} id
   * @param {Message[]} out
   * @returns {[number, number] | undefined} the skipped range
   */
  skipGap(id, out) {
    const track = this.tracks.get(id);
    if (!track || !track.hasGap()) return undefined;
    const firstHeld = track.lowestHeld();
    const skipTo = firstHeld !== undefined ? firstHeld - 1 : track.knownTop;
    /** @type {[number, number]} */
    const skipped = [track.delivered + 1, skipTo];
    track.delivered = skipTo;
    track.drain(out);
    if (firstHeld === undefined) track.knownTop = track.delivered;
    this.refresh(id);
    return skipped;
  }
}
