// The high-level client: stays connected, syncs, delivers every message exactly once and in
// order, and retries sends until they are acknowledged — the semantics of the Rust client
// (crates/client/src/client.rs), in one event-driven object.
//
// Delivery. After every (re)connect the client sends `sync {cursor}` until a page says
// `more: false`, applying each page (conversations, then messages) before taking its cursor. Live
// events are applied as they come; their `cursor` is adopted only once that sync is done. Every
// message goes through the Reorderer (dedupe and order by seq); gaps it finds are filled with
// `history {after}` once the sync is done. The saved state (cursor and per-conversation delivered
// seq) only covers what was handed to listeners, and the cursor never moves past an open gap.
//
// Sends. `send` puts the message in the outbox, which is saved in storage before anything goes
// out. Every entry is sent on every connection, oldest first, with the same `client_msg_id`, until
// the server acknowledges it (`duplicate: true` is a success too) or refuses it for good. A page
// reload finds the outbox in storage and sends what is left.

import { Backoff } from './backoff.js';
import { CloseCode, Connection } from './connection.js';
import { NatterError } from './errors.js';
import { Reorderer } from './order.js';
import { NatterApi } from './rest.js';
import { Namespace, defaultStorage } from './storage.js';
import { newClientMsgId, wsUrl } from './util.js';

/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').Conversation} Conversation */
/** @typedef {import('./types.js').Receipt} Receipt */
/** @typedef {import('./types.js').Presence} Presence */
/** @typedef {import('./types.js').Hello} Hello */
/** @typedef {import('./types.js').Ack} Ack */
/** @typedef {import('./types.js').Content} Content */
/** @typedef {import('./types.js').HistoryPage} HistoryPage */
/** @typedef {import('./types.js').SyncPage} SyncPage */
/** @typedef {import('./types.js').User} User */
/** @typedef {import('./types.js').Device} Device */
/** @typedef {import('./types.js').Role} Role */
/** @typedef {import('./storage.js').StorageLike} StorageLike */
/** @typedef {import('./connection.js').WebSocketConstructor} WebSocketConstructor */

/** Gap fills in flight at once. */
const FILLS_IN_FLIGHT_MAX = 4;
/** After this many fills that bring nothing, a gap is skipped (and reported). */
const FILL_FAILURES_MAX = 5;
/** Typing commands are spaced at least this far apart (the server allows 2 per second). */
const TYPING_SPACING_MS = 500;
/** How long marks are gathered before they are sent. */
const MARK_DELAY_MS = 150;

/**
 * @typedef {object} ClientOptions
 * @property {string} server The server address, e.g. `http://127.0.0.1:8080` (`location.origin`
 *   in a browser); `https://` gives `wss://`.
 * @property {string} token The device token from `login` or `register`.
 * @property {StorageLike | null} [storage] Where the outbox and the delivery state survive a
 *   reload: `localStorage` by default in a browser, memory elsewhere.
 * @property {string} [storageKey] Namespace inside the storage; give one per account (e.g. the
 *   user id) when one storage serves several. Default `"default"`.
 * @property {'full' | 'recent'} [initialSync] With no saved state: `full` (default, like the Rust
 *   client) delivers every message from the beginning; `recent` starts from the present — the
 *   conversations are reported and only messages after them are delivered (load older ones with
 *   `history`). Apps that show history on demand want `recent`.
 * @property {boolean} [autoDelivered] Mark messages of others as delivered as they arrive
 *   (default true): that is what turns the sender's ✓ into ✓✓.
 * @property {{baseMs?: number, capMs?: number}} [backoff] Reconnect delays (full jitter), 100 ms
 *   doubling up to 10 s by default.
 * @property {number} [requestTimeoutMs] A command's reply must come within this (default 30 s);
 *   past it the connection is deemed dead and replaced.
 * @property {number} [connectTimeoutMs] The `hello` must come within this (default 15 s).
 * @property {number} [sendWindow] Sends written and not yet acknowledged (default 64).
 * @property {number} [stableAfterMs] A connection that lasted this long resets the backoff.
 * @property {number} [typingIntervalMs] `typing` is sent at most this often per conversation
 *   (default 3 s; the server allows 2 per second per user).
 * @property {WebSocketConstructor} [WebSocket] A WebSocket implementation; default the global one
 *   (Node 20 needs `--experimental-websocket`, or pass the `ws` package's).
 * @property {typeof fetch} [fetch] A fetch implementation; default the global one.
 */

/**
 * A message waiting in the outbox.
 * @typedef {object} OutboxEntry
 * @property {string} client_msg_id
 * @property {number} conversation_id
 * @property {Content} content
 * @property {number} [reply_to]
 * @property {number} created_at_ms
 * @property {number} attempts How often it was written to a socket (this page's life).
 * @property {'queued' | 'sending' | 'waiting'} state `waiting`: retried after a delay.
 */

/** @typedef {'idle' | 'connecting' | 'syncing' | 'online' | 'offline' | 'stopped'} Status */

/**
 * Everything the client reports, by event name.
 * @typedef {object} ClientEvents
 * @property {{status: Status}} status The connection status changed.
 * @property {{attempt: number}} connecting A connection attempt starts.
 * @property {{hello: Hello}} connected A connection is up; sync starts now.
 * @property {{cursor: number}} synced The post-connect sync is done: everything up to `cursor`
 *   was delivered.
 * @property {{cursor: number, server_cursor: number}} reset The saved cursor (`cursor`) is
 *   above the server's position (`server_cursor`): it came from another deployment, or from
 *   before the server was restored from an older backup. The client dropped its delivery state
 *   and syncs again as if new (from 0; from the present with `initialSync: 'recent'`): drop the
 *   conversations and messages you hold, they come again. At most once per connection.
 * @property {Message} message Each message exactly once, in seq order per conversation.
 * @property {{conversation_id: number, first: number, last: number}} skipped Messages
 *   `first..=last` will never be delivered (not visible to this user, or not fetchable).
 * @property {Receipt} receipt A member's delivered/read markers moved.
 * @property {Conversation} conversation A conversation's current state (sync, change, bootstrap).
 * @property {{conversation_id: number, user_id: number, active: boolean, ttl_ms: number}} typing
 *   The raw typing event.
 * @property {{conversation_id: number, user_ids: number[]}} typingchange Who is typing in a
 *   conversation now (expiry included).
 * @property {Presence} presence A user came online or went offline (or a `presence` answer).
 * @property {{reason: string, code?: number, reconnecting: boolean}} disconnected A connection ended.
 * @property {{entries: OutboxEntry[]}} outbox The outbox changed.
 * @property {{entry: OutboxEntry, ack: Ack}} ack A send was acknowledged (committed).
 * @property {{entry: OutboxEntry, error: NatterError}} sendfailed The server refused a message
 *   for good; it left the outbox.
 * @property {{reason: string, code?: number, error: NatterError}} stopped The client stopped for
 *   good: `error.code` `unauthorized` means log in again.
 */

