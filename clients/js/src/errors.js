// The one error type of the SDK: a stable `code` (the server's error codes, plus a few of the
// client's own) and a message for humans.

/**
 * Codes the client adds to the server's (`not_member`, `rate_limited`, …):
 * - `disconnected`: the connection closed before the reply came;
 * - `timeout`: no reply within the request timeout;
 * - `not_connected`: no connection came up in time for the request;
 * - `closed`: the client was closed;
 * - `network`: an HTTP request could not reach the server.
 */
export class NatterError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number, retryAfterMs?: number, closeCode?: number}} [details]
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'NatterError';
    /** @type {string} */
    this.code = code;
    /** HTTP status, for REST errors. @type {number | undefined} */
    this.status = details.status;
    /** For `rate_limited`: how long to wait. @type {number | undefined} */
    this.retryAfterMs = details.retryAfterMs;
    /** For `disconnected`: the WebSocket close code, if any. @type {number | undefined} */
    this.closeCode = details.closeCode;
  }

  /** True when the error means the connection is gone, not that the server refused. */
  get isConnectionError() {
    return this.code === 'disconnected' || this.code === 'timeout' || this.code === 'not_connected';
  }

  /** True when the credentials were refused: log in again. */
  get isAuthError() {
    return this.code === 'unauthorized' || this.code === 'user_disabled';
  }
}

/**
 * Build a NatterError from a server error body `{code, message, retry_after_ms?}`.
 * @param {any} body
 * @param {number} [status]
 */
export function errorFromBody(body, status) {
  const code = body && typeof body.code === 'string' ? body.code : 'internal';
  const message = body && typeof body.message === 'string' ? body.message : `request failed (${status ?? 'no status'})`;
  return new NatterError(code, message, {
    status,
    retryAfterMs: body && typeof body.retry_after_ms === 'number' ? body.retry_after_ms : undefined,
  });
}
