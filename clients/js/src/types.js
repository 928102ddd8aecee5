// The wire types of the Natter protocol (see crates/proto and docs/protocol.md), as JSDoc
// typedefs. This module exports nothing at run time; import types with
// `/** @typedef {import('@natter/client').Message} Message */`.

/**
 * @typedef {object} User
 * @property {number} id
 * @property {string} username
 * @property {string} display_name
 */

/**
 * @typedef {object} Device
 * @property {number} id
 * @property {string} name
 * @property {number} created_at_ms
 * @property {number} last_seen_at_ms
 * @property {boolean} current True for the device whose token made the request.
 */

/**
 * @typedef {{kind: 'created', by: number, title?: string | null}
 *   | {kind: 'members_added', by: number, user_ids: number[]}
 *   | {kind: 'member_removed', by: number, user_id: number}
 *   | {kind: 'member_left', user_id: number}
 *   | {kind: 'role_changed', by: number, user_id: number, role: Role}
 *   | {kind: 'title_changed', by: number, title: string}} SystemEvent
 */

/** @typedef {{type: 'text', text: string} | {type: 'system', event: SystemEvent}} Content */

/**
 * @typedef {object} Message
 * @property {number} conversation_id
 * @property {number} seq Its place in the conversation: 1, 2, 3, … with no gap.
 * @property {number} pos Its place in the server's change stream.
 * @property {number} sender_id
 * @property {string} [client_msg_id] The sender's id for it (absent on system messages).
 * @property {Content} content
 * @property {number} [reply_to] The seq of the message this one replies to.
 * @property {number} sent_at_ms
 */

/** @typedef {'owner' | 'admin' | 'member'} Role */
/** @typedef {'direct' | 'group'} ConversationKind */

/**
 * @typedef {object} Member
 * @property {number} user_id
 * @property {string} username
 * @property {string} display_name
 * @property {Role} role
 * @property {number} delivered_seq Highest seq this member's devices received.
 * @property {number} read_seq Highest seq this member read.
 */

/**
 * @typedef {object} Conversation
 * @property {number} id
 * @property {ConversationKind} kind
 * @property {string} [title]
 * @property {Member[]} members Current members; a user who left sees the list without themselves.
 * @property {number} last_seq
 * @property {number} last_pos
 * @property {number} created_at_ms
 * @property {number} last_activity_at_ms
 * @property {Message} [last_message] In lists and sync pages.
 * @property {number} [unread_count] In lists and sync pages.
 */

/**
 * @typedef {object} Ack
 * @property {number} conversation_id
 * @property {string} client_msg_id
 * @property {number} seq
 * @property {number} pos
 * @property {number} sent_at_ms
 * @property {boolean} duplicate True when this id had been committed already.
 */

/**
 * @typedef {object} HistoryPage
 * @property {Message[]} messages Ascending seq.
 * @property {boolean} more More messages lie beyond this page in the direction asked for.
 */

/**
 * @typedef {object} SyncPage
 * @property {number} cursor
 * @property {boolean} more
 * @property {Conversation[]} conversations
 * @property {Message[]} messages
 */

/**
 * @typedef {object} Receipt
 * @property {number} conversation_id
 * @property {number} user_id
 * @property {number} delivered_seq
 * @property {number} read_seq
 * @property {number} pos
 */

/**
 * @typedef {object} Presence
 * @property {number} user_id
 * @property {boolean} online
 * @property {number} [last_seen_at_ms]
 */

/**
 * @typedef {object} Limits
 * @property {number} frame_bytes_max
 * @property {number} message_bytes_max
 * @property {number} sends_per_second
 * @property {number} history_page_max
 * @property {number} sync_page_max
 * @property {number} heartbeat_interval_ms
 * @property {number} idle_timeout_ms
 * @property {number} typing_ttl_ms
 */

/**
 * @typedef {object} Hello
 * @property {number} protocol
 * @property {string} server_version
 * @property {User} user
 * @property {number} device_id
 * @property {Limits} limits
 */

/**
 * @typedef {object} LoginResponse
 * @property {User} user
 * @property {number} device_id
 * @property {string} token Send as `Authorization: Bearer <token>` or `?token=` on the socket.
 */

export {};