/**
 * @typedef {object} FillState
 * @property {boolean} inFlight
 * @property {number} failures
 * @property {number} retryAt
 */

/**
 * A `sync` sent as soon as the socket opened, before the `hello` said whose connection it is.
 * @typedef {object} EarlySync
 * @property {number} cursor The cursor it asked from.
 * @property {number | undefined} userId The user that cursor belongs to (unknown on a fresh client).
 * @property {Promise<SyncPage> | undefined} reply Set once the socket opened and the sync went.
 */

/**
 * One connection's lifetime.
 * @typedef {object} Session
 * @property {Connection} conn
 * @property {Hello} hello
 * @property {number} started
 * @property {boolean} syncing
 * @property {number} syncCursor
 * @property {boolean} bootstrapping
 * @property {boolean} reset The saved state was dropped on this connection (a foreign cursor).
 * @property {any[]} buffered Events held during the bootstrap.
 * @property {Map<number, FillState>} fills
 * @property {number} sendsInFlight
 * @property {number} historyLimit
 * @property {ReturnType<typeof setInterval> | undefined} heartbeat
 * @property {Set<ReturnType<typeof setTimeout>>} timers
 */

/**
 * How long to wait before retrying a request that failed with `error` on the same connection,
 * or `undefined` when retrying makes no sense.
 * @param {NatterError} error
 */
export function retryDelay(error) {
  switch (error.code) {
    case 'rate_limited':
      return error.retryAfterMs ?? 1000;
    case 'server_full':
    case 'internal':
    case 'too_many_connections':
      return error.retryAfterMs ?? 500;
    case 'shutting_down':
      return 1000;
    default:
      return undefined;
  }
}

/** @param {any} error @returns {NatterError} */
function asNatterError(error) {
  if (error instanceof NatterError) return error;
  return new NatterError('internal', String(error?.message ?? error));
}

