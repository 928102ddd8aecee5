// Small helpers: server addresses and ids.

/**
 * Normalise a server address (`http://host:port`, `https://…`, `ws://…`, `wss://…` or
 * `host:port`) to its HTTP base URL, without a trailing slash.
 * @param {string} server
 * @returns {string}
 */
export function httpBase(server) {
  const text = String(server).trim();
  let rest = text;
  let secure = false;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    const name = scheme[1].toLowerCase();
    if (name === 'https' || name === 'wss') secure = true;
    else if (name !== 'http' && name !== 'ws') throw new TypeError(`unknown scheme in server address "${server}"`);
    rest = text.slice(scheme[0].length);
  }
  rest = rest.replace(/\/+$/, '').replace(/\/v1\/ws$/, '');
  if (!rest || rest.startsWith('/')) throw new TypeError(`no host in server address "${server}"`);
  return `${secure ? 'https' : 'http'}://${rest}`;
}

/**
 * The WebSocket URL of a server, with the token in the query (browsers cannot set headers).
 * @param {string} server
 * @param {string} token
 */
export function wsUrl(server, token) {
  const base = httpBase(server).replace(/^http/, 'ws');
  return `${base}/v1/ws?token=${encodeURIComponent(token)}`;
}

/**
 * A fresh `client_msg_id`, 32 hex digits: the time in milliseconds (12 digits), then 80 random
 * bits. Ids that grow with time land next to the sender's previous ones in the server's dedupe
 * index, which makes a send cheaper for the server than a wholly random id (protocol.md §9.3).
 */
export function newClientMsgId() {
  const bytes = new Uint8Array(10);
  globalThis.crypto.getRandomValues(bytes);
  const time = (Date.now() % 2 ** 48).toString(16).padStart(12, '0');
  return time + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Milliseconds since the epoch. */
export const now = () => Date.now();
