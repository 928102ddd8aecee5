// The SDK against a real `natter serve`, started by this file: accounts, sends and their
// dedupe, two clients chatting, sync after reconnect and after a server crash, gap filling, the
// outbox surviving a "reload", typing, receipts, presence, history paging, revocation.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { MemoryStorage, NatterApi, NatterClient, NatterError } from '../src/index.js';
import { collectMessages, nextEvent, register, startClient, texts, waitFor } from './helpers.js';
import { startServer } from './server.js';

/** @type {import('./server.js').TestServer} */
let server;
/** @type {NatterClient[]} */
const clients = [];

/** @param {string} token @param {Partial<import('../src/client.js').ClientOptions>} [options] */
function client(token, options) {
  const c = startClient(server.url, token, options);
  clients.push(c);
  return c;
}

/** Two users with a direct conversation. */
async function pair() {
  const alice = await register(server.url, 'alice');
  const bob = await register(server.url, 'bob');
  const conversation = await alice.api.createDirect(bob.user.id);
  return { alice, bob, conversation };
}

before(async () => {
  server = await startServer({ args: ['--typing-ttl-ms', '700'] });
});

after(async () => {
  for (const c of clients) c.close();
  await server.close();
});

describe('accounts', () => {
  it('registers, logs in on a second device, lists and revokes devices', async () => {
    const alice = await register(server.url, 'alice');
    assert.equal(alice.user.display_name, 'alice');
    const api = new NatterApi(server.url);
    const second = await api.login({ username: alice.username, password: alice.password, device_name: 'laptop' });
    assert.equal(second.user.id, alice.user.id);
    assert.notEqual(second.token, alice.token);
    assert.equal((await api.me()).username, alice.username);
    const { devices } = await api.devices();
    assert.equal(devices.length, 2);
    assert.equal(devices.filter((d) => d.current).length, 1);
    const first = devices.find((d) => !d.current);
    assert.ok(first);
    await api.revokeDevice(first.id);
    await assert.rejects(alice.api.me(), (/** @type {NatterError} */ e) => e.code === 'unauthorized' && e.status === 401);
  });

  it('refuses a wrong password and a taken username with their codes', async () => {
    const alice = await register(server.url, 'alice');
    const api = new NatterApi(server.url);
    await assert.rejects(api.login({ username: alice.username, password: 'nope nope nope' }), (/** @type {NatterError} */ e) => {
      assert.ok(e instanceof NatterError);
      assert.equal(e.code, 'wrong_password');
      assert.equal(e.status, 401);
      return true;
    });
    await assert.rejects(api.register({ username: alice.username, password: 'another password' }), /** @param {NatterError} e */ (e) => e.code === 'username_taken');
  });

  it('stops a client whose token is refused, and one whose device is revoked', async () => {
    const bad = client('not-a-token');
    const stopped = await nextEvent(bad, 'stopped');
    assert.equal(stopped.error.code, 'unauthorized');
    assert.equal(bad.status, 'stopped');

    const alice = await register(server.url, 'alice');
    const c = client(alice.token);
    await nextEvent(c, 'synced');
    const other = new NatterApi(server.url);
    await other.login({ username: alice.username, password: alice.password });
    const mine = (await other.devices()).devices.find((d) => !d.current);
    assert.ok(mine);
    const revoked = nextEvent(c, 'stopped');
    await other.revokeDevice(mine.id);
    const event = await revoked;
    assert.equal(event.error.code, 'unauthorized');
    assert.equal(event.code, 4001);
    await assert.rejects(c.send(1, 'too late'), /** @param {NatterError} e */ (e) => e.code === 'unauthorized');
  });
});

describe('users', () => {
  it('looks up a past member by id, over the socket and REST, and no stranger', async () => {
    const alice = await register(server.url, 'alice');
    const bob = await register(server.url, 'bob');
    const stranger = await register(server.url, 'carol');
    const group = await alice.api.createGroup('Past members', [bob.user.id]);
    await bob.api.leave(group.id);
    // Bob is no longer in `members`: the id is all the timeline has of him.
    assert.ok(!(await alice.api.conversation(group.id)).members.some((m) => m.user_id === bob.user.id));
    const a = client(alice.token);
    assert.deepEqual(await a.lookupUserById(bob.user.id), bob.user);
    assert.deepEqual(await alice.api.lookupUserById(bob.user.id), bob.user);
    // Bob, who left, may name Alice too; and everyone may look themselves up.
    assert.equal((await bob.api.lookupUserById(alice.user.id)).username, alice.username);
    assert.equal((await a.lookupUserById(alice.user.id)).id, alice.user.id);
    // Someone who never shared a conversation is not found, however asked.
    await assert.rejects(a.lookupUserById(stranger.user.id), /** @param {NatterError} e */ (e) => e.code === 'not_found');
    await assert.rejects(alice.api.lookupUserById(stranger.user.id), /** @param {NatterError} e */ (e) => e.code === 'not_found' && e.status === 404);
  });
});