export class NatterClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !options.server || !options.token) throw new TypeError('NatterClient needs `server` and `token`');
    this.options = {
      initialSync: options.initialSync ?? 'full',
      autoDelivered: options.autoDelivered ?? true,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 15_000,
      sendWindow: Math.max(1, options.sendWindow ?? 64),
      stableAfterMs: options.stableAfterMs ?? 10_000,
      typingIntervalMs: options.typingIntervalMs ?? 3_000,
    };
    this.server = options.server;
    this.token = options.token;
    this.WebSocket = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (!this.WebSocket) {
      throw new TypeError('no WebSocket implementation: pass `WebSocket` (on Node 20 run with --experimental-websocket, or use the `ws` package)');
    }
    this.url = wsUrl(options.server, options.token);
    this.api = new NatterApi(options.server, { token: options.token, fetch: options.fetch });
    this.backoff = new Backoff(options.backoff);
    this.store = new Namespace(options.storage ?? defaultStorage(), `natter:${options.storageKey ?? 'default'}:`);

    /** @type {Map<keyof ClientEvents, Set<(event: any) => void>>} */
    this.listeners = new Map();

    const saved = this.store.get('state') ?? {};
    /** The user this state belongs to, once known. @type {number | undefined} */
    this.userId = typeof saved.user_id === 'number' ? saved.user_id : undefined;
    /** The sync cursor decided so far. */
    this.cursor = typeof saved.cursor === 'number' ? saved.cursor : 0;
    this.reorder = new Reorderer(saved.delivered ?? {});
    /** A cursor held back while some conversation has a gap below it. */
    this.deferredCursor = 0;

    /** Entries by client_msg_id, oldest first. @type {Map<string, OutboxEntry>} */
    this.outbox = new Map();
    /** @type {Map<string, {resolve: (ack: Ack) => void, reject: (e: NatterError) => void}[]>} */
    this.waiters = new Map();
    /** Order of the newest outbox entry, so that entries of one millisecond keep their order. */
    this.order = 0;
    this.loadOutbox();

    /** @type {Session | null} */
    this.session = null;
    /** @type {Hello | undefined} */
    this.hello = undefined;
    /** @type {Status} */
    this.status = 'idle';
    this.started = false;
    this.stopped = false;
    /** @type {NatterError | undefined} */
    this.stopError = undefined;
    this.connecting = false;
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.reconnectTimer = undefined;
    /** When the next reconnect attempt is due (ms since the epoch), while offline. */
    this.nextRetryAt = 0;
    /** @type {{resolve: (s: Session) => void, reject: (e: NatterError) => void}[]} */
    this.sessionWaiters = [];

    /** Who types where: conversation → user → expiry timer. @type {Map<number, Map<number, ReturnType<typeof setTimeout>>>} */
    this.typists = new Map();
    /** When we last said we type, per conversation. @type {Map<number, number>} */
    this.typingSent = new Map();
    /** Typing states waiting for their turn, per conversation. @type {Map<number, boolean>} */
    this.typingQueue = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.typingTimer = undefined;
    /** When the next typing command may go. */
    this.typingNextAt = 0;
    /** @type {Map<number, Presence>} */
    this.presences = new Map();
    /** Marks to send, per conversation. @type {Map<number, {delivered?: number, read?: number}>} */
    this.marks = new Map();
    /** Highest marks sent, per conversation. @type {Map<number, {delivered: number, read: number}>} */
    this.marksSent = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.markTimer = undefined;
    this.saveQueued = false;
  }

  // ----- events -----

  /**
   * Listen to an event; returns a function that stops listening.
   * @template {keyof ClientEvents} K
   * @param {K} type
   * @param {(event: ClientEvents[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * @template {keyof ClientEvents} K
   * @param {K} type
   * @param {(event: ClientEvents[K]) => void} listener
   */
  off(type, listener) {
    this.listeners.get(type)?.delete(listener);
  }

  /**
   * @template {keyof ClientEvents} K
   * @param {K} type
   * @param {ClientEvents[K]} event
   */
  emit(type, event) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (e) {
        // A listener's bug must not break delivery to the others or the client's state.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** @param {Status} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', { status });
  }

  // ----- lifecycle -----

  /** Start connecting (listeners attached before this see every event). */
  start() {
    if (this.started || this.stopped) return this;
    this.started = true;
    this.connect();
    return this;
  }

  /** True while a connection is up. */
  get connected() {
    return this.session !== null;
  }

  /** The user of this session, once a connection said hello. */
  get user() {
    return this.hello?.user;
  }

  /**
   * Give the connection up now, as if it had been lost, and reconnect with the usual backoff: for
   * when the application knows the network is gone (a browser's `offline` event) before a dead
   * socket would be noticed (up to the server's `idle_timeout_ms`). Sends stay in the outbox;
   * `disconnected` comes with `reconnecting: true`. Does nothing while not connected.
   * @param {string} [reason]
   */
  dropConnection(reason = 'the network went away') {
    const session = this.session;
    if (session) this.endSession(session, reason);
  }

  /** Connect now instead of waiting for the backoff (e.g. when the browser comes back online). */
  reconnectNow() {
    if (!this.started || this.stopped || this.session || this.connecting) return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.connect();
  }

  /**
   * Stop for good: close the connection and save the state. Unacknowledged sends stay in storage
   * (a later client with the same storage sends them); their promises reject with `closed`.
   */
  close() {
    if (this.stopped) return;
    const session = this.session;
    if (session) {
      this.session = null;
      this.teardown(session);
      session.conn.close(1000, 'closed by the client');
      this.emit('disconnected', { reason: 'closed by the client', reconnecting: false });
    }
    this.stop(new NatterError('closed', 'the client was closed'));
  }

  /** Forget everything this client saved: outbox and delivery state. */
  clearStorage() {
    this.store.clear();
  }

  /** @param {NatterError} error */
  stop(error) {
    this.stopped = true;
    this.stopError = error;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.markTimer) clearTimeout(this.markTimer);
    this.reconnectTimer = undefined;
    this.saveState();
    for (const list of this.waiters.values()) for (const w of list) w.reject(error);
    this.waiters.clear();
    for (const w of this.sessionWaiters.splice(0)) w.reject(error);
    for (const id of [...this.typists.keys()]) this.clearTypists(id);
    this.setStatus('stopped');
    if (error.code !== 'closed') this.emit('stopped', { reason: error.message, code: error.closeCode, error });
  }

  connect() {
    if (this.stopped || this.session || this.connecting) return;
    this.connecting = true;
    this.setStatus('connecting');
    this.emit('connecting', { attempt: this.attempt });
    // The first sync goes as soon as the socket is open, without waiting for the hello
    // (protocol.md §9.4); `onConnected` takes its page only if the hello names the user the
    // cursor belongs to. A cursor of 0 belongs to anyone, so a fresh client sends it too.
    /** @type {EarlySync | undefined} */
    const early = !this.wantsBootstrap() && (this.cursor === 0 || this.userId !== undefined)
      ? { cursor: this.cursor, userId: this.userId, reply: undefined }
      : undefined;
    const onOpen = early && ((/** @type {Connection} */ conn) => {
      early.reply = conn.request('sync', { cursor: early.cursor }, this.options.requestTimeoutMs);
      // Left unused when the hello says otherwise: its failure is nobody's business then.
      early.reply.catch(() => {});
    });
    Connection.open(this.url, { WebSocket: this.WebSocket, timeoutMs: this.options.connectTimeoutMs, onOpen }).then(
      (conn) => {
        this.connecting = false;
        if (this.stopped) {
          conn.close();
          return;
        }
        this.onConnected(conn, early);
      },
      (error) => {
        this.connecting = false;
        if (!this.stopped) this.onConnectFailed(asNatterError(error));
      },
    );
  }

  /** @param {NatterError} error */
  onConnectFailed(error) {
    // A refused upgrade (bad or revoked token) looks like any failed connection to a browser:
    // ask over HTTP whether the token is still good before trying again.
    this.api.me().then(
      () => this.scheduleReconnect(),
      (/** @type {NatterError} */ e) => {
        if (this.stopped) return;
        if (e.isAuthError) this.stop(e);
        else this.scheduleReconnect();
      },
    );
    void error;
  }

  scheduleReconnect() {
    if (this.stopped || this.session || this.connecting) return;
    const delay = this.backoff.delay(this.attempt);
    this.attempt += 1;
    this.nextRetryAt = Date.now() + delay;
    this.setStatus('offline');
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
  }

  /** Whether the next session starts from the present (`initialSync: 'recent'`) instead of syncing. */
  wantsBootstrap() {
    return this.options.initialSync === 'recent' && this.cursor === 0
      && Object.keys(this.reorder.deliveredAll()).length === 0;
  }

  /**
   * @param {Connection} conn
   * @param {EarlySync} [early] The sync sent before the hello, if one was.
   */
  onConnected(conn, early) {
    const hello = /** @type {Hello} */ (conn.hello);
    if (this.userId !== undefined && this.userId !== hello.user.id) {
      // The saved state belongs to someone else: never send their outbox with this token.
      this.store.clear();
      this.cursor = 0;
      this.deferredCursor = 0;
      this.reorder = new Reorderer();
      const error = new NatterError('closed', 'the saved outbox belonged to another user');
      for (const list of this.waiters.values()) for (const w of list) w.reject(error);
      this.waiters.clear();
      this.outbox.clear();
      this.emit('outbox', { entries: this.pending() });
    }
    this.userId = hello.user.id;
    this.hello = hello;
    this.deferredCursor = 0;
    const bootstrap = this.wantsBootstrap();
    /** @type {Session} */
    const session = {
      conn,
      hello,
      started: Date.now(),
      syncing: true,
      syncCursor: this.cursor,
      bootstrapping: bootstrap,
      reset: false,
      buffered: [],
      fills: new Map(),
      sendsInFlight: 0,
      historyLimit: hello.limits?.history_page_max || 100,
      heartbeat: undefined,
      timers: new Set(),
    };
    this.session = session;
    this.saveState();
    conn.onEvent = (frame) => this.onFrame(session, frame);
    conn.onClose = (info) => this.endSession(session, info.reason, info.code);
    const interval = hello.limits?.heartbeat_interval_ms || 25_000;
    session.heartbeat = setInterval(() => {
      // Browsers answer the server's pings but cannot see them: a ping of our own finds a dead
      // connection (its reply times out) when nothing else arrives.
      if (Date.now() - conn.lastReceived >= interval) {
        conn.request('ping', {}, this.options.requestTimeoutMs).catch((e) => this.requestFailed(session, e, 'ping'));
      }
    }, interval);
    this.setStatus('syncing');
    this.emit('connected', { hello });
    for (const w of this.sessionWaiters.splice(0)) w.resolve(session);
    for (const entry of this.outbox.values()) entry.state = 'queued';
    // The early page is this session's first if it asked from where the session starts, for
    // this user (a page from 0 is right for anyone).
    const earlyReply = early?.reply && !bootstrap && early.cursor === session.syncCursor
      && (early.cursor === 0 || early.userId === hello.user.id)
      ? early.reply
      : undefined;
    if (bootstrap) this.bootstrap(session);
    else this.syncNext(session, earlyReply);
    this.pumpSends(session);
    this.scheduleMarks(0);
  }

  /** @param {Session} session */
  teardown(session) {
    if (session.heartbeat) clearInterval(session.heartbeat);
    for (const timer of session.timers) clearTimeout(timer);
    session.timers.clear();
    for (const entry of this.outbox.values()) if (entry.state === 'sending') entry.state = 'queued';
    for (const id of [...this.typists.keys()]) this.clearTypists(id);
    this.typingSent.clear();
    this.typingQueue.clear();
    if (this.typingTimer) clearTimeout(this.typingTimer);
    this.typingTimer = undefined;
  }

  /**
   * @param {Session} session
   * @param {string} reason
   * @param {number} [code]
   */
  endSession(session, reason, code) {
    if (this.session !== session) return;
    this.session = null;
    this.teardown(session);
    if (!session.conn.closed) session.conn.close(1000, 'reconnecting');
    const revoked = code === CloseCode.REVOKED;
    this.emit('disconnected', { reason, code, reconnecting: !revoked });
    if (revoked) {
      this.stop(new NatterError('unauthorized', 'this device was logged out', { closeCode: code }));
      return;
    }
    if (Date.now() - session.started >= this.options.stableAfterMs) this.attempt = 0;
    this.scheduleReconnect();
  }

  /**
   * A request of `session` failed: a connection error ends the session.
   * @param {Session} session
   * @param {any} error
   * @param {string} what
   */
  requestFailed(session, error, what) {
    const e = asNatterError(error);
    if (this.session !== session) return;
    if (e.isConnectionError) this.endSession(session, `${what} failed: ${e.message}`, e.closeCode);
  }

  /**
   * Run `fn` after `ms` if the session is still current.
   * @param {Session} session
   * @param {number} ms
   * @param {() => void} fn
   */
  later(session, ms, fn) {
    const timer = setTimeout(() => {
      session.timers.delete(timer);
      if (this.session === session) fn();
    }, ms);
    session.timers.add(timer);
  }

  // ----- sync -----

  /**
   * Start from the present: take the conversation list, start each conversation at its newest
   * message and the cursor at the newest change, then sync from there.
   * @param {Session} session
   */
  bootstrap(session) {
    session.conn.request('conversations', {}, this.options.requestTimeoutMs).then(
      (/** @type {{conversations: Conversation[]}} */ list) => {
        if (this.session !== session) return;
        let top = this.cursor;
        for (const c of list.conversations) {
          this.reorder.startAt(c.id, c.last_seq);
          top = Math.max(top, c.last_pos);
        }
        this.cursor = top;
        session.syncCursor = top;
        session.bootstrapping = false;
        this.saveState();
        for (const c of list.conversations) this.emit('conversation', c);
        const buffered = session.buffered;
        session.buffered = [];
        for (const frame of buffered) this.onFrame(session, frame);
        this.syncNext(session);
      },
      (e) => {
        if (this.session !== session) return;
        const delay = retryDelay(asNatterError(e));
        if (delay !== undefined) this.later(session, delay, () => this.bootstrap(session));
        else this.endSession(session, `conversations failed: ${e.message}`, e.closeCode);
      },
    );
  }

  /**
   * Ask for the next sync page (or take `reply`, a sync already sent for `session.syncCursor`).
   * @param {Session} session
   * @param {Promise<SyncPage>} [reply]
   */
  syncNext(session, reply) {
    (reply ?? session.conn.request('sync', { cursor: session.syncCursor }, this.options.requestTimeoutMs)).then(
      (page) => this.onSync(session, page),
      (error) => {
        if (this.session !== session) return;
        const e = asNatterError(error);
        const delay = retryDelay(e);
        if (delay !== undefined) this.later(session, delay, () => this.syncNext(session));
        else this.endSession(session, `sync failed: ${e.message}`, e.closeCode);
      },
    );
  }

  /** @param {Session} session @param {SyncPage} page */
  onSync(session, page) {
    if (this.session !== session) return;
    if (page.cursor < session.syncCursor) {
      this.onForeignCursor(session, session.syncCursor, page.cursor);
      return;
    }
    if (page.more && page.cursor <= session.syncCursor) {
      this.endSession(session, `sync cursor did not advance past ${page.cursor}`);
      return;
    }
    session.syncCursor = page.cursor;
    const done = !page.more;
    if (done) session.syncing = false;
    for (const conversation of page.conversations) this.emit('conversation', conversation);
    /** @type {Message[]} */
    const released = [];
    for (const message of page.messages) this.reorder.offer(message, released);
    this.deliver(released);
    this.advanceCursor(page.cursor);
    if (this.session !== session) return;
    if (done) {
      this.setStatus('online');
      this.emit('synced', { cursor: page.cursor });
      this.pumpFills(session);
    } else {
      this.syncNext(session);
    }
  }

  /**
   * The server answered a sync with a position below the cursor sent: it never issued that
   * cursor (another deployment's, or the server was restored from an older backup; protocol
   * §9.4). What was delivered is not this server's: forget the delivery state, tell the
   * application (`reset`), and start again as a client with no saved state. The outbox stays:
   * those messages are still to be sent. Once per connection, so that a server that keeps
   * moving backwards cannot hold the client in a loop.
   * @param {Session} session
   * @param {number} sent
   * @param {number} cursor
   */
  onForeignCursor(session, sent, cursor) {
    if (session.reset) {
      this.endSession(session, `the server's sync position went back again, to ${cursor}`);
      return;
    }
    session.reset = true;
    this.cursor = 0;
    this.deferredCursor = 0;
    this.reorder = new Reorderer();
    session.fills.clear();
    session.syncing = true;
    session.syncCursor = 0;
    // Markers of conversations as another server numbered them.
    this.marks.clear();
    this.marksSent.clear();
    if (this.markTimer) clearTimeout(this.markTimer);
    this.markTimer = undefined;
    this.saveState();
    this.emit('reset', { cursor: sent, server_cursor: cursor });
    if (this.session !== session) return;
    session.bootstrapping = this.options.initialSync === 'recent';
    if (session.bootstrapping) this.bootstrap(session);
    else this.syncNext(session);
  }

  /**
   * A live event's cursor counts only after the post-connect sync: before that, the sync has
   * not delivered everything below it.
   * @param {Session} session
   * @param {number} cursor
   */
  liveCursor(session, cursor) {
    if (!session.syncing && typeof cursor === 'number') this.advanceCursor(cursor);
  }

  /** Move the cursor, unless a gap is open. @param {number} cursor */
  advanceCursor(cursor) {
    if (this.reorder.hasGaps()) {
      this.deferredCursor = Math.max(this.deferredCursor, cursor);
      return;
    }
    const next = Math.max(cursor, this.deferredCursor);
    this.deferredCursor = 0;
    if (next > this.cursor) {
      this.cursor = next;
      this.saveStateSoon();
    }
  }

  releaseDeferredCursor() {
    if (this.deferredCursor > 0 && !this.reorder.hasGaps()) this.advanceCursor(this.deferredCursor);
  }

  /** Hand released messages to the listeners. @param {Message[]} messages */
  deliver(messages) {
    if (!messages.length) return;
    for (const message of messages) {
      this.dropTypist(message.conversation_id, message.sender_id);
      if (this.options.autoDelivered && message.sender_id !== this.userId) {
        this.queueMark(message.conversation_id, 'delivered', message.seq);
      }
      this.emit('message', message);
    }
    this.saveStateSoon();
  }

  // ----- gaps -----

  /** @param {Session} session */
  pumpFills(session) {
    if (this.session !== session || session.syncing || !this.reorder.hasGaps()) return;
    for (const [id, fill] of session.fills) {
      if (!fill.inFlight && !this.reorder.gap(id)) session.fills.delete(id);
    }
    let inFlight = [...session.fills.values()].filter((f) => f.inFlight).length;
    const now = Date.now();
    for (const gap of this.reorder.gaps()) {
      if (inFlight >= FILLS_IN_FLIGHT_MAX) break;
      let fill = session.fills.get(gap.conversation_id);
      if (!fill) {
        fill = { inFlight: false, failures: 0, retryAt: 0 };
        session.fills.set(gap.conversation_id, fill);
      }
      if (fill.inFlight || fill.retryAt > now) continue;
      fill.inFlight = true;
      fill.retryAt = 0;
      inFlight += 1;
      const { conversation_id: id, after } = gap;
      const limit = Math.min(gap.until - gap.after, session.historyLimit);
      session.conn.request('history', { conversation_id: id, after, limit }, this.options.requestTimeoutMs).then(
        (page) => this.onHistory(session, id, after, page, undefined),
        (error) => this.onHistory(session, id, after, undefined, asNatterError(error)),
      );
    }
  }

  /**
   * @param {Session} session
   * @param {number} id
   * @param {number} after
   * @param {HistoryPage | undefined} page
   * @param {NatterError | undefined} error
   */
  onHistory(session, id, after, page, error) {
    if (this.session !== session) return;
    const fill = session.fills.get(id) ?? { inFlight: false, failures: 0, retryAt: 0 };
    session.fills.set(id, fill);
    fill.inFlight = false;
    /** @type {Message[]} */
    const released = [];
    /** @type {[number, number] | undefined} */
    let skipped;
    const retry = (/** @type {number} */ delay) => {
      fill.retryAt = Date.now() + delay;
      this.later(session, delay, () => this.pumpFills(session));
    };
    if (page) {
      const result = this.reorder.fill(id, after, page, released);
      skipped = result.skipped;
      if (result.outcome === 'closed') session.fills.delete(id);
      else if (result.outcome === 'progress') fill.failures = 0;
      else {
        fill.failures += 1;
        if (fill.failures >= FILL_FAILURES_MAX) {
          skipped = this.reorder.skipGap(id, released);
          session.fills.delete(id);
        } else {
          retry(this.backoff.delay(fill.failures));
        }
      }
    } else if (error) {
      if (error.code === 'not_member' || error.code === 'not_found' || error.code === 'forbidden') {
        // No longer ours to read: what is held back is all we will get.
        skipped = this.reorder.skipGap(id, released);
        session.fills.delete(id);
      } else if (error.isConnectionError) {
        this.endSession(session, `history failed: ${error.message}`, error.closeCode);
        return;
      } else {
        fill.failures += 1;
        retry(retryDelay(error) ?? this.backoff.delay(fill.failures));
      }
    }
    if (skipped) this.emit('skipped', { conversation_id: id, first: skipped[0], last: skipped[1] });
    this.deliver(released);
    this.releaseDeferredCursor();
    this.pumpFills(session);
  }

  // ----- events from the server -----

  /** @param {Session} session @param {any} frame */
  onFrame(session, frame) {
    if (this.session !== session) return;
    if (session.bootstrapping && (frame.type === 'message' || frame.type === 'receipt' || frame.type === 'conversation')) {
      session.buffered.push(frame);
      return;
    }
    switch (frame.type) {
      case 'message': {
        /** @type {Message[]} */
        const released = [];
        this.reorder.offer(frame.message, released);
        this.deliver(released);
        this.liveCursor(session, frame.cursor);
        this.pumpFills(session);
        break;
      }
      case 'receipt':
        this.emit('receipt', frame.receipt);
        this.liveCursor(session, frame.cursor);
        break;
      case 'conversation':
        this.emit('conversation', frame.conversation);
        this.liveCursor(session, frame.cursor);
        break;
      case 'typing':
        this.onTyping(frame);
        break;
      case 'presence': {
        const { type: _type, ...presence } = frame;
        this.presences.set(presence.user_id, presence);
        this.emit('presence', presence);
        break;
      }
      case 'reconnect':
        this.endSession(session, `server asked to reconnect: ${frame.reason}`, CloseCode.SERVICE_RESTART);
        break;
      default:
        // `error` frames without an id, and frames of newer servers: nothing to do.
        break;
    }
  }

  // ----- typing -----

  /** @param {{conversation_id: number, user_id: number, active: boolean, ttl_ms: number}} frame */
  onTyping(frame) {
    const { conversation_id: id, user_id: user, active, ttl_ms: ttl } = frame;
    this.emit('typing', { conversation_id: id, user_id: user, active, ttl_ms: ttl });
    let typists = this.typists.get(id);
    const had = typists?.has(user) ?? false;
    if (typists?.has(user)) clearTimeout(typists.get(user));
    if (active) {
      if (!typists) {
        typists = new Map();
        this.typists.set(id, typists);
      }
      typists.set(user, setTimeout(() => this.dropTypist(id, user), Math.max(ttl || 6000, 500)));
      if (!had) this.emit('typingchange', { conversation_id: id, user_ids: this.typing(id) });
    } else {
      this.dropTypist(id, user);
    }
  }

  /** @param {number} id @param {number} user */
  dropTypist(id, user) {
    const typists = this.typists.get(id);
    if (!typists || !typists.has(user)) return;
    clearTimeout(typists.get(user));
    typists.delete(user);
    if (!typists.size) this.typists.delete(id);
    this.emit('typingchange', { conversation_id: id, user_ids: this.typing(id) });
  }

  /** @param {number} id */
  clearTypists(id) {
    for (const user of [...(this.typists.get(id)?.keys() ?? [])]) this.dropTypist(id, user);
  }

  /**
   * Who is typing in a conversation now.
   * @param {number} conversationId
   * @returns {number[]}
   */
  typing(conversationId) {
    return [...(this.typists.get(conversationId)?.keys() ?? [])];
  }

  /**
   * Say that you type (`active`, the default) or stopped. Throttled and paced to the server's
   * limit: call it on every keystroke. Sending a message ends your typing by itself (receivers
   * drop the indicator when your message arrives). Ephemeral: dropped while disconnected, errors
   * ignored.
   * @param {number} conversationId
   * @param {boolean} [active]
   */
  setTyping(conversationId, active = true) {
    if (!this.session) return;
    const last = this.typingSent.get(conversationId);
    const now = Date.now();
    if (active) {
      if (last !== undefined && now - last < this.options.typingIntervalMs) return;
      this.typingSent.set(conversationId, now);
    } else {
      if (last === undefined && !this.typingQueue.has(conversationId)) return;
      this.typingSent.delete(conversationId);
    }
    this.typingQueue.set(conversationId, active);
    this.flushTyping();
  }

  flushTyping() {
    const session = this.session;
    if (this.typingTimer || !session) return;
    const wait = this.typingNextAt - Date.now();
    if (wait > 0) {
      this.typingTimer = setTimeout(() => {
        this.typingTimer = undefined;
        this.flushTyping();
      }, wait);
      return;
    }
    const next = this.typingQueue.entries().next();
    if (next.done) return;
    const [id, active] = next.value;
    this.typingQueue.delete(id);
    this.typingNextAt = Date.now() + TYPING_SPACING_MS;
    session.conn
      .request('typing', { conversation_id: id, active }, this.options.requestTimeoutMs)
      .catch((e) => this.requestFailed(session, e, 'typing'));
    if (this.typingQueue.size) this.flushTyping();
  }

  // ----- receipts -----

  /**
   * Mark messages up to `seq` as read (and so delivered). Gathered and sent shortly after.
   * @param {number} conversationId
   * @param {number} seq
   */
  markRead(conversationId, seq) {
    this.queueMark(conversationId, 'read', seq);
  }

  /**
   * Mark messages up to `seq` as delivered (done by itself with `autoDelivered`).
   * @param {number} conversationId
   * @param {number} seq
   */
  markDelivered(conversationId, seq) {
    this.queueMark(conversationId, 'delivered', seq);
  }

  /**
   * @param {number} id
   * @param {'delivered' | 'read'} kind
   * @param {number} seq
   */
  queueMark(id, kind, seq) {
    const sent = this.marksSent.get(id);
    if (sent && sent[kind] >= seq) return;
    const mark = this.marks.get(id) ?? {};
    if ((mark[kind] ?? 0) >= seq) return;
    mark[kind] = seq;
    this.marks.set(id, mark);
    this.scheduleMarks(MARK_DELAY_MS);
  }

  /** @param {number} delay */
  scheduleMarks(delay) {
    if (this.markTimer || this.stopped || !this.marks.size) return;
    this.markTimer = setTimeout(() => {
      this.markTimer = undefined;
      this.flushMarks();
    }, delay);
  }

  flushMarks() {
    const session = this.session;
    if (!session) return; // Sent after the next connect.
    const marks = [...this.marks];
    this.marks.clear();
    for (const [id, mark] of marks) {
      const sent = this.marksSent.get(id) ?? { delivered: 0, read: 0 };
      /** @type {{conversation_id: number, delivered?: number, read?: number}} */
      const fields = { conversation_id: id };
      if (mark.delivered !== undefined && mark.delivered > sent.delivered) fields.delivered = mark.delivered;
      if (mark.read !== undefined && mark.read > sent.read) fields.read = mark.read;
      if (fields.delivered === undefined && fields.read === undefined) continue;
      session.conn.request('mark', fields, this.options.requestTimeoutMs).then(
        (/** @type {Receipt} */ receipt) => {
          const now = this.marksSent.get(id) ?? { delivered: 0, read: 0 };
          now.delivered = Math.max(now.delivered, receipt.delivered_seq);
          now.read = Math.max(now.read, receipt.read_seq);
          this.marksSent.set(id, now);
        },
        (error) => {
          const e = asNatterError(error);
          if (e.code === 'not_member' || e.code === 'not_found' || e.code === 'invalid_request') return;
          // Try again later (rate limit, lost connection): merge back what was not sent.
          if (fields.delivered !== undefined) this.queueMark(id, 'delivered', fields.delivered);
          if (fields.read !== undefined) this.queueMark(id, 'read', fields.read);
          if (this.markTimer) clearTimeout(this.markTimer);
          this.markTimer = undefined;
          this.scheduleMarks(retryDelay(e) ?? 1000);
          this.requestFailed(session, e, 'mark');
        },
      );
    }
  }

  // ----- sending -----

  loadOutbox() {
    /** @type {any[]} */
    const entries = [];
    for (const key of this.store.keys('outbox.')) {
      const entry = this.store.get(key);
      if (entry && typeof entry.client_msg_id === 'string' && typeof entry.conversation_id === 'number' && entry.content) {
        entries.push(entry);
      } else {
        this.store.remove(key);
      }
    }
    entries.sort((a, b) => (a.created_at_ms - b.created_at_ms) || ((a.order ?? 0) - (b.order ?? 0)));
    for (const e of entries) {
      this.outbox.set(e.client_msg_id, {
        client_msg_id: e.client_msg_id,
        conversation_id: e.conversation_id,
        content: e.content,
        reply_to: e.reply_to ?? undefined,
        created_at_ms: e.created_at_ms,
        attempts: 0,
        state: 'queued',
      });
    }
    this.order = entries.reduce((max, e) => Math.max(max, e.order ?? 0), 0);
  }

  /**
   * The messages not yet acknowledged, oldest first (all, or one conversation's).
   * @param {number} [conversationId]
   * @returns {OutboxEntry[]}
   */
  pending(conversationId) {
    const out = [];
    for (const entry of this.outbox.values()) {
      if (conversationId === undefined || entry.conversation_id === conversationId) out.push({ ...entry });
    }
    return out;
  }

  /**
   * Send a message. It is saved in the outbox first and sent (again after every reconnect, with
   * the same `client_msg_id`) until the server acknowledges it. Resolves with the Ack; rejects only
   * when the server refuses the message for good (`not_member`, `message_too_large`, …) or the
   * client stops.
   * @param {number} conversationId
   * @param {string | Content} content Text, or a content object.
   * @param {{replyTo?: number, clientMsgId?: string}} [options]
   * @returns {Promise<Ack>}
   */
  send(conversationId, content, options = {}) {
    /** @type {Content} */
    const body = typeof content === 'string' ? { type: 'text', text: content } : content;
    if (this.stopped) return Promise.reject(this.stopError ?? new NatterError('closed', 'the client was closed'));
    if (body.type === 'text') {
      if (!body.text || !body.text.trim()) return Promise.reject(new NatterError('invalid_request', 'a text message must not be empty'));
      const max = this.hello?.limits?.message_bytes_max;
      if (max && new TextEncoder().encode(body.text).length > max) {
        return Promise.reject(new NatterError('message_too_large', `a text message is at most ${max} bytes`));
      }
    }
    const id = options.clientMsgId ?? newClientMsgId();
    // The message ends the typing indication at the receivers; typing again announces itself anew.
    this.typingSent.delete(conversationId);
    this.typingQueue.delete(conversationId);
    const promise = new Promise((resolve, reject) => {
      const list = this.waiters.get(id) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(id, list);
    });
    // Callers that ignore the promise must not see unhandled rejections.
    promise.catch(() => {});
    if (!this.outbox.has(id)) {
      this.order = (this.order ?? 0) + 1;
      /** @type {OutboxEntry} */
      const entry = {
        client_msg_id: id,
        conversation_id: conversationId,
        content: body,
        reply_to: options.replyTo,
        created_at_ms: Date.now(),
        attempts: 0,
        state: 'queued',
      };
      this.outbox.set(id, entry);
      this.store.set(`outbox.${id}`, {
        client_msg_id: id,
        conversation_id: conversationId,
        content: body,
        reply_to: options.replyTo,
        created_at_ms: entry.created_at_ms,
        order: this.order,
      });
      this.emit('outbox', { entries: this.pending() });
      if (this.session) this.pumpSends(this.session);
    }
    return /** @type {Promise<Ack>} */ (promise);
  }

  /**
   * Remove a message from the outbox without sending it (if it was written already, it may
   * still be committed).
   * @param {string} clientMsgId
   */
  discard(clientMsgId) {
    if (!this.outbox.delete(clientMsgId)) return false;
    this.store.remove(`outbox.${clientMsgId}`);
    const error = new NatterError('closed', 'discarded');
    for (const w of this.waiters.get(clientMsgId) ?? []) w.reject(error);
    this.waiters.delete(clientMsgId);
    this.emit('outbox', { entries: this.pending() });
    return true;
  }

  /** @param {Session} session */
  pumpSends(session) {
    if (this.session !== session) return;
    for (const entry of this.outbox.values()) {
      if (session.sendsInFlight >= this.options.sendWindow) break;
      if (entry.state !== 'queued') continue;
      entry.state = 'sending';
      entry.attempts += 1;
      session.sendsInFlight += 1;
      session.conn
        .request('send', {
          conversation_id: entry.conversation_id,
          client_msg_id: entry.client_msg_id,
          content: entry.content,
          reply_to: entry.reply_to,
        }, this.options.requestTimeoutMs)
        .then(
          (/** @type {Ack} */ ack) => this.onAck(session, entry, ack),
          (error) => this.onSendError(session, entry, asNatterError(error)),
        );
    }
  }

  /** @param {Session} session @param {OutboxEntry} entry @param {Ack} ack */
  onAck(session, entry, ack) {
    session.sendsInFlight = Math.max(0, session.sendsInFlight - 1);
    const id = entry.client_msg_id;
    if (this.outbox.get(id) === entry) {
      this.outbox.delete(id);
      this.store.remove(`outbox.${id}`);
      // A duplicate ack is a success too: an earlier attempt was committed.
      for (const w of this.waiters.get(id) ?? []) w.resolve(ack);
      this.waiters.delete(id);
      this.emit('ack', { entry: { ...entry }, ack });
      this.emit('outbox', { entries: this.pending() });
    }
    this.pumpSends(session);
  }

  /** @param {Session} session @param {OutboxEntry} entry @param {NatterError} error */
  onSendError(session, entry, error) {
    session.sendsInFlight = Math.max(0, session.sendsInFlight - 1);
    const id = entry.client_msg_id;
    if (this.outbox.get(id) !== entry) return;
    if (error.isConnectionError) {
      // Stays in the outbox; the next connection sends it again.
      entry.state = 'queued';
      this.requestFailed(session, error, 'send');
      return;
    }
    const delay = retryDelay(error);
    if (delay !== undefined) {
      entry.state = 'waiting';
      setTimeout(() => {
        if (this.outbox.get(id) !== entry || entry.state !== 'waiting') return;
        entry.state = 'queued';
        if (this.session) this.pumpSends(this.session);
      }, Math.max(delay, this.backoff.delay(entry.attempts)));
      this.pumpSends(session);
      return;
    }
    this.outbox.delete(id);
    this.store.remove(`outbox.${id}`);
    for (const w of this.waiters.get(id) ?? []) w.reject(error);
    this.waiters.delete(id);
    this.emit('sendfailed', { entry: { ...entry }, error });
    this.emit('outbox', { entries: this.pending() });
    this.pumpSends(session);
  }

  // ----- state -----

  saveStateSoon() {
    if (this.saveQueued) return;
    this.saveQueued = true;
    queueMicrotask(() => {
      this.saveQueued = false;
      this.saveState();
    });
  }

  saveState() {
    this.store.set('state', { user_id: this.userId, cursor: this.cursor, delivered: this.reorder.deliveredAll() });
  }

  /** What a resumed client starts from: the cursor and per-conversation delivered seq. */
  get state() {
    return { cursor: this.cursor, delivered: this.reorder.deliveredAll() };
  }

  // ----- commands -----

  /**
   * Wait for a connection (up to the request timeout).
   * @returns {Promise<Session>}
   */
  waitForSession() {
    if (this.session) return Promise.resolve(this.session);
    if (this.stopped) return Promise.reject(this.stopError ?? new NatterError('closed', 'the client was closed'));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (/** @type {Session} */ s) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (/** @type {NatterError} */ e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.sessionWaiters.indexOf(waiter);
        if (i >= 0) this.sessionWaiters.splice(i, 1);
        reject(new NatterError('not_connected', 'not connected to the server'));
      }, this.options.requestTimeoutMs);
      this.sessionWaiters.push(waiter);
    });
  }

  /**
   * Send any command and return its `result` data. Waits for a connection if there is none
   * (up to the request timeout); not retried once sent.
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @returns {Promise<any>}
   */
  async request(type, fields = {}) {
    const session = await this.waitForSession();
    try {
      return await session.conn.request(type, fields, this.options.requestTimeoutMs);
    } catch (error) {
      this.requestFailed(session, error, type);
      throw error;
    }
  }

  /** @returns {Promise<number>} the round trip in milliseconds */
  async ping() {
    const started = Date.now();
    await this.request('ping');
    return Date.now() - started;
  }

  /** Your conversations, newest activity first. @returns {Promise<Conversation[]>} */
  async conversations() {
    return (await this.request('conversations')).conversations;
  }

  /** @param {number} id @returns {Promise<Conversation>} */
  conversation(id) {
    return this.request('conversation', { conversation_id: id });
  }

  /**
   * A page of a conversation's history, ascending. `before` pages back (newest first below it);
   * `after` pages forward. Start with `before: conversation.last_seq + 1`.
   * @param {number} conversationId
   * @param {{before?: number, after?: number, limit?: number}} [query]
   * @returns {Promise<HistoryPage>}
   */
  history(conversationId, query = {}) {
    return this.request('history', { conversation_id: conversationId, ...query });
  }

  /** The direct conversation with a user (created if needed). @param {number} userId @returns {Promise<Conversation>} */
  createDirect(userId) {
    return this.request('create_direct', { user_id: userId });
  }

  /** @param {string} title @param {number[]} [memberIds] @returns {Promise<Conversation>} */
  createGroup(title, memberIds = []) {
    return this.request('create_group', { title, member_ids: memberIds });
  }

  /** @param {number} id @param {number[]} userIds @returns {Promise<Conversation>} */
  addMembers(id, userIds) {
    return this.request('add_members', { conversation_id: id, user_ids: userIds });
  }

  /** @param {number} id @param {number} userId @returns {Promise<Conversation>} */
  removeMember(id, userId) {
    return this.request('remove_member', { conversation_id: id, user_id: userId });
  }

  /** @param {number} id @returns {Promise<{}>} */
  leave(id) {
    return this.request('leave', { conversation_id: id });
  }

  /** @param {number} id @param {number} userId @param {Role} role @returns {Promise<Conversation>} */
  setRole(id, userId, role) {
    return this.request('set_role', { conversation_id: id, user_id: userId, role });
  }

  /** @param {number} id @param {string} title @returns {Promise<Conversation>} */
  setTitle(id, title) {
    return this.request('set_title', { conversation_id: id, title });
  }

  /** @param {string} username @returns {Promise<User>} */
  lookupUser(username) {
    return this.request('lookup_user', { username });
  }

  /**
   * A user by id: yourself, or someone who is or was in a conversation with you — the way to
   * name the author of a message from someone no longer in `members`. `not_found` otherwise.
   * @param {number} userId
   * @returns {Promise<User>}
   */
  lookupUserById(userId) {
    return this.request('lookup_user', { user_id: userId });
  }

  /**
   * Presence of users who share a conversation with you (others are left out). Each answer is
   * also reported as a `presence` event.
   * @param {number[]} userIds
   * @returns {Promise<Presence[]>}
   */
  async presence(userIds) {
    const { presence } = await this.request('presence', { user_ids: userIds });
    for (const p of presence) {
      this.presences.set(p.user_id, p);
      this.emit('presence', p);
    }
    return presence;
  }

  /** The last known presence of a user. @param {number} userId @returns {Presence | undefined} */
  presenceOf(userId) {
    return this.presences.get(userId);
  }

  /** @returns {Promise<Device[]>} */
  async devices() {
    return (await this.request('devices')).devices;
  }

  /** @param {number} deviceId @returns {Promise<{}>} */
  revokeDevice(deviceId) {
    return this.request('revoke_device', { device_id: deviceId });
  }

  /**
   * Log this device out: the token is revoked, the client stops and its storage is cleared
   * (unsent messages are dropped). Resolves true when the server confirmed.
   * @returns {Promise<boolean>}
   */
  async logout() {
    let confirmed = false;
    try {
      if (this.session) await this.session.conn.request('logout', {}, this.options.requestTimeoutMs);
      else await this.api.logout();
      confirmed = true;
    } catch (e) {
      // Revoked already, or unreachable: log out locally all the same.
      confirmed = asNatterError(e).code === 'unauthorized';
    }
    this.close();
    this.clearStorage();
    return confirmed;
  }
}
