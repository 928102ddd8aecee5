// Reconnect delays: exponential backoff with full jitter, like the Rust client. Full jitter (a
// uniform delay between zero and the exponential ceiling) spreads out the reconnects of many
// clients that lost the same server at the same moment.

export class Backoff {
  /** @param {{baseMs?: number, capMs?: number}} [options] 100 ms doubling up to 10 s by default. */
  constructor({ baseMs = 100, capMs = 10_000 } = {}) {
    this.baseMs = baseMs;
    this.capMs = capMs;
  }

  /**
   * The longest delay attempt `attempt` (0-based) may wait: `min(cap, base · 2^attempt)`.
   * @param {number} attempt
   */
  ceiling(attempt) {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(Math.max(attempt, 0), 31));
  }

  /**
   * A random delay for attempt `attempt`, uniform in `[0, ceiling(attempt)]`.
   * @param {number} attempt
   * @param {() => number} [random]
   */
  delay(attempt, random = Math.random) {
    return Math.floor(random() * (this.ceiling(attempt) + 1));
  }
}