describe('sending', () => {
  it('acknowledges a send and dedupes a resent client message id', async () => {
    const { alice, bob, conversation } = await pair();
    const c = client(alice.token);
    const ack = await c.send(conversation.id, 'hello', { clientMsgId: 'fixed-id-0001' });
    assert.equal(ack.duplicate, false);
    assert.equal(ack.client_msg_id, 'fixed-id-0001');
    // The same id again, from this client, another client and over HTTP: one message.
    const again = await c.send(conversation.id, 'hello', { clientMsgId: 'fixed-id-0001' });
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, ack.seq);
    const other = client(alice.token);
    assert.equal((await other.send(conversation.id, 'hello', { clientMsgId: 'fixed-id-0001' })).seq, ack.seq);
    const rest = await alice.api.send(conversation.id, 'hello', { clientMsgId: 'fixed-id-0001' });
    assert.equal(rest.duplicate, true);
    const page = await bob.api.history(conversation.id, { after: 0 });
    assert.deepEqual(texts(page.messages).filter((t) => t === 'hello'), ['hello']);
  });

  it('refuses for good what the server refuses, and keeps nothing of it', async () => {
    const { alice } = await pair();
    const stranger = await pair();
    const c = client(alice.token);
    const failed = nextEvent(c, 'sendfailed');
    await assert.rejects(c.send(stranger.conversation.id, 'let me in'), /** @param {NatterError} e */ (e) => e.code === 'not_member');
    assert.equal((await failed).error.code, 'not_member');
    assert.deepEqual(c.pending(), []);
    await assert.rejects(c.send(stranger.conversation.id, '   '), /** @param {NatterError} e */ (e) => e.code === 'invalid_request');
  });
});

