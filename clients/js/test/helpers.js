// Helpers shared by the SDK tests.

import { NatterApi, NatterClient, MemoryStorage } from '../src/index.js';

let counter = 0;

/** A fresh username: lowercase, unique within the run. @param {string} prefix */
export function uniqueName(prefix) {
  counter += 1;
  return `${prefix}${process.pid % 1000}${counter}${Math.floor(Math.random() * 1000)}`;
}

/**
 * Register a user; returns their API handle (token set), user and token.
 * @param {string} url
 * @param {string} prefix
 */
export async function register(url, prefix) {
  const api = new NatterApi(url);
  const username = uniqueName(prefix);
  const login = await api.register({ username, password: 'correct horse battery', display_name: prefix, device_name: 'test' });
  return { api, user: login.user, token: login.token, username, password: 'correct horse battery' };
}

/**
 * A started client with fast reconnects.
 * @param {string} url
 * @param {string} token
 * @param {Partial<import('../src/client.js').ClientOptions>} [options]
 */
export function startClient(url, token, options = {}) {
  const client = new NatterClient({
    server: url,
    token,
    storage: new MemoryStorage(),
    backoff: { baseMs: 50, capMs: 400 },
    requestTimeoutMs: 5000,
    ...options,
  });
  client.start();
  return client;
}

/**
 * Wait until `check()` is truthy; returns its value.
 * @template T
 * @param {() => T} check
 * @param {string} [what]
 * @param {number} [timeoutMs]
 * @returns {Promise<NonNullable<T>>}
 */
export async function waitFor(check, what = 'condition', timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return /** @type {NonNullable<T>} */ (value);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The next event of a type that matches.
 * @template {keyof import('../src/client.js').ClientEvents} K
 * @param {NatterClient} client
 * @param {K} type
 * @param {(event: import('../src/client.js').ClientEvents[K]) => boolean} [match]
 * @param {number} [timeoutMs]
 * @returns {Promise<import('../src/client.js').ClientEvents[K]>}
 */
export function nextEvent(client, type, match = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for a ${type} event`));
    }, timeoutMs);
    const off = client.on(type, (event) => {
      if (!match(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/**
 * Collect the `message` events of a client.
 * @param {NatterClient} client
 * @returns {import('../src/types.js').Message[]}
 */
export function collectMessages(client) {
  /** @type {import('../src/types.js').Message[]} */
  const messages = [];
  client.on('message', (m) => messages.push(m));
  return messages;
}

/** Texts of text messages. @param {import('../src/types.js').Message[]} messages */
export function texts(messages) {
  return messages.map((m) => (m.content.type === 'text' ? m.content.text : `<${m.content.event.kind}>`));
}
