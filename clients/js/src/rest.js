// The REST API under /v1/: accounts (register, login, logout, devices) and everything a client
// without a socket needs. JSON in and out; errors are `{"code", "message"}` with an HTTP status.

import { NatterError, errorFromBody } from './errors.js';
import { httpBase, newClientMsgId } from './util.js';

/** @typedef {import('./types.js').User} User */
/** @typedef {import('./types.js').Device} Device */
/** @typedef {import('./types.js').Conversation} Conversation */
/** @typedef {import('./types.js').Content} Content */
/** @typedef {import('./types.js').Ack} Ack */
/** @typedef {import('./types.js').HistoryPage} HistoryPage */
/** @typedef {import('./types.js').SyncPage} SyncPage */
/** @typedef {import('./types.js').Receipt} Receipt */
/** @typedef {import('./types.js').Role} Role */
/** @typedef {import('./types.js').LoginResponse} LoginResponse */

/**
 * @typedef {object} ApiOptions
 * @property {string} [token] The device token, sent as `Authorization: Bearer`.
 * @property {typeof fetch} [fetch] A fetch implementation (default: the global one).
 */

export class NatterApi {
  /**
   * @param {string} server The server's address, e.g. `http://127.0.0.1:8080` (in a browser,
   *   `location.origin`).
   * @param {ApiOptions} [options]
   */
  constructor(server, options = {}) {
    this.base = httpBase(server);
    /** @type {string | undefined} */
    this.token = options.token;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * One request; resolves with the JSON body or rejects with a NatterError.
   * @param {string} method
   * @param {string} path
   * @param {any} [body]
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await this.fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new NatterError('network', `cannot reach the server: ${/** @type {Error} */ (e).message ?? e}`);
    }
    const text = await response.text();
    /** @type {any} */
    let data;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = undefined;
    }
    if (!response.ok) throw errorFromBody(data, response.status);
    return data;
  }

  /**
   * Create an account and log this device in.
   * @param {{username: string, password: string, display_name?: string, device_name?: string}} request
   * @returns {Promise<LoginResponse>}
   */
  async register(request) {
    const response = await this.request('POST', '/v1/register', request);
    this.token = response.token;
    return response;
  }

  /**
   * Log in: a new device and its token.
   * @param {{username: string, password: string, device_name?: string}} request
   * @returns {Promise<LoginResponse>}
   */
  async login(request) {
    const response = await this.request('POST', '/v1/login', request);
    this.token = response.token;
    return response;
  }

  /** Revoke this device's token. @returns {Promise<{}>} */
  logout() {
    return this.request('POST', '/v1/logout');
  }

  /** @returns {Promise<User>} */
  me() {
    return this.request('GET', '/v1/me');
  }

  /** @param {string} displayName @returns {Promise<User>} */
  setDisplayName(displayName) {
    return this.request('PATCH', '/v1/me', { display_name: displayName });
  }

  /** @returns {Promise<{devices: Device[]}>} */
  devices() {
    return this.request('GET', '/v1/devices');
  }

  /** @param {number} deviceId @returns {Promise<{}>} */
  revokeDevice(deviceId) {
    return this.request('DELETE', `/v1/devices/${deviceId}`);
  }

  /** @param {string} username @returns {Promise<User>} */
  lookupUser(username) {
    return this.request('GET', `/v1/users/${encodeURIComponent(username)}`);
  }

  /**
   * A user by id: yourself, or someone who is or was in a conversation with you (like the
   * client's `lookupUserById`). `not_found` otherwise.
   * @param {number} userId
   * @returns {Promise<User>}
   */
  lookupUserById(userId) {
    return this.request('GET', `/v1/users/by-id/${userId}`);
  }

  /** @returns {Promise<{conversations: Conversation[]}>} */
  conversations() {
    return this.request('GET', '/v1/conversations');
  }

  /** @param {number} id @returns {Promise<Conversation>} */
  conversation(id) {
    return this.request('GET', `/v1/conversations/${id}`);
  }

  /** @param {number} userId @returns {Promise<Conversation>} */
  createDirect(userId) {
    return this.request('POST', '/v1/conversations', { kind: 'direct', user_id: userId });
  }

  /** @param {string} title @param {number[]} [memberIds] @returns {Promise<Conversation>} */
  createGroup(title, memberIds = []) {
    return this.request('POST', '/v1/conversations', { kind: 'group', title, member_ids: memberIds });
  }

  /** @param {number} id @param {string} title @returns {Promise<Conversation>} */
  setTitle(id, title) {
    return this.request('PATCH', `/v1/conversations/${id}`, { title });
  }

  /**
   * A page of history by seq (`before`: newest first below it; `after`: oldest first above it).
   * @param {number} id
   * @param {{before?: number, after?: number, limit?: number}} [query]
   * @returns {Promise<HistoryPage>}
   */
  history(id, query = {}) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) params.set(key, String(value));
    }
    const q = params.toString();
    return this.request('GET', `/v1/conversations/${id}/messages${q ? `?${q}` : ''}`);
  }

  /**
   * Send once over HTTP (no outbox: retry with the same `client_msg_id` yourself).
   * @param {number} id
   * @param {string | Content} content
   * @param {{clientMsgId?: string, replyTo?: number}} [options]
   * @returns {Promise<Ack>}
   */
  send(id, content, options = {}) {
    return this.request('POST', `/v1/conversations/${id}/messages`, {
      client_msg_id: options.clientMsgId ?? newClientMsgId(),
      content: typeof content === 'string' ? { type: 'text', text: content } : content,
      reply_to: options.replyTo,
    });
  }

  /** @param {number} id @param {number[]} userIds @returns {Promise<Conversation>} */
  addMembers(id, userIds) {
    return this.request('POST', `/v1/conversations/${id}/members`, { user_ids: userIds });
  }

  /** @param {number} id @param {number} userId @returns {Promise<Conversation>} */
  removeMember(id, userId) {
    return this.request('DELETE', `/v1/conversations/${id}/members/${userId}`);
  }

  /** @param {number} id @param {number} userId @param {Role} role @returns {Promise<Conversation>} */
  setRole(id, userId, role) {
    return this.request('PUT', `/v1/conversations/${id}/members/${userId}/role`, { role });
  }

  /** @param {number} id @returns {Promise<{}>} */
  leave(id) {
    return this.request('POST', `/v1/conversations/${id}/leave`);
  }

  /** @param {number} id @param {{delivered?: number, read?: number}} markers @returns {Promise<Receipt>} */
  mark(id, markers) {
    return this.request('POST', `/v1/conversations/${id}/markers`, markers);
  }

  /** @param {number} cursor @param {number} [limit] @returns {Promise<SyncPage>} */
  sync(cursor, limit) {
    return this.request('GET', `/v1/sync?cursor=${cursor}${limit ? `&limit=${limit}` : ''}`);
  }
}