describe('two clients', () => {
  it('exchange messages both ways, each exactly once and in order', async () => {
    const { alice, bob, conversation } = await pair();
    const a = client(alice.token);
    const b = client(bob.token);
    const atAlice = collectMessages(a);
    const atBob = collectMessages(b);
    await Promise.all([nextEvent(a, 'synced'), nextEvent(b, 'synced')]);
    const acks = await Promise.all(Array.from({ length: 20 }, (_, i) => a.send(conversation.id, `a${i}`)));
    assert.deepEqual(acks.map((x) => x.seq), [...acks.map((x) => x.seq)].sort((x, y) => x - y));
    const first = acks[0];
    await b.send(conversation.id, 'hi alice', { replyTo: first.seq });
    await waitFor(() => atBob.length >= 21 && atAlice.length >= 21, 'both to see everything');
    for (const seen of [atAlice, atBob]) {
      const mine = seen.filter((m) => m.conversation_id === conversation.id);
      const seqList = mine.map((m) => m.seq);
      assert.deepEqual(seqList, [...new Set(seqList)].sort((x, y) => x - y), 'in order, no repeat');
      assert.deepEqual(seqList, Array.from({ length: seqList.length }, (_, i) => i + 1), 'no gap');
      const reply = mine.find((m) => m.content.type === 'text' && m.content.text === 'hi alice');
      assert.equal(reply?.reply_to, first.seq);
      assert.deepEqual(texts(mine).filter((t) => t.startsWith('a')), Array.from({ length: 20 }, (_, i) => `a${i}`));
    }
  });

  it('show typing, which stops or expires by itself, and throttle it', async () => {
    const { alice, bob, conversation } = await pair();
    const a = client(alice.token);
    const b = client(bob.token);
    await Promise.all([nextEvent(a, 'synced'), nextEvent(b, 'synced')]);
    const raw = [];
    b.on('typing', (e) => raw.push(e));
    const typing = nextEvent(b, 'typingchange', (e) => e.user_ids.includes(alice.user.id));
    for (let i = 0; i < 10; i++) a.setTyping(conversation.id);
    await typing;
    assert.deepEqual(b.typing(conversation.id), [alice.user.id]);
    // Ten keystrokes made one notification (and none was refused by the rate limit).
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(raw.length, 1);
    const stopped = nextEvent(b, 'typingchange', (e) => e.user_ids.length === 0);
    a.setTyping(conversation.id, false);
    await stopped;
    // Without a stop, it expires after the server's ttl (700 ms here).
    a.setTyping(conversation.id);
    await nextEvent(b, 'typingchange', (e) => e.user_ids.length === 1);
    const started = Date.now();
    await nextEvent(b, 'typingchange', (e) => e.user_ids.length === 0, 3000);
    assert.ok(Date.now() - started >= 400, 'expired by ttl');
  });

  it('get delivered and read receipts', async () => {
    const { alice, bob, conversation } = await pair();
    const a = client(alice.token);
    const b = client(bob.token, { autoDelivered: true });
    await Promise.all([nextEvent(a, 'synced'), nextEvent(b, 'synced')]);
    const delivered = nextEvent(a, 'receipt', (r) => r.user_id === bob.user.id && r.delivered_seq > 0);
    const ack = await a.send(conversation.id, 'did you get it?');
    assert.ok((await delivered).delivered_seq >= ack.seq);
    const read = nextEvent(a, 'receipt', (r) => r.user_id === bob.user.id && r.read_seq >= ack.seq);
    b.markRead(conversation.id, ack.seq);
    assert.equal((await read).conversation_id, conversation.id);
    const state = await a.conversation(conversation.id);
    const bobMember = state.members.find((m) => m.user_id === bob.user.id);
    assert.equal(bobMember?.read_seq, ack.seq);
    const bobView = (await b.conversations()).find((x) => x.id === conversation.id);
    assert.equal(bobView?.unread_count, 0);
  });

  it('see each other come online and go offline', async () => {
    const { alice, bob } = await pair();
    const a = client(alice.token);
    await nextEvent(a, 'synced');
    const online = nextEvent(a, 'presence', (p) => p.user_id === bob.user.id && p.online);
    const b = client(bob.token);
    await online;
    assert.equal(a.presenceOf(bob.user.id)?.online, true);
    const [p] = await a.presence([bob.user.id]);
    assert.equal(p.online, true);
    const offline = nextEvent(a, 'presence', (x) => x.user_id === bob.user.id && !x.online);
    b.close();
    const gone = await offline;
    assert.ok(gone.last_seen_at_ms && gone.last_seen_at_ms > 0);
    // Strangers' presence is not told.
    const stranger = await register(server.url, 'carol');
    assert.deepEqual(await a.presence([stranger.user.id]), []);
  });
});

