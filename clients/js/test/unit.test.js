// Pure parts of the SDK: the Reorderer (ported from the Rust client, with its tests), backoff,
// addresses and ids, storage.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Backoff, MemoryStorage, Reorderer, httpBase, newClientMsgId, wsUrl } from '../src/index.js';

/** @param {number} conversation_id @param {number} seq @returns {import('../src/types.js').Message} */
function msg(conversation_id, seq) {
  return {
    conversation_id,
    seq,
    pos: conversation_id * 1000 + seq,
    sender_id: 1,
    client_msg_id: `c${conversation_id}-${seq}`,
    content: { type: 'text', text: `${conversation_id}/${seq}` },
    sent_at_ms: 0,
  };
}

/** @param {number} id @param {number} from @param {number} to */
function page(id, from, to) {
  const messages = [];
  for (let s = from; s <= to; s++) messages.push(msg(id, s));
  return { messages, more: false };
}

const seqs = (/** @type {any[]} */ out) => out.map((m) => m.seq);

describe('Reorderer', () => {
  it('releases in-order messages at once', () => {
    const r = new Reorderer();
    const out = [];
    for (let seq = 1; seq <= 5; seq++) assert.equal(r.offer(msg(1, seq), out), 'released');
    assert.deepEqual(seqs(out), [1, 2, 3, 4, 5]);
    assert.equal(r.delivered(1), 5);
    assert.equal(r.hasGaps(), false);
  });

  it('drops duplicates whatever their source', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 1), out);
    r.offer(msg(1, 2), out);
    assert.equal(r.offer(msg(1, 1), out), 'duplicate');
    assert.equal(r.offer(msg(1, 2), out), 'duplicate');
    assert.equal(r.offer(msg(1, 5), out), 'held_back');
    assert.equal(r.offer(msg(1, 5), out), 'duplicate');
    assert.equal(r.held(1), 1);
    assert.deepEqual(seqs(out), [1, 2]);
    assert.equal(r.offer(msg(1, 0), out), 'duplicate');
  });

  it('holds back successors of a gap until it is filled', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 1), out);
    assert.equal(r.offer(msg(1, 4), out), 'held_back');
    assert.equal(r.offer(msg(1, 3), out), 'held_back');
    assert.deepEqual(r.gaps(), [{ conversation_id: 1, after: 1, until: 4 }]);
    assert.equal(r.offer(msg(1, 2), out), 'released');
    assert.deepEqual(seqs(out), [1, 2, 3, 4]);
    assert.equal(r.hasGaps(), false);
    assert.equal(r.held(1), 0);
  });

  it('keeps conversations independent', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 1), out);
    r.offer(msg(2, 2), out);
    r.offer(msg(3, 1), out);
    assert.deepEqual(out.map((m) => [m.conversation_id, m.seq]), [[1, 1], [3, 1]]);
    assert.deepEqual(r.gaps(), [{ conversation_id: 2, after: 0, until: 2 }]);
  });

  it('fills a gap from a history page, in parts', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 1), out);
    r.offer(msg(1, 10), out);
    assert.equal(r.fill(1, 1, page(1, 2, 5), out).outcome, 'progress');
    assert.deepEqual(r.gap(1), { conversation_id: 1, after: 5, until: 10 });
    assert.equal(r.fill(1, 5, page(1, 6, 9), out).outcome, 'closed');
    assert.deepEqual(seqs(out), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('skips what history shows does not exist for this user', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 8), out);
    const { outcome, skipped } = r.fill(1, 0, page(1, 5, 8), out);
    assert.equal(outcome, 'closed');
    assert.deepEqual(skipped, [1, 4]);
    assert.deepEqual(seqs(out), [5, 6, 7, 8]);
  });

  it('reports no progress for an empty page and can give up on the gap', () => {
    const r = new Reorderer();
    const out = [];
    r.offer(msg(1, 1), out);
    r.offer(msg(1, 4), out);
    assert.equal(r.fill(1, 1, { messages: [], more: false }, out).outcome, 'no_progress');
    assert.deepEqual(r.skipGap(1, out), [2, 3]);
    assert.deepEqual(seqs(out), [1, 4]);
    assert.equal(r.hasGaps(), false);
  });

  it('resumes from saved delivered seqs and starts conversations at the present', () => {
    const r = new Reorderer({ 7: 3 });
    const out = [];
    assert.equal(r.offer(msg(7, 3), out), 'duplicate');
    assert.equal(r.offer(msg(7, 4), out), 'released');
    r.startAt(9, 20);
    assert.equal(r.offer(msg(9, 20), out), 'duplicate');
    assert.equal(r.offer(msg(9, 21), out), 'released');
    assert.deepEqual(r.deliveredAll(), { 7: 4, 9: 21 });
  });

  it('bounds what it holds back, and the gap still reaches the dropped ones', () => {
    const r = new Reorderer();
    r.heldMax = 3;
    const out = [];
    for (const seq of [5, 6, 7, 8, 9]) r.offer(msg(1, seq), out);
    assert.equal(r.held(1), 3);
    assert.equal(r.gap(1)?.until, 9);
    r.fill(1, 0, page(1, 1, 9), out);
    assert.deepEqual(seqs(out), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe('Backoff', () => {
  it('doubles its ceiling up to the cap, with full jitter below it', () => {
    const b = new Backoff();
    assert.equal(b.ceiling(0), 100);
    assert.equal(b.ceiling(1), 200);
    assert.equal(b.ceiling(6), 6400);
    assert.equal(b.ceiling(7), 10_000);
    assert.equal(b.ceiling(1000), 10_000);
    const delays = new Set();
    for (let i = 0; i < 200; i++) {
      const d = b.delay(5);
      assert.ok(d >= 0 && d <= b.ceiling(5));
      delays.add(d);
    }
    assert.ok(delays.size > 100, 'delays are spread');
    assert.equal(b.delay(3, () => 0), 0);
  });
});

describe('addresses and ids', () => {
  it('accepts a server address in any form', () => {
    for (const server of ['http://127.0.0.1:8080', 'http://127.0.0.1:8080/', 'ws://127.0.0.1:8080', '127.0.0.1:8080', 'ws://127.0.0.1:8080/v1/ws']) {
      assert.equal(httpBase(server), 'http://127.0.0.1:8080');
      assert.equal(wsUrl(server, 't+k'), 'ws://127.0.0.1:8080/v1/ws?token=t%2Bk');
    }
    assert.equal(wsUrl('https://chat.example', 't'), 'wss://chat.example/v1/ws?token=t');
    assert.throws(() => httpBase('ftp://h'));
    assert.throws(() => httpBase('http://'));
  });

  it('makes client message ids of the time and 80 random bits', () => {
    const before = Date.now();
    const a = newClientMsgId();
    const after = Date.now();
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, newClientMsgId());
    const time = parseInt(a.slice(0, 12), 16);
    assert.ok(time >= before && time <= after, `${time} not in [${before}, ${after}]`);
  });

  it('has a memory storage with the Web Storage API', () => {
    const s = new MemoryStorage();
    s.setItem('a', '1');
    assert.equal(s.getItem('a'), '1');
    assert.equal(s.key(0), 'a');
    assert.equal(s.length, 1);
    s.removeItem('a');
    assert.equal(s.getItem('a'), null);
  });
});
