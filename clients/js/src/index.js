// @natter/client: the JavaScript SDK of Natter. An ES module with no build step, for browsers and
// Node (20+). See README.md.

export { NatterClient, retryDelay } from './client.js';
export { NatterApi } from './rest.js';
export { NatterError } from './errors.js';
export { Connection, CloseCode, SUBPROTOCOL } from './connection.js';
export { Reorderer } from './order.js';
export { Backoff } from './backoff.js';
export { MemoryStorage, defaultStorage } from './storage.js';
export { newClientMsgId, httpBase, wsUrl } from './util.js';

/** @typedef {import('./types.js').User} User */
/** @typedef {import('./types.js').Device} Device */
/** @typedef {import('./types.js').Content} Content */
/** @typedef {import('./types.js').SystemEvent} SystemEvent */
/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').Role} Role */
/** @typedef {import('./types.js').ConversationKind} ConversationKind */
/** @typedef {import('./types.js').Member} Member */
/** @typedef {import('./types.js').Conversation} Conversation */
/** @typedef {import('./types.js').Ack} Ack */
/** @typedef {import('./types.js').HistoryPage} HistoryPage */
/** @typedef {import('./types.js').SyncPage} SyncPage */
/** @typedef {import('./types.js').Receipt} Receipt */
/** @typedef {import('./types.js').Presence} Presence */
/** @typedef {import('./types.js').Limits} Limits */
/** @typedef {import('./types.js').Hello} Hello */
/** @typedef {import('./types.js').LoginResponse} LoginResponse */
/** @typedef {import('./client.js').ClientOptions} ClientOptions */
/** @typedef {import('./client.js').ClientEvents} ClientEvents */
/** @typedef {import('./client.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./client.js').Status} Status */
/** @typedef {import('./storage.js').StorageLike} StorageLike */
