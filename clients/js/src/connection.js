// One WebSocket connection: the `hello`, commands matched to their replies by id, and pushed
// events. It does not reconnect; `NatterClient` does.

import { NatterError, errorFromBody } from './errors.js';

/** @typedef {import('./types.js').Hello} Hello */

/** The subprotocol that selects JSON frames. */
export const SUBPROTOCOL = 'natter.v1.json';

/** WebSocket close codes the server uses. */
export const CloseCode = Object.freeze({
  /** The server restarts: reconnect and sync. */
  SERVICE_RESTART: 1012,
  /** Nothing received within the idle timeout. */
  IDLE_TIMEOUT: 4000,
  /** The token was revoked (logout, device revoked): log in again. */
  REVOKED: 4001,
  /** The client read too slowly: reconnect and sync. */
  SLOW_CONSUMER: 4008,
  FRAME_TOO_LARGE: 1009,
});

/**
 * How a connection ended.
 * @typedef {object} CloseInfo
 * @property {number | undefined} code The close code, when the server sent one.
 * @property {string} reason
 */

/**
 * A WebSocket constructor (the browser's, Node's global one, or the `ws` package's).
 * @typedef {new (url: string, protocols?: string | string[]) => WebSocket} WebSocketConstructor
 */

/**
 * @typedef {object} Pending
 * @property {(data: any) => void} resolve
 * @property {(error: NatterError) => void} reject
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

export class Connection {
  /**
   * Open a connection and wait for its `hello`.
   *
   * `onOpen` runs once the socket is open, before the `hello` has come: commands it sends are
   * read by the server after the hello (protocol.md §3.2), so a client that syncs right away
   * saves a round trip (§9.4). Their replies come after the hello.
   * @param {string} url `ws://host/v1/ws?token=…`
   * @param {{WebSocket?: WebSocketConstructor, timeoutMs?: number, onOpen?: (conn: Connection) => void}} [options]
   * @returns {Promise<Connection>}
   */
  static open(url, options = {}) {
    const Impl = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (!Impl) {
      return Promise.reject(
        new TypeError('no WebSocket implementation: pass one as the `WebSocket` option (on Node 20, run with --experimental-websocket or use the `ws` package)'),
      );
    }
    return new Promise((resolve, reject) => {
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new Impl(url, [SUBPROTOCOL]);
      } catch (e) {
        reject(new NatterError('disconnected', `cannot open the socket: ${/** @type {Error} */ (e).message}`));
        return;
      }
      const conn = new Connection(ws);
      const onOpen = options.onOpen;
      if (onOpen) ws.onopen = () => onOpen(conn);
      const timer = setTimeout(() => {
        conn.close(1000, 'no hello');
        conn.finish({ code: undefined, reason: 'no hello in time' });
      }, options.timeoutMs ?? 15_000);
      conn.opening = { resolve, reject, timer };
    });
  }

  /** @param {WebSocket} ws */
  constructor(ws) {
    this.ws = ws;
    /** @type {Hello | undefined} */
    this.hello = undefined;
    this.nextId = 1;
    /** @type {Map<number, Pending>} */
    this.pending = new Map();
    /** @type {CloseInfo | undefined} */
    this.closed = undefined;
    /** Time of the last frame received. */
    this.lastReceived = Date.now();
    /** @type {{resolve: (c: Connection) => void, reject: (e: any) => void, timer: ReturnType<typeof setTimeout>} | undefined} */
    this.opening = undefined;
    /** Events received before a handler was set. @type {any[]} */
    this.buffered = [];
    /** @type {((frame: any) => void) | undefined} */
    this.eventHandler = undefined;
    /** @type {((info: CloseInfo) => void) | undefined} */
    this.closeHandler = undefined;

    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = (event) => this.finish({ code: event.code || undefined, reason: event.reason || 'connection closed' });
    ws.onerror = () => {
      // Browsers follow an error with a close event; some implementations do not.
      setTimeout(() => this.finish({ code: undefined, reason: 'connection error' }), 0);
    };
  }

  /**
   * Receive pushed events (frames without an id); buffered ones are handed over at once.
   * @param {((frame: any) => void) | undefined} handler
   */
  set onEvent(handler) {
    this.eventHandler = handler;
    const buffered = this.buffered;
    this.buffered = [];
    if (handler) for (const frame of buffered) handler(frame);
  }

  /** @param {(info: CloseInfo) => void} handler Called once when the connection ends. */
  set onClose(handler) {
    this.closeHandler = handler;
    if (this.closed && handler) handler(this.closed);
  }

  /** @param {any} data */
  onMessage(data) {
    this.lastReceived = Date.now();
    if (typeof data !== 'string') return;
    /** @type {any} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    if (frame.type === 'hello') {
      const { type: _type, ...hello } = frame;
      this.hello = /** @type {Hello} */ (hello);
      if (this.opening) {
        clearTimeout(this.opening.timer);
        this.opening.resolve(this);
        this.opening = undefined;
      }
      return;
    }
    if ((frame.type === 'result' || frame.type === 'error') && typeof frame.id === 'number') {
      const pending = this.pending.get(frame.id);
      if (pending) {
        this.pending.delete(frame.id);
        if (pending.timer) clearTimeout(pending.timer);
        if (frame.type === 'result') pending.resolve(frame.data);
        else pending.reject(errorFromBody(frame));
        return;
      }
    }
    if (this.eventHandler) this.eventHandler(frame);
    else this.buffered.push(frame);
  }

  /** @param {CloseInfo} info */
  finish(info) {
    if (this.closed) return;
    this.closed = info;
    const error = new NatterError('disconnected', info.reason, { closeCode: info.code });
    if (this.opening) {
      clearTimeout(this.opening.timer);
      this.opening.reject(error);
      this.opening = undefined;
    }
    for (const pending of this.pending.values()) {
      if (pending.timer) clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    this.ws.onopen = null;
    this.ws.onmessage = null;
    this.ws.onclose = null;
    this.ws.onerror = null;
    if (this.closeHandler) this.closeHandler(info);
  }

  /**
   * Send a command and wait for its `result` data (or its `error`, as a NatterError).
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  request(type, fields = {}, timeoutMs = 30_000) {
    if (this.closed) {
      return Promise.reject(new NatterError('disconnected', this.closed.reason, { closeCode: this.closed.code }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs > 0
        ? setTimeout(() => {
          if (this.pending.delete(id)) reject(new NatterError('timeout', `no reply to ${type} within ${timeoutMs} ms`));
        }, timeoutMs)
        : undefined;
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.ws.send(JSON.stringify({ ...fields, id, type }));
      } catch (e) {
        this.pending.delete(id);
        if (timer) clearTimeout(timer);
        reject(new NatterError('disconnected', `cannot send: ${/** @type {Error} */ (e).message}`));
      }
    });
  }

  /** Close the socket (the close handler runs once it is closed). @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = 'closed by the client') {
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closing.
    }
    this.finish({ code, reason });
  }
}