describe('history and sync', () => {
  it('pages history backwards', async () => {
    const { alice, conversation } = await pair();
    for (let i = 1; i <= 30; i++) await alice.api.send(conversation.id, `m${i}`);
    const a = client(alice.token);
    const head = await a.conversation(conversation.id);
    const newest = await a.history(conversation.id, { before: head.last_seq + 1, limit: 10 });
    assert.deepEqual(texts(newest.messages), Array.from({ length: 10 }, (_, i) => `m${21 + i}`));
    assert.equal(newest.more, true);
    const older = await a.history(conversation.id, { before: newest.messages[0].seq, limit: 10 });
    assert.deepEqual(texts(older.messages), Array.from({ length: 10 }, (_, i) => `m${11 + i}`));
  });

  it('resumes from its saved state: only what is new, once', async () => {
    const { alice, bob, conversation } = await pair();
    const storage = new MemoryStorage();
    await alice.api.send(conversation.id, 'before');
    const b1 = client(bob.token, { storage });
    const first = collectMessages(b1);
    await nextEvent(b1, 'synced');
    await waitFor(() => texts(first).includes('before'), 'the first message');
    b1.close();
    for (let i = 0; i < 5; i++) await alice.api.send(conversation.id, `while away ${i}`);
    const b2 = client(bob.token, { storage });
    const second = collectMessages(b2);
    await nextEvent(b2, 'synced');
    await waitFor(() => second.filter((m) => m.conversation_id === conversation.id).length >= 5, 'five messages');
    assert.deepEqual(texts(second.filter((m) => m.conversation_id === conversation.id)), Array.from({ length: 5 }, (_, i) => `while away ${i}`));
  });

  it('starts from the present with initialSync "recent"', async () => {
    const { alice, bob, conversation } = await pair();
    for (let i = 0; i < 3; i++) await alice.api.send(conversation.id, `old ${i}`);
    const b = client(bob.token, { initialSync: 'recent' });
    const seen = collectMessages(b);
    const conversations = [];
    b.on('conversation', (c) => conversations.push(c));
    await nextEvent(b, 'synced');
    assert.ok(conversations.some((c) => c.id === conversation.id && (c.unread_count ?? 0) >= 3));
    await alice.api.send(conversation.id, 'new');
    await waitFor(() => seen.length >= 1, 'the new message');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(texts(seen), ['new']);
  });

  it('starts again from 0 when its saved cursor is above the server\'s position', async () => {
    const { alice, bob, conversation } = await pair();
    const group = await alice.api.createGroup('Restored', [bob.user.id]);
    for (let i = 1; i <= 3; i++) await alice.api.send(conversation.id, `direct ${i}`);
    for (let i = 1; i <= 3; i++) await alice.api.send(group.id, `group ${i}`);
    const storage = new MemoryStorage();
    const first = client(bob.token, { storage });
    const seenFirst = collectMessages(first);
    await nextEvent(first, 'synced');
    await waitFor(() => seenFirst.length >= 7, 'the first sync');
    first.close();
    // The state saved by a client of this server, with a cursor this server never issued (as
    // if it came from another deployment, or the server were restored from an older backup).
    const probe = new NatterClient({ server: server.url, token: bob.token, storage });
    assert.equal(probe.state.delivered[conversation.id], 3);
    probe.cursor = 1e9;
    probe.saveState();

    const b = client(bob.token, { storage });
    /** @type {import('../src/types.js').Message[]} */
    let seen = [];
    b.on('message', (m) => seen.push(m));
    /** @type {{cursor: number, server_cursor: number}[]} */
    const resets = [];
    b.on('reset', (e) => {
      resets.push(e);
      // What an application does: drop what it holds; it all comes again.
      seen = [];
    });
    const synced = await nextEvent(b, 'synced');
    assert.equal(resets.length, 1);
    assert.equal(resets[0].cursor, 1e9);
    assert.ok(resets[0].server_cursor < 1e9);
    assert.ok(synced.cursor >= resets[0].server_cursor && synced.cursor < 1e9);
    await waitFor(() => seen.length >= 7, 'every message again');
    await alice.api.send(group.id, 'after the reset');
    await waitFor(() => texts(seen).includes('after the reset'), 'a live message');
    await new Promise((r) => setTimeout(r, 100));
    // Every message of both conversations, once and in order, and no second reset.
    assert.deepEqual(texts(seen.filter((m) => m.conversation_id === conversation.id)), ['direct 1', 'direct 2', 'direct 3']);
    assert.deepEqual(texts(seen.filter((m) => m.conversation_id === group.id)), ['<created>', 'group 1', 'group 2', 'group 3', 'after the reset']);
    assert.equal(seen.length, 8);
    assert.equal(resets.length, 1);
    assert.ok(b.state.cursor > 0 && b.state.cursor < 1e9);
    assert.equal(b.state.delivered[group.id], 5);
  });

  it('fills a gap with history, in order', async () => {
    const { alice, bob, conversation } = await pair();
    for (let i = 1; i <= 9; i++) await alice.api.send(conversation.id, `g${i}`);
    const head = await bob.api.conversation(conversation.id);
    // A saved state whose cursor is at the head but that delivered only up to seq 3: the next
    // live message opens a gap that history must fill.
    const storage = new MemoryStorage();
    const probe = new NatterClient({ server: server.url, token: bob.token, storage });
    probe.cursor = head.last_pos;
    probe.reorder.startAt(conversation.id, 3);
    probe.userId = bob.user.id;
    probe.saveState();
    const b = client(bob.token, { storage });
    const seen = collectMessages(b);
    const skipped = [];
    b.on('skipped', (e) => skipped.push(e));
    await nextEvent(b, 'synced');
    assert.equal(seen.length, 0);
    await alice.api.send(conversation.id, 'g10');
    await waitFor(() => texts(seen).includes('g10'), 'the gap to be filled');
    assert.deepEqual(texts(seen), ['g4', 'g5', 'g6', 'g7', 'g8', 'g9', 'g10']);
    assert.deepEqual(seen.map((m) => m.seq), [4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(skipped, []);
    assert.equal(b.state.delivered[conversation.id], 10);
  });
});

/**
 * A WebSocket that notes, in order, the type of every frame it sends (`→ sync`) and of every
 * frame it receives (`← hello`).
 * @param {string[]} log
 */
function recordingWebSocket(log) {
  const Base = /** @type {any} */ (globalThis).WebSocket;
  return class extends Base {
    /** @param {string} url @param {string | string[]} [protocols] */
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener('message', (/** @type {MessageEvent} */ event) => {
        log.push(`← ${JSON.parse(event.data).type}`);
      });
    }

    /** @param {string} data */
    send(data) {
      const frame = JSON.parse(data);
      log.push(frame.type === 'sync' ? `→ sync ${frame.cursor}` : `→ ${frame.type}`);
      super.send(data);
    }
  };
}

describe('pipelined sync', () => {
  it('sends its first sync before the hello comes, and applies its page', async () => {
    const { alice, bob, conversation } = await pair();
    await alice.api.send(conversation.id, 'one');
    /** @type {string[]} */
    const log = [];
    const storage = new MemoryStorage();
    const b1 = client(bob.token, { storage, WebSocket: recordingWebSocket(log) });
    const first = collectMessages(b1);
    await nextEvent(b1, 'synced');
    assert.deepEqual(log.slice(0, 3), ['→ sync 0', '← hello', '← result']);
    assert.deepEqual(texts(first), ['one']);
    b1.close();

    await alice.api.send(conversation.id, 'two');
    log.length = 0;
    const b2 = client(bob.token, { storage, WebSocket: recordingWebSocket(log) });
    const second = collectMessages(b2);
    await nextEvent(b2, 'synced');
    assert.equal(log[0], `→ sync ${b1.state.cursor}`);
    assert.equal(log[1], '← hello');
    assert.equal(log.filter((l) => l.startsWith('→ sync')).length, 1);
    assert.deepEqual(texts(second), ['two']);
  });

  it('drops the early page when the hello names another user than the saved cursor\'s', async () => {
    const { alice, bob, conversation } = await pair();
    for (let i = 1; i <= 3; i++) await alice.api.send(conversation.id, `to bob ${i}`);
    const head = await alice.api.conversation(conversation.id);
    // Alice's saved state, at a cursor above every message of bob's: the page bob's token gets
    // for it holds none of them.
    const storage = new MemoryStorage();
    const asAlice = new NatterClient({ server: server.url, token: alice.token, storage });
    asAlice.userId = alice.user.id;
    asAlice.cursor = head.last_pos;
    asAlice.saveState();
    /** @type {string[]} */
    const log = [];
    const b = client(bob.token, { storage, WebSocket: recordingWebSocket(log) });
    const seen = collectMessages(b);
    await nextEvent(b, 'synced');
    assert.deepEqual(log.slice(0, 2), [`→ sync ${head.last_pos}`, '← hello']);
    assert.ok(log.includes('→ sync 0'), log.join(', '));
    assert.deepEqual(texts(seen.filter((m) => m.conversation_id === conversation.id)), ['to bob 1', 'to bob 2', 'to bob 3']);
  });

  it('sends nothing before the hello when it starts from the present', async () => {
    const { bob } = await pair();
    /** @type {string[]} */
    const log = [];
    const b = client(bob.token, { initialSync: 'recent', WebSocket: recordingWebSocket(log) });
    await nextEvent(b, 'synced');
    assert.equal(log[0], '← hello');
  });
});

describe('outbox', () => {
  it('survives a reload: pending messages are sent once, with their ids', async () => {
    const { alice, bob, conversation } = await pair();
    const storage = new MemoryStorage();
    // A client that cannot reach any server (nothing listens on port 9).
    const offline = new NatterClient({ server: 'http://127.0.0.1:9', token: alice.token, storage, storageKey: 'alice', backoff: { baseMs: 50, capMs: 100 } });
    offline.start();
    const sends = [offline.send(conversation.id, 'written offline 1'), offline.send(conversation.id, 'written offline 2')];
    const ids = offline.pending().map((e) => e.client_msg_id);
    assert.equal(ids.length, 2);
    // One of them was in fact committed before the "page" went away (its ack was lost).
    await alice.api.send(conversation.id, 'written offline 1', { clientMsgId: ids[0] });
    offline.close();
    await Promise.all(sends.map((p) => assert.rejects(p, /** @param {NatterError} e */ (e) => e.code === 'closed')));

    const b = client(bob.token);
    const atBob = collectMessages(b);
    await nextEvent(b, 'synced');
    const a = client(alice.token, { storage, storageKey: 'alice' });
    assert.deepEqual(a.pending().map((e) => e.client_msg_id), ids);
    const acks = [];
    a.on('ack', (e) => acks.push(e.ack));
    await waitFor(() => acks.length === 2, 'both acks');
    assert.deepEqual(acks.map((x) => x.client_msg_id), ids);
    assert.deepEqual(acks.map((x) => x.duplicate), [true, false]);
    assert.deepEqual(a.pending(), []);
    await waitFor(() => atBob.length >= 2, 'bob to get them');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(texts(atBob.filter((m) => m.conversation_id === conversation.id)), ['written offline 1', 'written offline 2']);
  });

  it('never sends a saved outbox with another user\'s token', async () => {
    const { alice, bob, conversation } = await pair();
    const storage = new MemoryStorage();
    const asAlice = new NatterClient({ server: 'http://127.0.0.1:9', token: alice.token, storage });
    asAlice.userId = alice.user.id;
    asAlice.saveState();
    asAlice.send(conversation.id, 'alice only');
    asAlice.close();
    const asBob = client(bob.token, { storage });
    await nextEvent(asBob, 'synced');
    assert.deepEqual(asBob.pending(), []);
    const page = await bob.api.history(conversation.id, { after: 0 });
    assert.ok(!texts(page.messages).includes('alice only'));
  });
});

describe('the network', () => {
  it('gives a connection up when told the network is gone, reconnects, and sends what waited once', async () => {
    const { alice, bob, conversation } = await pair();
    const a = client(alice.token);
    const b = client(bob.token);
    await a.send(conversation.id, 'before');
    await waitFor(() => a.connected && b.connected, 'both connected');
    const dropped = nextEvent(a, 'disconnected');
    a.dropConnection();
    assert.deepEqual(await dropped, { reason: 'the network went away', code: undefined, reconnecting: true });
    assert.equal(a.connected, false);
    // Sent while the connection is down: it waits in the outbox and goes once it is back.
    const ack = a.send(conversation.id, 'while away');
    a.reconnectNow();
    await ack;
    await waitFor(() => a.connected, 'alice connected again');
    a.dropConnection('once more');
    a.reconnectNow();
    await a.send(conversation.id, 'after');
    const page = await bob.api.history(conversation.id, { after: 0 });
    assert.deepEqual(texts(page.messages), ['before', 'while away', 'after']);
    // Not connected: nothing to give up.
    const idle = new NatterClient({ server: server.url, token: alice.token, storage: new MemoryStorage() });
    idle.dropConnection();
    assert.equal(idle.connected, false);
  });
});

describe('server restarts', () => {
  it('reconnects after a crash and a clean restart, syncs, and loses or repeats nothing', async () => {
    const own = await startServer();
    try {
      const alice = await register(own.url, 'alice');
      const bob = await register(own.url, 'bob');
      const conversation = await alice.api.createDirect(bob.user.id);
      const a = startClient(own.url, alice.token);
      const b = startClient(own.url, bob.token);
      clients.push(a, b);
      const atBob = collectMessages(b);
      await Promise.all([nextEvent(a, 'synced'), nextEvent(b, 'synced')]);
      await a.send(conversation.id, 'before the crash');

      const down = nextEvent(b, 'disconnected');
      await own.kill();
      assert.equal((await down).reconnecting, true);
      // Sent while the server is down: waits in the outbox.
      const pendingSend = a.send(conversation.id, 'during the crash');
      assert.equal(a.pending().length, 1);
      await own.restart();
      await pendingSend;
      await alice.api.send(conversation.id, 'after the restart');

      // A clean restart: the server says `reconnect` and closes with 1012.
      await waitFor(() => texts(atBob).includes('after the restart'), 'bob to catch up');
      const restart = nextEvent(b, 'disconnected');
      await own.stop();
      const event = await restart;
      assert.ok(event.code === 1012 || /reconnect/.test(event.reason), `${event.code} ${event.reason}`);
      await own.restart();
      await nextEvent(b, 'synced', () => true, 15_000);
      await alice.api.send(conversation.id, 'after the clean restart');
      await waitFor(() => texts(atBob).includes('after the clean restart'), 'the last message');
      const mine = atBob.filter((m) => m.conversation_id === conversation.id);
      assert.deepEqual(texts(mine), ['before the crash', 'during the crash', 'after the restart', 'after the clean restart']);
    } finally {
      await own.close();
    }
  });
});
