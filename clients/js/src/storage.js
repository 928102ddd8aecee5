// Where the client keeps what must survive a page reload: its delivery state (cursor and
// per-conversation delivered seq) and its outbox. Any object with the Web Storage API
// (`localStorage`, `sessionStorage`) works; `MemoryStorage` is the same API in memory.

/**
 * The part of the Web Storage API the client uses.
 * @typedef {object} StorageLike
 * @property {(key: string) => string | null} getItem
 * @property {(key: string, value: string) => void} setItem
 * @property {(key: string) => void} removeItem
 * @property {(index: number) => string | null} key
 * @property {number} length
 */

/** The Web Storage API in memory: for Node, tests, or a client that must not persist. */
export class MemoryStorage {
  constructor() {
    /** @type {Map<string, string>} */
    this.items = new Map();
  }

  get length() {
    return this.items.size;
  }

  /** @param {number} index */
  key(index) {
    return [...this.items.keys()][index] ?? null;
  }

  /** @param {string} key */
  getItem(key) {
    return this.items.get(key) ?? null;
  }

  /** @param {string} key @param {string} value */
  setItem(key, value) {
    this.items.set(key, String(value));
  }

  /** @param {string} key */
  removeItem(key) {
    this.items.delete(key);
  }

  clear() {
    this.items.clear();
  }
}

/** The browser's localStorage when there is one (and it works), else a MemoryStorage. */
export function defaultStorage() {
  try {
    const storage = /** @type {any} */ (globalThis).localStorage;
    if (storage) {
      const probe = '__natter_probe__';
      storage.setItem(probe, '1');
      storage.removeItem(probe);
      return /** @type {StorageLike} */ (storage);
    }
  } catch {
    // Private mode or disabled storage: fall through.
  }
  return new MemoryStorage();
}

/** JSON values under one key prefix of a storage. */
export class Namespace {
  /** @param {StorageLike} storage @param {string} prefix */
  constructor(storage, prefix) {
    this.storage = storage;
    this.prefix = prefix;
  }

  /** @param {string} key @returns {any} */
  get(key) {
    try {
      const text = this.storage.getItem(this.prefix + key);
      return text === null ? undefined : JSON.parse(text);
    } catch {
      return undefined;
    }
  }

  /** @param {string} key @param {any} value */
  set(key, value) {
    try {
      this.storage.setItem(this.prefix + key, JSON.stringify(value));
    } catch {
      // A full or disabled storage loses persistence, not the session.
    }
  }

  /** @param {string} key */
  remove(key) {
    try {
      this.storage.removeItem(this.prefix + key);
    } catch {
      // Ignored like `set`.
    }
  }

  /** Keys (without the prefix) that start with `start`. @param {string} start */
  keys(start = '') {
    const out = [];
    const full = this.prefix + start;
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key !== null && key.startsWith(full)) out.push(key.slice(this.prefix.length));
    }
    return out;
  }

  /** Remove every key of this namespace. */
  clear() {
    for (const key of this.keys()) this.remove(key);
  }
}
