// Natter's web app: plain ES modules on top of the SDK (served at /sdk/). State lives in one
// object; events from the client update it and schedule a render of what changed.

import { NatterApi, NatterClient, NatterError } from '/sdk/index.js';
import * as fmt from './format.js';
import { icons, logo } from './icons.js';
import { dialog, fill, h, reconcile, srOnly } from './ui.js';

/** @typedef {import('/sdk/index.js').Conversation} Conversation */
/** @typedef {import('/sdk/index.js').Message} Message */
/** @typedef {import('/sdk/index.js').OutboxEntry} OutboxEntry */
/** @typedef {import('/sdk/index.js').User} User */

const SESSION_KEY = 'natter.session';
const PAGE_SIZE = 40;
/** Messages of one sender within this many ms are grouped. */
const GROUP_MS = 5 * 60_000;
/** After this long without a connection, the banner says "offline". */
const OFFLINE_AFTER_MS = 8_000;

const root = /** @type {HTMLElement} */ (document.getElementById('app'));

// ----- session ------------------------------------------------------------------------------

/** @typedef {{token: string, user: User, device_id: number}} Session */

/** @returns {Session | null} */
function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null');
    return session && session.token && session.user ? session : null;
  } catch {
    return null;
  }
}

/** @param {Session | null} session */
function saveSession(session) {
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

// ----- state --------------------------------------------------------------------------------

/**
 * What is loaded of one conversation's timeline: messages by seq from `low` up.
 * @typedef {object} Timeline
 * @property {Map<number, Message>} bySeq
 * @property {number} low The lowest seq that may be shown (the oldest loaded).
 * @property {boolean} hasMore Older messages exist on the server.
 * @property {boolean} loading
 * @property {string} [error]
 * @property {boolean} [stale] Restored from the cache: refresh from the server once connected.
 */

const state = {
  /** @type {Session | null} */
  session: null,
  /** @type {NatterClient | null} */
  client: null,
  /** @type {string} */
  status: 'idle',
  everOnline: false,
  disconnectedAt: 0,
  listLoaded: false,
  /** @type {Map<number, Conversation>} */
  conversations: new Map(),
  /** @type {Map<number, Timeline>} */
  timelines: new Map(),
  /** @type {number | null} */
  openId: null,
  /** @type {Map<number, number>} seq replied to, per conversation */
  replyTo: new Map(),
  /** @type {Map<number, number[]>} */
  typing: new Map(),
  /** @type {Map<number, import('/sdk/index.js').Presence>} */
  presence: new Map(),
  /** @type {Map<number, {username: string, display_name: string}>} */
  users: new Map(),
  /** @type {OutboxEntry[]} */
  pending: [],
  /** @type {Map<string, {entry: OutboxEntry, error: NatterError}>} */
  failed: new Map(),
  /** @type {Map<number, string>} */
  drafts: new Map(),
  /** Groups left and removed from the list: id → the last seq seen then. @type {Map<number, number>} */
  hidden: new Map(),
  filter: '',
  detailsOpen: false,
  /** A one-off note for the empty pane. */
  notice: '',
};

const me = () => state.session?.user.id ?? 0;

/** @param {Conversation} c */
const isMember = (c) => c.members.some((m) => m.user_id === me());

/** @param {Conversation} c */
function peer(c) {
  return c.kind === 'direct' ? c.members.find((m) => m.user_id !== me()) : undefined;
}

/** A user's name at the start of a sentence: "You" for me. @param {number} id */
function userName(id) {
  if (id === me()) return 'You';
  const user = state.users.get(id);
  if (!user) lookUpUser(id);
  return user?.display_name || user?.username || 'Someone';
}

/** A user's name after the start of a sentence: "you" for me. @param {number} id */
function userNameInSentence(id) {
  return id === me() ? 'you' : userName(id);
}

/** @param {Conversation} c */
function title(c) {
  if (c.kind === 'group') return c.title || 'Untitled group';
  const other = peer(c);
  return other ? other.display_name || other.username : 'Direct chat';
}

/** @param {Conversation} c */
function myRead(c) {
  return c.members.find((m) => m.user_id === me())?.read_seq ?? c.last_seq;
}

/** @param {Conversation} c */
function unread(c) {
  if (!isMember(c)) return 0;
  return Math.max(0, c.last_seq - myRead(c));
}

/** @param {Conversation} c @param {number} seq */
function setMyRead(c, seq) {
  const mine = c.members.find((m) => m.user_id === me());
  if (mine) {
    mine.read_seq = Math.max(mine.read_seq, seq);
    mine.delivered_seq = Math.max(mine.delivered_seq, seq);
  }
}

/** @param {Conversation} c */
function rememberUsers(c) {
  for (const m of c.members) state.users.set(m.user_id, { username: m.username, display_name: m.display_name });
}

// ----- names of past members ---------------------------------------------------------------
// `members` lists current members only: the author of an old message, or someone a system message
// names, may have left since (or been removed, and the app reloaded). Such ids are looked up by id
// (protocol §5 `lookup_user`), each at most once per session, a few at a time, and what comes
// back renders as soon as it arrives. An id the server does not name stays "Someone".

/** Lookups at once: there is no batch form, and a long timeline must not flood the socket. */
const LOOKUPS_IN_FLIGHT_MAX = 4;
/** Ids waiting for a lookup, in the order they were met. @type {Set<number>} */
const lookupQueue = new Set();
/** Ids asked (or being asked) this session, answered or refused: never asked again. @type {Set<number>} */
const lookupAsked = new Set();
let lookupsInFlight = 0;
let lookupQueued = false;

/** Find out who `id` is, unless known or asked already. @param {number} id */
function lookUpUser(id) {
  if (!id || id === me() || state.users.has(id) || lookupAsked.has(id) || lookupQueue.has(id)) return;
  lookupQueue.add(id);
  // Names are asked for while rendering: send after the render, skipping by then the ids that a
  // conversation (which names its current members) has told meanwhile.
  if (lookupQueued) return;
  lookupQueued = true;
  setTimeout(() => {
    lookupQueued = false;
    pumpLookups();
  }, 0);
}

function pumpLookups() {
  const client = state.client;
  // Sent once connected (`connected` pumps again): a request made offline would only time out.
  if (!client?.connected) return;
  for (const id of lookupQueue) {
    if (lookupsInFlight >= LOOKUPS_IN_FLIGHT_MAX) break;
    lookupQueue.delete(id);
    if (state.users.has(id)) continue;
    lookupAsked.add(id);
    lookupsInFlight += 1;
    client.lookupUserById(id).then(
      (user) => {
        if (state.client !== client) return;
        // A conversation may have told the name meanwhile: it is as good.
        if (!state.users.has(id)) state.users.set(id, { username: user.username, display_name: user.display_name });
        schedule('list', 'pane');
      },
      (/** @type {NatterError} */ e) => {
        // Unanswered (the connection went): ask again on the next one. Refused: "Someone".
        if (state.client === client && e instanceof NatterError && e.isConnectionError) {
          lookupAsked.delete(id);
          lookupQueue.add(id);
        }
      },
    ).finally(() => {
      if (state.client !== client) return;
      lookupsInFlight -= 1;
      pumpLookups();
    });
  }
}

/** @param {Message} m */
function systemText(m) {
  if (m.content.type !== 'system') return '';
  const e = m.content.event;
  switch (e.kind) {
    case 'created':
      return e.title ? `${userName(e.by)} created the group “${e.title}”` : `${userName(e.by)} started the conversation`;
    case 'members_added':
      return `${userName(e.by)} added ${fmt.nameList(e.user_ids.map(userNameInSentence))}`;
    case 'member_removed':
      return `${userName(e.by)} removed ${userNameInSentence(e.user_id)}`;
    case 'member_left':
      return `${userName(e.user_id)} left`;
    case 'role_changed':
      return `${userName(e.by)} made ${userNameInSentence(e.user_id)} ${e.role === 'owner' ? 'the owner' : e.role === 'admin' ? 'an admin' : 'a member'}`;
    case 'title_changed':
      return `${userName(e.by)} renamed the group to “${e.title}”`;
    default:
      return 'The conversation changed';
  }
}

/** @param {Message} m */
const messageText = (m) => (m.content.type === 'text' ? m.content.text : systemText(m));

/** The tick state of one of my messages. @param {Conversation} c @param {number} seq */
function tick(c, seq) {
  const others = c.members.filter((m) => m.user_id !== me());
  if (!others.length) return 'sent';
  if (others.every((m) => m.read_seq >= seq)) return 'read';
  if (others.every((m) => m.delivered_seq >= seq)) return 'delivered';
  return 'sent';
}

/** A group I am no longer in, removed from the list. @param {Conversation} c */
const isHidden = (c) => state.hidden.has(c.id) && !isMember(c);

function sortedConversations() {
  const list = [...state.conversations.values()].filter((c) => !isHidden(c));
  list.sort((a, b) => b.last_activity_at_ms - a.last_activity_at_ms || b.last_pos - a.last_pos || b.id - a.id);
  return list;
}

// ----- offline cache ------------------------------------------------------------------------
// The conversation list and the newest messages of recently opened conversations are kept in
// localStorage, so that a reload without a connection still shows them (and the outbox).

const CACHE_PREFIX = 'natter.cache.';
const CACHED_TIMELINES = 8;
const CACHED_MESSAGES = 60;
/** Conversations opened, most recent first. @type {number[]} */
let recentlyOpened = [];

const cacheKey = () => `${CACHE_PREFIX}u${me()}`;

/**
 * Run `fn` once, `ms` after the first `schedule` since it last ran, however many came between:
 * a burst of changes costs one write to localStorage. `cancel` drops a pending run (sign-out).
 * @param {() => void} fn
 * @param {number} ms
 */
function coalesced(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return {
    schedule() {
      if (timer) return;
      timer = setTimeout(() => {
        timer = undefined;
        fn();
      }, ms);
    },
    cancel() {
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}

const cacheWrite = coalesced(() => saveCache(), 1500);

function saveCacheSoon() {
  if (state.session) cacheWrite.schedule();
}

function saveCache() {
  if (!state.session || (!state.listLoaded && !state.conversations.size)) return;
  /** @type {Record<string, Message[]>} */
  const timelines = {};
  for (const id of recentlyOpened.slice(0, CACHED_TIMELINES)) {
    const t = state.timelines.get(id);
    if (!t) continue;
    timelines[id] = [...t.bySeq.values()].filter((m) => m.seq >= t.low).sort((a, b) => a.seq - b.seq).slice(-CACHED_MESSAGES);
  }
  try {
    localStorage.setItem(cacheKey(), JSON.stringify({ v: 1, conversations: [...state.conversations.values()], timelines, recent: recentlyOpened.slice(0, CACHED_TIMELINES) }));
  } catch {
    // A full storage only costs the offline view.
  }
}

function loadCache() {
  try {
    const cache = JSON.parse(localStorage.getItem(cacheKey()) ?? 'null');
    if (!cache || cache.v !== 1) return;
    for (const c of cache.conversations ?? []) {
      state.conversations.set(c.id, c);
      rememberUsers(c);
    }
    for (const [id, messages] of Object.entries(cache.timelines ?? {})) {
      if (!Array.isArray(messages) || !messages.length) continue;
      const low = messages[0].seq;
      state.timelines.set(Number(id), { bySeq: new Map(messages.map((m) => [m.seq, m])), low, hasMore: low > 1, loading: false, stale: true });
    }
    recentlyOpened = Array.isArray(cache.recent) ? cache.recent : [];
    state.listLoaded = state.conversations.size > 0;
  } catch {
    // An unreadable cache is no cache.
  }
}

/** After a reconnect, replace a cached timeline's tail with the server's newest page. @param {number} id */
async function refreshTimeline(id) {
  const t = state.timelines.get(id);
  const c = state.conversations.get(id);
  const client = state.client;
  if (!t || !c || !client || !t.stale) return;
  t.stale = false;
  if (c.last_seq === 0) return;
  try {
    const page = await client.history(id, { before: c.last_seq + 1, limit: PAGE_SIZE });
    if (!page.messages.length) return;
    const top = Math.max(0, ...t.bySeq.keys());
    const first = page.messages[0].seq;
    if (first > top + 1) {
      // The cache ends before this page starts: drop it rather than show a hole.
      t.bySeq.clear();
      t.low = first;
      t.hasMore = page.more;
    } else {
      t.low = Math.min(t.low, first);
    }
    for (const m of page.messages) t.bySeq.set(m.seq, m);
    schedule('pane');
  } catch {
    t.stale = true;
  }
}

// ----- small maps in localStorage ------------------------------------------------------------
// Drafts and hidden groups are each kept as one JSON object keyed by conversation id.

/**
 * Add to `into` the entries saved under `key` whose value passes `valid`. Unreadable storage is
 * an empty map.
 * @template V
 * @param {string} key
 * @param {Map<number, V>} into
 * @param {(value: any) => boolean} valid
 */
function readIdMap(key, into, valid) {
  try {
    const saved = JSON.parse(localStorage.getItem(key) ?? '{}');
    for (const [id, value] of Object.entries(saved ?? {})) {
      if (valid(value)) into.set(Number(id), value);
    }
  } catch {
    // Unreadable: nothing saved.
  }
}

/**
 * Save `entries` under `key`, or remove the key when there are none. A full storage only costs
 * them across a reload.
 * @param {string} key
 * @param {[number, any][]} entries
 */
function writeIdMap(key, entries) {
  try {
    if (entries.length) localStorage.setItem(key, JSON.stringify(Object.fromEntries(entries)));
    else localStorage.removeItem(key);
  } catch {
    // Full or unavailable storage.
  }
}

// ----- drafts -------------------------------------------------------------------------------
// What is written and not sent, per conversation, kept in localStorage per user so that a reload
// does not lose it; cleared on send and on sign-out.

const DRAFTS_PREFIX = 'natter.drafts.';

const draftsKey = () => `${DRAFTS_PREFIX}u${me()}`;

function loadDrafts() {
  readIdMap(draftsKey(), state.drafts, (text) => typeof text === 'string' && text !== '');
}

const draftsWrite = coalesced(() => saveDrafts(), 300);

function saveDraftsSoon() {
  if (state.session) draftsWrite.schedule();
}

function saveDrafts() {
  if (!state.session) return;
  writeIdMap(draftsKey(), [...state.drafts].filter(([, text]) => text.trim()));
}

// ----- hidden groups ------------------------------------------------------------------------
// A group I left or was removed from stays readable (protocol §9.7), and so in the list, until
// removed from it. Which ones is kept in localStorage per user (ids only: kept across sign-outs,
// like a setting). Added back, a group returns to the list.

const HIDDEN_PREFIX = 'natter.hidden.';

const hiddenKey = () => `${HIDDEN_PREFIX}u${me()}`;

function loadHidden() {
  readIdMap(hiddenKey(), state.hidden, (seq) => typeof seq === 'number');
}

function saveHidden() {
  writeIdMap(hiddenKey(), [...state.hidden]);
}

/**
 * Being added back shows the group again, and for good: leaving it again does not hide it. Only
 * a state newer than the one hidden counts (the add writes a system message).
 * @param {Conversation} c
 */
function unhideIfBack(c) {
  const seq = state.hidden.get(c.id);
  if (seq === undefined || !isMember(c) || c.last_seq <= seq) return;
  state.hidden.delete(c.id);
  saveHidden();
}

/** @param {Conversation} c */
async function confirmHide(c) {
  const ok = await dialog((close) => [
    h('h2', { text: `Remove “${title(c)}” from your list?` }),
    h('p', { class: 'dialog-text', text: 'Its history stays on the server. If someone adds you back, it returns to your list.' }),
    h('div', { class: 'dialog-actions' },
      h('button', { class: 'button ghost', type: 'button', onclick: () => close(false), text: 'Cancel' }),
      h('button', { class: 'button primary', type: 'button', autofocus: true, onclick: () => close(true), text: 'Remove from list' })),
  ], { label: 'Remove from list' });
  if (!ok) return;
  state.hidden.set(c.id, c.last_seq);
  saveHidden();
  recentlyOpened = recentlyOpened.filter((id) => id !== c.id);
  state.detailsOpen = false;
  location.hash = '#/';
  schedule('list', 'title');
}

// ----- rendering ----------------------------------------------------------------------------

/** @type {Record<string, HTMLElement>} */
const dom = {};
const dirty = { list: false, pane: false, banner: false, title: false };
let renderQueued = false;

/** @param {...('list' | 'pane' | 'banner' | 'title')} parts */
function schedule(...parts) {
  for (const part of parts) dirty[part] = true;
  if (renderQueued) return;
  renderQueued = true;
  // A timer, not requestAnimationFrame: the title must update in hidden tabs too.
  setTimeout(() => {
    renderQueued = false;
    if (!state.session || !dom.shell) return;
    if (dirty.banner) renderBanner();
    if (dirty.list) renderList();
    if (dirty.pane) renderPane();
    if (dirty.title || dirty.list) renderTitle();
    if (dirty.list || dirty.pane) saveCacheSoon();
    dirty.list = dirty.pane = dirty.banner = dirty.title = false;
  }, 0);
}

const scheduleAll = () => schedule('list', 'pane', 'banner', 'title');

/** @param {string} name @param {number | string} key @param {string} [extra] */
function avatar(name, key, extra = '') {
  return h('span', { class: `avatar c${fmt.colorIndex(key)} ${extra}`, 'aria-hidden': 'true', text: fmt.initials(name) });
}

function renderTitle() {
  let total = 0;
  for (const c of state.conversations.values()) total += unread(c);
  document.title = total > 0 ? `(${total}) Natter` : 'Natter';
}

function renderBanner() {
  const banner = dom.banner;
  const pendingCount = state.pending.length;
  const waiting = pendingCount ? ` ${pendingCount === 1 ? '1 message' : `${pendingCount} messages`} waiting.` : '';
  let kind = '';
  let text = '';
  if (state.status === 'online' || state.status === 'idle') {
    kind = '';
  } else if (navigator.onLine === false || (state.disconnectedAt && Date.now() - state.disconnectedAt > OFFLINE_AFTER_MS)) {
    kind = 'offline';
    text = `Offline — your messages will be sent when the connection is back.${waiting}`;
  } else if (state.everOnline) {
    kind = 'reconnecting';
    text = `Reconnecting…${waiting}`;
  } else {
    kind = 'connecting';
    text = 'Connecting…';
  }
  banner.hidden = !kind;
  banner.className = `banner ${kind}`;
  banner.dataset.kind = kind;
  if (!kind) {
    banner.replaceChildren();
    return;
  }
  fill(banner,
    h('span', { class: 'banner-icon', html: kind === 'offline' ? icons.wifiOff : '' }, kind === 'offline' ? null : h('span', { class: 'spinner' })),
    h('span', { class: 'banner-text', text }),
    kind === 'connecting' ? null : h('button', { class: 'banner-action', type: 'button', onclick: () => state.client?.reconnectNow(), text: 'Retry now' }),
  );
}

// -- sidebar

function renderList() {
  const list = dom.list;
  if (!state.listLoaded && state.conversations.size === 0) {
    list.replaceChildren(...[0, 1, 2].map(() => h('li', { class: 'skeleton' }, h('span', { class: 'avatar' }), h('span', { class: 'lines' }, h('span'), h('span')))));
    list.setAttribute('aria-busy', 'true');
    return;
  }
  list.removeAttribute('aria-busy');
  const filter = state.filter.trim().toLowerCase();
  const conversations = sortedConversations().filter((c) => !filter || title(c).toLowerCase().includes(filter));
  if (!conversations.length) {
    list.replaceChildren(h('li', { class: 'list-empty' },
      filter ? h('p', { text: `No conversation matches “${state.filter}”.` }) : [
        h('p', { class: 'list-empty-title', text: 'No conversations yet' }),
        h('p', { text: 'Start one with a username, or create a group.' }),
        h('button', { class: 'button primary small', type: 'button', onclick: () => newChatDialog(), text: 'New conversation' }),
      ]));
    return;
  }
  if (list.querySelector('.skeleton, .list-empty')) list.replaceChildren();
  reconcile(list, conversations.map((c) => {
    const count = unread(c);
    const other = peer(c);
    const online = other ? state.presence.get(other.user_id)?.online === true : false;
    const typists = (state.typing.get(c.id) ?? []).filter((u) => u !== me());
    const last = c.last_message;
    const pendingHere = state.pending.some((e) => e.conversation_id === c.id);
    // What you started writing elsewhere is named in the list, as chat apps do.
    const draft = state.openId !== c.id ? state.drafts.get(c.id)?.trim() : undefined;
    let preview = '';
    if (typists.length) preview = c.kind === 'group' ? `${fmt.nameList(typists.map(userName))} typing…` : 'typing…';
    else if (draft) preview = `Draft: ${draft}`;
    else if (pendingHere) preview = `You: ${state.pending.filter((e) => e.conversation_id === c.id).at(-1)?.content.type === 'text' ? /** @type {any} */ (state.pending.filter((e) => e.conversation_id === c.id).at(-1)).content.text : ''}`;
    else if (last) {
      const who = last.content.type === 'text' ? (last.sender_id === me() ? 'You: ' : c.kind === 'group' ? `${userName(last.sender_id).split(' ')[0]}: ` : '') : '';
      preview = who + messageText(last);
    } else preview = c.kind === 'group' ? 'No messages yet' : 'Say hello 👋';
    const when = last ? last.sent_at_ms : c.last_activity_at_ms;
    const active = state.openId === c.id;
    const left = !isMember(c);
    const sig = JSON.stringify([title(c), count, online, preview, when, active, left, typists.length > 0, pendingHere, Math.floor(Date.now() / 60_000)]);
    return {
      key: `c${c.id}`,
      sig,
      build: () => h('li', { class: 'conv-item' },
        h('a', {
          class: `conv${active ? ' active' : ''}${count ? ' unread' : ''}${left ? ' left' : ''}`,
          href: `#/c/${c.id}`,
          'aria-current': active ? 'page' : null,
          dataset: { id: String(c.id) },
        },
        h('span', { class: 'avatar-wrap' },
          avatar(title(c), c.kind === 'group' ? `g${c.id}` : other?.user_id ?? c.id, c.kind === 'group' ? 'group' : ''),
          other ? h('span', { class: `presence-dot${online ? ' online' : ''}`, 'aria-hidden': 'true' }) : null),
        h('span', { class: 'conv-main' },
          h('span', { class: 'conv-top' },
            h('span', { class: 'conv-title', text: title(c) }),
            online ? srOnly(' (online)') : null,
            count ? srOnly(`, ${count} unread`) : null,
            h('time', { class: 'conv-time', datetime: new Date(when).toISOString(), text: fmt.listTime(when) })),
          h('span', { class: 'conv-bottom' },
            h('span', { class: `conv-preview${typists.length ? ' typing' : draft ? ' draft' : ''}`, text: left ? 'You are no longer a member' : preview }),
            count ? h('span', { class: 'badge', 'aria-hidden': 'true', text: count > 99 ? '99+' : String(count) }) : null))),
      ),
    };
  }));
}

// -- message pane

function renderPane() {
  const id = state.openId;
  const c = id === null ? undefined : state.conversations.get(id);
  dom.shell.classList.toggle('show-pane', id !== null);
  if (id === null || !c) {
    const view = `empty${id === null ? '' : '-loading'}${state.notice}`;
    if (dom.pane.dataset.view !== view) {
      dom.pane.dataset.view = view;
      dom.pane.replaceChildren(h('div', { class: 'pane-empty' },
        h('div', { class: 'pane-empty-icon', html: icons.chat }),
        h('h2', { text: id === null ? 'Your conversations' : 'Loading…' }),
        state.notice ? h('p', { class: 'notice', role: 'status', text: state.notice }) : null,
        h('p', { text: id === null ? 'Pick a conversation on the left, or start a new one.' : 'Getting this conversation from the server.' }),
        id === null ? h('button', { class: 'button primary', type: 'button', onclick: () => newChatDialog(), text: 'New conversation' }) : null));
    }
    return;
  }
  state.notice = '';
  // Group members' presence shows in the details; the server answers only while we share a
  // current conversation with them (protocol §9.9), so only for a group we are in.
  if (c.kind === 'group' && isMember(c)) askPresence(c.members.map((m) => m.user_id));
  if (dom.pane.dataset.view !== `c${id}`) buildConversationView(c);
  renderHeader(c);
  renderDetails(c);
  renderMessages(c);
  renderTyping(c);
  renderComposer(c);
}

/** @param {Conversation} c */
function buildConversationView(c) {
  dom.pane.dataset.view = `c${c.id}`;
  dom.header = h('header', { class: 'pane-header' });
  dom.messages = h('ol', { class: 'messages', 'aria-label': 'Messages' });
  dom.scroller = h('div', { class: 'scroller', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', tabindex: '0', onscroll: onScroll }, dom.messages);
  dom.typing = h('div', { class: 'typing-row', 'aria-live': 'polite' });
  dom.replyBar = h('div', { class: 'reply-bar', hidden: true });
  dom.input = /** @type {HTMLTextAreaElement} */ (h('textarea', {
    id: 'composer-input',
    class: 'composer-input',
    rows: '1',
    placeholder: 'Write a message…',
    'aria-label': 'Message',
    autocomplete: 'off',
    enterkeyhint: 'send',
    onkeydown: onComposerKey,
    oninput: onComposerInput,
    'aria-describedby': 'composer-note',
  }));
  dom.input.value = state.drafts.get(c.id) ?? '';
  dom.lengthNote = h('p', { id: 'composer-note', class: 'composer-note', hidden: true });
  dom.sendButton = h('button', { class: 'send', type: 'submit', 'aria-label': 'Send', title: 'Send (Enter)', html: icons.send });
  dom.composer = h('form', { class: 'composer', onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); sendFromComposer(); } },
    dom.replyBar,
    h('div', { class: 'composer-row' }, dom.input, dom.sendButton),
    dom.lengthNote);
  dom.details = h('aside', { class: 'details', 'aria-label': 'Conversation details', hidden: true });
  dom.jump = h('button', { class: 'jump', type: 'button', hidden: true, onclick: jumpToLatest });
  dom.pane.replaceChildren(
    h('section', { class: 'conversation', 'aria-label': title(c) }, dom.header, h('div', { class: 'scroll-area' }, dom.scroller, dom.jump), dom.typing, dom.composer),
    dom.details,
  );
  autosize();
  renderLengthNote();
  stick = !(unreadMark && unreadMark.id === c.id);
  requestAnimationFrame(() => {
    if (window.matchMedia('(min-width: 761px)').matches || document.activeElement === document.body) dom.input.focus();
  });
}

/** @param {Conversation} c */
function renderHeader(c) {
  const other = peer(c);
  const typists = (state.typing.get(c.id) ?? []).filter((u) => u !== me());
  let subtitle = '';
  let live = false;
  if (!isMember(c)) subtitle = 'You are no longer a member';
  else if (typists.length) {
    subtitle = c.kind === 'group' ? `${fmt.nameList(typists.map(userName))} ${typists.length === 1 ? 'is' : 'are'} typing…` : 'typing…';
    live = true;
  } else if (other) {
    const p = state.presence.get(other.user_id);
    subtitle = !p ? `@${other.username}` : p.online ? 'online' : fmt.lastSeen(p.last_seen_at_ms);
    live = p?.online === true;
  } else subtitle = `${c.members.length} ${c.members.length === 1 ? 'member' : 'members'}`;
  const sig = JSON.stringify([title(c), subtitle, live, state.detailsOpen]);
  if (dom.header.dataset.sig === sig) return;
  dom.header.dataset.sig = sig;
  dom.header.replaceChildren(
    h('a', { class: 'icon-button back', href: '#/', 'aria-label': 'Back to conversations', html: icons.back }),
    avatar(title(c), c.kind === 'group' ? `g${c.id}` : other?.user_id ?? c.id, c.kind === 'group' ? 'group' : ''),
    h('div', { class: 'pane-title' },
      h('h2', { text: title(c) }),
      h('p', { class: `pane-subtitle${live ? ' live' : ''}`, text: subtitle })),
    h('button', {
      class: `icon-button${state.detailsOpen ? ' pressed' : ''}`,
      type: 'button',
      'aria-label': c.kind === 'group' ? 'Group details' : 'Conversation details',
      'aria-expanded': String(state.detailsOpen),
      onclick: () => toggleDetails(),
      html: icons.info,
    }),
  );
}

/** @param {boolean} [open] */
function toggleDetails(open = !state.detailsOpen) {
  state.detailsOpen = open;
  schedule('pane');
  if (open) setTimeout(() => /** @type {HTMLElement | null} */ (dom.details?.querySelector('button, input'))?.focus(), 30);
}

/** @param {Conversation} c */
function renderDetails(c) {
  const details = dom.details;
  details.hidden = !state.detailsOpen;
  dom.pane.classList.toggle('with-details', state.detailsOpen);
  if (!state.detailsOpen) return;
  const mine = c.members.find((m) => m.user_id === me());
  const canManage = c.kind === 'group' && (mine?.role === 'owner' || mine?.role === 'admin');
  const isOwner = c.kind === 'group' && mine?.role === 'owner';
  const sig = JSON.stringify([c.members.map((m) => [m.user_id, m.role, m.display_name]), [...state.presence.values()].map((p) => [p.user_id, p.online]), c.title, canManage]);
  if (details.dataset.sig === sig) return;
  details.dataset.sig = sig;
  const other = peer(c);
  const members = [...c.members].sort((a, b) => (a.role === 'owner' ? -1 : b.role === 'owner' ? 1 : a.display_name.localeCompare(b.display_name)));
  const error = h('p', { class: 'form-error', role: 'alert' });
  const renameError = h('p', { class: 'form-error', role: 'alert' });
  // A presence or role change redraws the details: what is being typed there stays.
  const typing = /** @type {HTMLInputElement | null} */ (details.dataset.conv === String(c.id) && details.contains(document.activeElement) && document.activeElement instanceof HTMLInputElement ? document.activeElement : null);
  details.dataset.conv = String(c.id);
  fill(details,
    h('div', { class: 'details-head' },
      h('h3', { text: c.kind === 'group' ? 'Group' : 'Contact' }),
      h('button', { class: 'icon-button', type: 'button', 'aria-label': 'Close details', onclick: () => toggleDetails(false), html: icons.close })),
    h('div', { class: 'details-hero' },
      avatar(title(c), c.kind === 'group' ? `g${c.id}` : other?.user_id ?? c.id, `large ${c.kind === 'group' ? 'group' : ''}`),
      h('h4', { text: title(c) }),
      h('p', { text: other ? `@${other.username}` : c.members.length === 1 ? '1 member' : `${c.members.length} members` })),
    c.kind === 'group' ? h('section', { class: 'details-section' },
      h('h5', { text: 'Members' }),
      h('ul', { class: 'member-list' }, members.map((m) => {
        const online = state.presence.get(m.user_id)?.online;
        return h('li', { class: 'member' },
          h('span', { class: 'avatar-wrap' }, avatar(m.display_name || m.username, m.user_id, 'small'),
            m.user_id !== me() ? h('span', { class: `presence-dot${online ? ' online' : ''}` }) : null),
          h('span', { class: 'member-name' },
            h('span', { text: m.user_id === me() ? `${m.display_name} (you)` : m.display_name }),
            h('span', { class: 'member-meta', text: `@${m.username}${m.role !== 'member' ? ` · ${m.role}` : ''}` })),
          isOwner && m.user_id !== me()
            // Below the name, so that a narrow panel still shows whose they are.
            ? h('span', { class: 'member-actions' }, roleSelect(c, m, error), m.role !== 'owner' ? removeButton(c, m) : null)
            : canManage && m.user_id !== me() && m.role === 'member' ? removeButton(c, m) : null);
      })),
      canManage ? h('form', { class: 'add-member', onsubmit: async (/** @type {Event} */ e) => {
        e.preventDefault();
        const input = /** @type {HTMLInputElement} */ (/** @type {HTMLElement} */ (e.currentTarget).querySelector('input'));
        const names = input.value.split(/[\s,]+/).map((s) => s.replace(/^@/, '')).filter(Boolean);
        error.textContent = '';
        if (!names.length) {
          error.textContent = 'Type the username of someone to add.';
          return;
        }
        try {
          const users = await Promise.all(names.map((n) => findUser(/** @type {NatterClient} */ (state.client), n)));
          const inGroup = users.filter((u) => c.members.some((m) => m.user_id === u.id));
          if (inGroup.length === users.length) {
            error.textContent = inGroup.length === 1
              ? `${inGroup[0].id === me() ? 'You are' : `${inGroup[0].display_name} is`} already in the group.`
              : 'They are all in the group already.';
            return;
          }
          await state.client?.addMembers(c.id, users.filter((u) => !inGroup.includes(u)).map((u) => u.id));
          input.value = '';
        } catch (err) {
          error.textContent = errorText(err);
        }
      } },
      h('label', { class: 'sr-only', for: 'add-member-input', text: 'Add people by username' }),
      h('input', { id: 'add-member-input', class: 'input', placeholder: 'Add people by username', autocomplete: 'off' }),
      h('button', { class: 'button small', type: 'submit', 'aria-label': 'Add member', html: icons.userPlus })) : null,
      error) : h('section', { class: 'details-section' },
      h('p', { class: 'details-note', text: other && state.presence.get(other.user_id)?.online ? 'Online now' : fmt.lastSeen(other ? state.presence.get(other.user_id)?.last_seen_at_ms : undefined) })),
    canManage ? h('section', { class: 'details-section' },
      h('h5', { text: 'Group name' }),
      renameForm(c, renameError),
      renameError) : null,
    c.kind === 'group' && isMember(c) ? h('section', { class: 'details-section' },
      h('button', { class: 'button danger wide', type: 'button', html: `${icons.leave}<span>Leave group</span>`, onclick: () => confirmLeave(c) })) : null,
    c.kind === 'group' && !isMember(c) ? h('section', { class: 'details-section' },
      h('p', { class: 'details-note', text: 'You are no longer in this group.' }),
      h('button', { class: 'button wide', type: 'button', text: 'Remove from list', onclick: () => confirmHide(c) })) : null,
  );
  const again = typing?.id ? /** @type {HTMLInputElement | null} */ (details.querySelector(`#${typing.id}`)) : null;
  if (typing && again) {
    again.value = typing.value;
    again.focus();
    again.setSelectionRange(typing.selectionStart, typing.selectionEnd);
  }
}

/** @param {Conversation} c */
async function confirmLeave(c) {
  if (c.members.some((m) => m.user_id === me() && m.role === 'owner') && c.members.length > 1) {
    await alertDialog('Hand the group over first', 'You own this group. Make another member its owner in the member list (“Role”), then you can leave.');
    return;
  }
  const ok = await dialog((close) => [
    h('h2', { text: `Leave “${title(c)}”?` }),
    h('p', { class: 'dialog-text', text: 'You will stop getting its messages. Someone can add you back later.' }),
    h('div', { class: 'dialog-actions' },
      h('button', { class: 'button ghost', type: 'button', onclick: () => close(false), text: 'Cancel' }),
      h('button', { class: 'button danger primary', type: 'button', autofocus: true, onclick: () => close(true), text: 'Leave group' })),
  ], { label: 'Leave group' });
  if (!ok) return;
  try {
    await state.client?.leave(c.id);
    state.detailsOpen = false;
    const fresh = await state.client?.conversation(c.id).catch(() => undefined);
    if (fresh) onConversation(fresh);
    location.hash = '#/';
  } catch (e) {
    await alertDialog('Could not leave', errorText(e));
  }
}

/** @param {Conversation} c @param {import('/sdk/index.js').Member} m */
function removeButton(c, m) {
  return h('button', { class: 'button ghost small', type: 'button', 'aria-label': `Remove ${m.display_name}`, text: 'Remove', onclick: () => confirmRemove(c, m) });
}

/**
 * The owner's control of a member's role. Making someone the owner hands the group over (the
 * owner becomes an admin), so it is asked first.
 * @param {Conversation} c
 * @param {import('/sdk/index.js').Member} m
 * @param {HTMLElement} error
 */
function roleSelect(c, m, error) {
  const name = m.display_name || m.username;
  const select = /** @type {HTMLSelectElement} */ (h('select', { class: 'role-select', 'aria-label': `Role of ${name}` },
    ['member', 'admin', 'owner'].map((role) => h('option', { value: role, text: role[0].toUpperCase() + role.slice(1) }))));
  select.value = m.role;
  select.addEventListener('change', async () => {
    const role = /** @type {import('/sdk/index.js').Role} */ (select.value);
    error.textContent = '';
    if (role === 'owner') {
      const ok = await dialog((close) => [
        h('h2', { text: `Make ${name} the owner of “${title(c)}”?` }),
        h('p', { class: 'dialog-text', text: 'There is one owner: you will become an admin, and only the new owner can change roles.' }),
        h('div', { class: 'dialog-actions' },
          h('button', { class: 'button ghost', type: 'button', onclick: () => close(false), text: 'Cancel' }),
          h('button', { class: 'button primary', type: 'button', autofocus: true, onclick: () => close(true), text: 'Make owner' })),
      ], { label: 'Make owner' });
      if (!ok) {
        select.value = m.role;
        return;
      }
    }
    try {
      const fresh = await state.client?.setRole(c.id, m.user_id, role);
      if (fresh) onConversation(fresh);
    } catch (e) {
      select.value = m.role;
      error.textContent = errorText(e);
    }
  });
  return select;
}

/**
 * Renaming a group, for its owner and admins; the new name is posted to the whole group.
 * @param {Conversation} c
 * @param {HTMLElement} error
 */
function renameForm(c, error) {
  const input = /** @type {HTMLInputElement} */ (h('input', { id: 'rename-input', class: 'input', autocomplete: 'off', maxlength: '128', value: c.title ?? '' }));
  return h('form', { class: 'add-member', onsubmit: async (/** @type {Event} */ e) => {
    e.preventDefault();
    const name = input.value.trim();
    error.textContent = '';
    if (!name) {
      error.textContent = 'A group needs a name.';
      return;
    }
    if (name === c.title) return;
    try {
      const fresh = await state.client?.setTitle(c.id, name);
      if (fresh) onConversation(fresh);
    } catch (err) {
      error.textContent = errorText(err);
    }
  } },
  h('label', { class: 'sr-only', for: 'rename-input', text: 'Group name' }),
  input,
  h('button', { class: 'button small', type: 'submit', text: 'Rename' }));
}

/**
 * Removing someone is posted to the whole group: asked first, like leaving.
 * @param {Conversation} c
 * @param {import('/sdk/index.js').Member} m
 */
async function confirmRemove(c, m) {
  const name = m.display_name || m.username;
  const ok = await dialog((close) => [
    h('h2', { text: `Remove ${name} from “${title(c)}”?` }),
    h('p', { class: 'dialog-text', text: 'They will stop getting its messages, and everyone in the group will see that you removed them. You can add them back later.' }),
    h('div', { class: 'dialog-actions' },
      h('button', { class: 'button ghost', type: 'button', onclick: () => close(false), text: 'Cancel' }),
      h('button', { class: 'button danger primary', type: 'button', autofocus: true, onclick: () => close(true), text: 'Remove' })),
  ], { label: 'Remove member' });
  if (!ok) return;
  try {
    await state.client?.removeMember(c.id, m.user_id);
  } catch (e) {
    await alertDialog(`Could not remove ${name}`, errorText(e));
  }
}

/** @param {string} heading @param {string} text */
function alertDialog(heading, text) {
  return dialog((close) => [
    h('h2', { text: heading }),
    h('p', { class: 'dialog-text', text }),
    h('div', { class: 'dialog-actions' }, h('button', { class: 'button primary', type: 'button', onclick: () => close(), text: 'OK' })),
  ], { label: heading });
}

let stick = true;
/**
 * Where the unread messages of the open conversation started when it was opened: a "New messages"
 * divider goes there, and the view opens at it once that message is loaded (`placed`). Until then
 * nothing is marked read.
 * @type {{id: number, seq: number, placed: boolean} | null}
 */
let unreadMark = null;
/** Further back than this, the divider is not worth loading history for: open at the end. */
const UNREAD_LOAD_MAX = 500;
let restoreFrom = /** @type {{height: number, top: number} | null} */ (null);

function nearBottom() {
  const s = dom.scroller;
  return !s || s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function onScroll() {
  stick = nearBottom();
  renderJump();
  const id = state.openId;
  if (id === null) return;
  const timeline = state.timelines.get(id);
  if (timeline && timeline.hasMore && !timeline.loading && dom.scroller.scrollTop < 300) loadOlder(id);
  if (stick) maybeMarkRead();
}

/** @param {Conversation} c */
function renderMessages(c) {
  const timeline = ensureTimeline(c);
  const wasNear = stick;
  /** @type {import('./ui.js').Keyed[]} */
  const items = [];
  if (timeline.hasMore || timeline.loading) {
    items.push({ key: 'loader', sig: `${timeline.loading}`, build: () => h('li', { class: 'loader', 'aria-hidden': timeline.loading ? null : 'true' }, timeline.loading ? h('span', { class: 'spinner' }) : null, timeline.loading ? 'Loading earlier messages…' : '') });
  } else {
    items.push({ key: 'start', sig: title(c), build: () => h('li', { class: 'timeline-start' },
      h('span', { text: c.kind === 'group' ? `This is the beginning of “${title(c)}”.` : `This is the beginning of your conversation with ${title(c)}.` })) });
  }
  if (timeline.error) items.push({ key: 'error', sig: timeline.error, build: () => h('li', { class: 'timeline-error', role: 'alert', text: timeline.error ?? '' }) });
  const seqs = [...timeline.bySeq.keys()].filter((s) => s >= timeline.low).sort((a, b) => a - b);
  const ids = new Set();
  // Each day's messages are in a box of their own, with the day's label sticky inside it: the
  // next day's box pushes the label out instead of the two labels stacking at the top.
  /** @type {{key: string, items: import('./ui.js').Keyed[]}[]} */
  const days = [];
  /** @type {Map<number, number>} */
  const seenDays = new Map();
  let lastDay = 0;
  let dividerShown = false;
  /** @type {import('./ui.js').Keyed[]} */
  let dayItems = [];
  /** @type {Message | undefined} */
  let previous;
  for (const seq of seqs) {
    const m = /** @type {Message} */ (timeline.bySeq.get(seq));
    if (m.client_msg_id) ids.add(m.client_msg_id);
    const day = fmt.dayStart(m.sent_at_ms);
    if (day !== lastDay) {
      lastDay = day;
      const label = fmt.dayLabel(m.sent_at_ms);
      // Clocks can disagree: a day that comes back gets a key of its own.
      const again = seenDays.get(day) ?? 0;
      seenDays.set(day, again + 1);
      const key = again ? `d${day}.${again}` : `d${day}`;
      dayItems = [];
      days.push({ key, items: dayItems });
      items.push({ key, sig: label, build: () => h('li', { class: 'day-group' },
        h('div', { class: 'day', role: 'separator' }, h('span', { text: label })),
        h('ol', { class: 'day-messages' })) });
      previous = undefined;
    }
    if (unreadMark && unreadMark.id === c.id && seq >= unreadMark.seq && !dividerShown) {
      dividerShown = true;
      dayItems.push({ key: 'unread', sig: 'unread', build: () => h('li', { class: 'unread-divider', role: 'separator' }, h('span', { text: 'New messages' })) });
      previous = undefined;
    }
    if (m.content.type === 'system') {
      const text = systemText(m);
      dayItems.push({ key: `m${seq}`, sig: text, build: () => h('li', { class: 'system', dataset: { seq: String(seq) } }, h('span', { text })) });
      previous = undefined;
      continue;
    }
    const own = m.sender_id === me();
    const grouped = previous !== undefined && previous.sender_id === m.sender_id && m.sent_at_ms - previous.sent_at_ms < GROUP_MS;
    previous = m;
    const state_ = own ? tick(c, seq) : '';
    const quoted = m.reply_to ? timeline.bySeq.get(m.reply_to) : undefined;
    const sender = own ? 'You' : userName(m.sender_id);
    const sig = JSON.stringify([grouped, state_, m.reply_to ? (quoted ? messageText(quoted) + userName(quoted.sender_id) : '?') : '', sender, c.kind]);
    dayItems.push({ key: `m${seq}`, sig, build: () => messageRow(c, m, { own, grouped, tick: state_, quoted, sender }) });
  }
  const entries = state.pending.filter((e) => e.conversation_id === c.id && !ids.has(e.client_msg_id));
  const failed = [...state.failed.values()].filter((f) => f.entry.conversation_id === c.id);
  for (const entry of entries) {
    const quoted = entry.reply_to ? timeline.bySeq.get(entry.reply_to) : undefined;
    items.push({ key: `p${entry.client_msg_id}`, sig: 'pending', build: () => pendingRow(c, entry, quoted, undefined) });
  }
  for (const f of failed) {
    const quoted = f.entry.reply_to ? timeline.bySeq.get(f.entry.reply_to) : undefined;
    items.push({ key: `f${f.entry.client_msg_id}`, sig: `failed${f.error.message}`, build: () => pendingRow(c, f.entry, quoted, f.error) });
  }

  const before = restoreFrom;
  reconcile(dom.messages, items);
  /** @type {Map<string, HTMLElement>} */
  const boxes = new Map();
  for (const child of /** @type {HTMLElement[]} */ ([...dom.messages.children])) boxes.set(child.dataset.key ?? '', child);
  for (const day of days) {
    reconcile(/** @type {HTMLElement} */ (boxes.get(day.key)?.querySelector('.day-messages')), day.items);
  }
  if (before) {
    dom.scroller.scrollTop = dom.scroller.scrollHeight - before.height + before.top;
    restoreFrom = null;
  } else if (wasNear) {
    dom.scroller.scrollTop = dom.scroller.scrollHeight;
  }
  if (unreadMark && unreadMark.id === c.id && !unreadMark.placed) placeUnread(c, timeline);
  stick = nearBottom();
  maybeMarkRead();
  renderJump();
  // A short first page may not fill the screen: load more until it does.
  if (timeline.hasMore && !timeline.loading && dom.scroller.scrollHeight <= dom.scroller.clientHeight + 50 && timeline.bySeq.size) {
    loadOlder(c.id);
  }
}

/**
 * Open at the first unread message: load back to it, then scroll so that its divider is near the
 * top (or to the end, if everything fits).
 * @param {Conversation} c
 * @param {Timeline} timeline
 */
function placeUnread(c, timeline) {
  const mark = /** @type {NonNullable<typeof unreadMark>} */ (unreadMark);
  if (timeline.low > mark.seq && timeline.hasMore) {
    if (!timeline.loading) loadOlder(c.id, timeline.low - mark.seq + 10);
    return;
  }
  mark.placed = true;
  const divider = /** @type {HTMLElement | null} */ (dom.messages.querySelector('.unread-divider'));
  if (!divider) {
    dom.scroller.scrollTop = dom.scroller.scrollHeight;
    return;
  }
  dom.scroller.scrollTop += divider.getBoundingClientRect().top - dom.scroller.getBoundingClientRect().top - 48;
}

/** The "jump to latest" button: shown while scrolled up, with what arrived below unread. */
function renderJump() {
  const jump = dom.jump;
  const c = state.openId === null ? undefined : state.conversations.get(state.openId);
  if (!jump || !c) return;
  const count = unread(c);
  const text = count ? `${count > 99 ? '99+' : count} new ${count === 1 ? 'message' : 'messages'}` : '';
  const sig = JSON.stringify([stick, text]);
  if (jump.dataset.sig === sig) return;
  jump.dataset.sig = sig;
  jump.hidden = stick;
  jump.classList.toggle('has-new', count > 0);
  jump.setAttribute('aria-label', count ? `Jump to the latest message, ${text}` : 'Jump to the latest message');
  fill(jump, h('span', { class: 'jump-icon', html: icons.down }), text ? h('span', { class: 'jump-text', text }) : null);
}

function jumpToLatest() {
  dom.scroller.scrollTop = dom.scroller.scrollHeight;
  stick = true;
  maybeMarkRead();
  renderJump();
}

/**
 * @param {Conversation} c
 * @param {Message} m
 * @param {{own: boolean, grouped: boolean, tick: string, quoted: Message | undefined, sender: string}} o
 */
function messageRow(c, m, o) {
  const text = m.content.type === 'text' ? m.content.text : '';
  const tickLabel = { sent: 'Sent', delivered: 'Delivered', read: 'Read' }[o.tick] ?? '';
  return h('li', {
    class: `msg${o.own ? ' own' : ' theirs'}${o.grouped ? ' grouped' : ''}`,
    dataset: { seq: String(m.seq), state: o.tick || 'received' },
  },
  !o.own && c.kind === 'group' && !o.grouped ? avatar(o.sender, m.sender_id, 'small msg-avatar') : null,
  h('div', { class: 'bubble' },
    !o.own && c.kind === 'group' && !o.grouped ? h('span', { class: `sender t${fmt.colorIndex(m.sender_id)}`, text: o.sender }) : null,
    srOnly(`${o.sender}: `),
    m.reply_to ? quote(o.quoted, m.reply_to) : null,
    h('span', { class: 'text' }, linkify(text)),
    h('span', { class: 'meta' },
      h('time', { datetime: new Date(m.sent_at_ms).toISOString(), title: fmt.fullTime(m.sent_at_ms), text: fmt.time(m.sent_at_ms) }),
      o.own ? h('span', { class: `tick ${o.tick}`, title: tickLabel, 'aria-label': tickLabel, role: 'img', html: o.tick === 'sent' ? icons.check : icons.checks }) : null)),
  h('button', { class: 'reply-button', type: 'button', 'aria-label': o.own ? 'Reply to yourself' : `Reply to ${o.sender}`, title: 'Reply', html: icons.reply, onclick: () => startReply(c.id, m.seq) }));
}

const LINK = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** Text with its web addresses as links (built as nodes: nothing is parsed as HTML). @param {string} text */
function linkify(text) {
  /** @type {(string | HTMLElement)[]} */
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    const index = match.index ?? 0;
    if (index > at) parts.push(text.slice(at, index));
    parts.push(h('a', { href: match[0], target: '_blank', rel: 'noopener noreferrer nofollow', text: match[0] }));
    at = index + match[0].length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

/**
 * @param {Conversation} c
 * @param {OutboxEntry} entry
 * @param {Message | undefined} quoted
 * @param {NatterError | undefined} error
 */
function pendingRow(c, entry, quoted, error) {
  const text = entry.content.type === 'text' ? entry.content.text : '';
  return h('li', { class: `msg own pending${error ? ' failed' : ''}`, dataset: { state: error ? 'failed' : 'pending', clientMsgId: entry.client_msg_id } },
    h('div', { class: 'bubble' },
      srOnly('You: '),
      entry.reply_to ? quote(quoted, entry.reply_to) : null,
      h('span', { class: 'text', text }),
      h('span', { class: 'meta' },
        error ? h('span', { class: 'failed-label', text: 'Not sent' }) : h('time', { text: fmt.time(entry.created_at_ms) }),
        h('span', { class: 'tick pending', role: 'img', 'aria-label': error ? 'Not sent' : 'Waiting to be sent', title: error ? error.message : 'Waiting to be sent', html: error ? icons.alert : icons.clock }))),
    error ? h('div', { class: 'failed-actions' },
      h('span', { text: errorText(error) }),
      // Out of the conversation, trying again can only fail again.
      isMember(c) ? h('button', { class: 'link', type: 'button', text: 'Try again', onclick: () => {
        state.failed.delete(entry.client_msg_id);
        void state.client?.send(c.id, entry.content, { replyTo: entry.reply_to });
        schedule('pane');
      } }) : null,
      h('button', { class: 'link', type: 'button', text: 'Delete', onclick: () => {
        state.failed.delete(entry.client_msg_id);
        schedule('pane');
      } })) : null);
}

/** @param {Message | undefined} quoted @param {number} seq */
function quote(quoted, seq) {
  return h('button', {
    class: 'quote',
    type: 'button',
    'aria-label': quoted ? `In reply to ${userNameInSentence(quoted.sender_id)}: ${messageText(quoted)}` : 'In reply to an earlier message',
    onclick: () => {
      const target = /** @type {HTMLElement | null} */ (dom.messages.querySelector(`[data-seq="${seq}"]`));
      if (target) {
        target.scrollIntoView({ block: 'center', behavior: 'smooth' });
        target.classList.add('flash');
        setTimeout(() => target.classList.remove('flash'), 1200);
      }
    },
  },
  h('span', { class: 'quote-name', text: quoted ? userName(quoted.sender_id) : 'Earlier message' }),
  h('span', { class: 'quote-text', text: quoted ? messageText(quoted) : 'Scroll up to load it' }));
}

/** @param {Conversation} c */
function renderTyping(c) {
  const typists = (state.typing.get(c.id) ?? []).filter((u) => u !== me());
  const text = typists.length
    ? c.kind === 'group' ? `${fmt.nameList(typists.map(userName))} ${typists.length === 1 ? 'is' : 'are'} typing` : `${title(c)} is typing`
    : '';
  if (dom.typing.dataset.text === text) return;
  dom.typing.dataset.text = text;
  dom.typing.replaceChildren(...(text ? [h('span', { class: 'typing-dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), h('span', { class: 'typing-text', text: `${text}…` })] : []));
  dom.typing.classList.toggle('visible', !!text);
}

/** @param {Conversation} c */
function renderComposer(c) {
  const member = isMember(c);
  dom.input.disabled = !member;
  dom.sendButton.toggleAttribute('disabled', !member);
  dom.input.placeholder = member ? 'Write a message…' : 'You are no longer a member of this conversation';
  const seq = state.replyTo.get(c.id);
  const timeline = state.timelines.get(c.id);
  const quoted = seq ? timeline?.bySeq.get(seq) : undefined;
  const sig = seq ? `${seq}${quoted ? messageText(quoted) : ''}` : '';
  if (dom.replyBar.dataset.sig === sig) return;
  dom.replyBar.dataset.sig = sig;
  dom.replyBar.hidden = !seq;
  dom.replyBar.replaceChildren(...(seq ? [
    h('span', { class: 'reply-bar-icon', html: icons.reply }),
    h('span', { class: 'reply-bar-body' },
      h('span', { class: 'quote-name', text: quoted ? `Replying to ${quoted.sender_id === me() ? 'yourself' : userName(quoted.sender_id)}` : 'Replying' }),
      h('span', { class: 'quote-text', text: quoted ? messageText(quoted) : '' })),
    h('button', { class: 'icon-button small', type: 'button', 'aria-label': 'Cancel reply', onclick: () => cancelReply(), html: icons.close }),
  ] : []));
}

// ----- actions ------------------------------------------------------------------------------

/** @param {number} id @param {number} seq */
function startReply(id, seq) {
  state.replyTo.set(id, seq);
  schedule('pane');
  dom.input?.focus();
}

function cancelReply() {
  if (state.openId !== null) state.replyTo.delete(state.openId);
  schedule('pane');
  dom.input?.focus();
}

/** @param {Conversation} c */
function ensureTimeline(c) {
  let timeline = state.timelines.get(c.id);
  if (!timeline) {
    timeline = { bySeq: new Map(), low: c.last_seq + 1, hasMore: c.last_seq > 0, loading: false };
    state.timelines.set(c.id, timeline);
    if (c.last_message && c.last_message.seq === c.last_seq) {
      timeline.bySeq.set(c.last_seq, c.last_message);
      timeline.low = c.last_seq;
    }
    if (timeline.hasMore) setTimeout(() => loadOlder(c.id), 0);
  }
  return timeline;
}

/**
 * Load the page before the oldest loaded message.
 * @param {number} id
 * @param {number} [limit] How many, at least a page (the server lowers it to its `history_page_max`).
 */
async function loadOlder(id, limit = PAGE_SIZE) {
  const timeline = state.timelines.get(id);
  const client = state.client;
  if (!timeline || !client || timeline.loading || !timeline.hasMore) return;
  timeline.loading = true;
  timeline.error = undefined;
  schedule('pane');
  try {
    const page = await client.history(id, { before: timeline.low, limit: Math.max(PAGE_SIZE, limit) });
    if (state.openId === id && dom.scroller && timeline.bySeq.size) {
      restoreFrom = { height: dom.scroller.scrollHeight, top: dom.scroller.scrollTop };
    }
    for (const m of page.messages) timeline.bySeq.set(m.seq, m);
    if (page.messages.length) timeline.low = Math.min(timeline.low, page.messages[0].seq);
    timeline.hasMore = page.more && timeline.low > 1;
  } catch (e) {
    const error = /** @type {NatterError} */ (e);
    if (error.code === 'not_member') timeline.hasMore = false;
    else timeline.error = `Could not load messages: ${errorText(e)}`;
  } finally {
    timeline.loading = false;
    schedule('pane');
  }
}

function maybeMarkRead() {
  const id = state.openId;
  const client = state.client;
  if (id === null || !client || document.visibilityState !== 'visible' || !stick) return;
  const c = state.conversations.get(id);
  if (!c || !isMember(c)) return;
  // Not before the view is at the first unread message: loading up to it passes the bottom.
  if (unreadMark && unreadMark.id === id && !unreadMark.placed) return;
  if (c.last_seq > myRead(c)) {
    client.markRead(c.id, c.last_seq);
    setMyRead(c, c.last_seq);
    schedule('list', 'title');
  }
}

function autosize() {
  const input = dom.input;
  if (!input) return;
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

/** @param {KeyboardEvent} event */
function onComposerKey(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendFromComposer();
  } else if (event.key === 'Escape') {
    if (state.openId !== null && state.replyTo.has(state.openId)) {
      event.stopPropagation();
      cancelReply();
    }
  } else if (event.key === 'ArrowUp' && !dom.input.value && state.openId !== null) {
    // Up on an empty composer replies to the last message.
    const timeline = state.timelines.get(state.openId);
    const last = timeline ? Math.max(0, ...timeline.bySeq.keys()) : 0;
    if (last) startReply(state.openId, last);
  }
}

/** The largest text the server takes, from its `hello` (unknown before the first connection). */
function messageBytesMax() {
  return state.client?.hello?.limits?.message_bytes_max ?? 0;
}

/** From this share of the limit on, the composer counts what is left. */
const NEAR_LIMIT = 0.9;

/**
 * How the composer's text compares with the server's size limit, counted in UTF-8 bytes as the
 * server counts it. Short texts are not encoded: a character is at most 4 bytes.
 * @param {string} text
 */
function textSize(text) {
  const max = messageBytesMax();
  if (!max || text.length * 4 < max * NEAR_LIMIT) return { bytes: 0, max, near: false, over: false };
  const bytes = new TextEncoder().encode(text).length;
  return { bytes, max, near: bytes >= max * NEAR_LIMIT, over: bytes > max };
}

/**
 * The note under the composer: what is left near the limit, an error over it. The error is
 * announced only when a send is refused, not at every keystroke.
 * @param {boolean} [refused] A send was just refused for the size.
 */
function renderLengthNote(refused = false) {
  const note = dom.lengthNote;
  if (!note) return;
  const size = textSize(dom.input.value);
  const n = (/** @type {number} */ x) => x.toLocaleString();
  note.hidden = !size.near;
  note.classList.toggle('over', size.over);
  dom.input.toggleAttribute('aria-invalid', size.over);
  if (!size.over || !refused) note.removeAttribute('role');
  if (refused && size.over) note.setAttribute('role', 'alert');
  note.textContent = !size.near ? ''
    : size.over ? `This message is too long to send: ${n(size.bytes - size.max)} bytes over the limit of ${n(size.max)} bytes. Shorten it to send it.`
      : `${n(size.max - size.bytes)} bytes left (the limit is ${n(size.max)} bytes).`;
}

function onComposerInput() {
  autosize();
  renderLengthNote();
  const id = state.openId;
  if (id === null) return;
  const text = dom.input.value;
  state.drafts.set(id, text);
  saveDraftsSoon();
  state.client?.setTyping(id, text.trim().length > 0);
}

function sendFromComposer() {
  const id = state.openId;
  const client = state.client;
  if (id === null || !client) return;
  // Blank lines around the text are dropped; the first line's own indentation is kept.
  const text = dom.input.value.replace(/\s+$/, '').replace(/^(?:[ \t]*\r?\n)+/, '');
  if (!text.trim()) return;
  // The SDK refuses an over-long text before it reaches the outbox (no `sendfailed`): keep it
  // here, where it can be shortened, and say why.
  if (textSize(text).over) {
    renderLengthNote(true);
    dom.input.focus();
    return;
  }
  const replyTo = state.replyTo.get(id);
  client.send(id, text, { replyTo }).catch(() => {
    // Reported through `sendfailed`.
  });
  dom.input.value = '';
  state.drafts.delete(id);
  saveDrafts();
  state.replyTo.delete(id);
  autosize();
  renderLengthNote();
  stick = true;
  schedule('pane', 'list');
}

/** @param {number | null} id */
function openConversation(id) {
  if (state.openId !== null && state.openId !== id) state.client?.setTyping(state.openId, false);
  if (state.openId !== id) {
    const c = id === null ? undefined : state.conversations.get(id);
    const count = c ? unread(c) : 0;
    unreadMark = c && count > 0 && count <= UNREAD_LOAD_MAX ? { id: c.id, seq: myRead(c) + 1, placed: false } : null;
  }
  state.openId = id;
  state.detailsOpen = false;
  if (id !== null) recentlyOpened = [id, ...recentlyOpened.filter((x) => x !== id)].slice(0, CACHED_TIMELINES);
  if (id !== null && !state.conversations.has(id) && state.client) {
    state.client.conversation(id).then(onConversation, () => {
      if (state.openId !== id) return;
      state.notice = 'That conversation is not available to you.';
      location.hash = '#/';
    });
  }
  scheduleAll();
}

function route() {
  const match = /^#\/c\/(\d+)$/.exec(location.hash);
  openConversation(match ? Number(match[1]) : null);
}

/** @param {unknown} e */
function errorText(e) {
  if (e instanceof NatterError) {
    // By code (protocol §8.2): the server's own message is for developers and may change.
    switch (e.code) {
      case 'not_found': return 'That is not there any more.';
      case 'not_connected':
      case 'disconnected':
      case 'timeout':
      case 'network': return 'The server cannot be reached right now. Try again in a moment.';
      case 'wrong_password': return 'Wrong username or password.';
      case 'username_taken': return 'That username is taken.';
      case 'invalid_username': return 'A username is 3 to 32 characters: letters a–z, digits, “_”, “.” and “-”, starting with a letter or digit.';
      case 'invalid_password': return 'A password is 8 to 256 bytes long.';
      case 'rate_limited': return e.retryAfterMs && e.retryAfterMs >= 1500
        ? `Too many attempts. Try again in ${Math.ceil(e.retryAfterMs / 1000)} seconds.`
        : 'Too many attempts. Wait a moment and try again.';
      case 'message_too_large': return 'This message is too long to send.';
      case 'frame_too_large': return 'That is too large to send.';
      case 'not_member': return 'You are not a member of this conversation.';
      case 'forbidden': return 'You are not allowed to do that here.';
      case 'conflict': return 'The owner cannot leave or step down without making someone else the owner first.';
      case 'unauthorized': return 'You are signed out. Sign in again.';
      case 'user_disabled': return 'This account is disabled.';
      case 'too_many_connections': return 'You are connected on too many devices or tabs at once. Close one and try again.';
      case 'server_full':
      case 'shutting_down':
      case 'internal': return 'Something went wrong on the server. Try again in a moment.';
      default: return sentence(e.message);
    }
  }
  return sentence(String(/** @type {any} */ (e)?.message ?? e));
}

/** "a title is 1 to 128 characters" → "A title is 1 to 128 characters." @param {string} text */
function sentence(text) {
  const trimmed = text.trim().replace(/`/g, '');
  if (!trimmed) return 'Something went wrong. Try again.';
  return trimmed[0].toUpperCase() + trimmed.slice(1) + (/[.!?…]$/.test(trimmed) ? '' : '.');
}

/**
 * A user by username; "no such user" said in words with the name asked for.
 * @param {NatterClient} client
 * @param {string} name
 */
async function findUser(client, name) {
  try {
    return await client.lookupUser(name);
  } catch (e) {
    if (e instanceof NatterError && e.code === 'not_found') throw new Error(`No one is called “${name}”.`);
    throw e;
  }
}

// ----- dialogs ------------------------------------------------------------------------------

async function newChatDialog() {
  const client = state.client;
  if (!client) return;
  let mode = 'direct';
  const error = h('p', { class: 'form-error', role: 'alert' });
  const username = /** @type {HTMLInputElement} */ (h('input', { id: 'new-username', class: 'input', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', placeholder: 'e.g. alice', required: true }));
  const groupTitle = /** @type {HTMLInputElement} */ (h('input', { id: 'new-title', class: 'input', autocomplete: 'off', placeholder: 'e.g. Weekend trip', maxlength: '128' }));
  const members = /** @type {HTMLInputElement} */ (h('input', { id: 'new-members', class: 'input', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', placeholder: 'alice, bob' }));
  const directFields = h('div', { class: 'fields' },
    h('label', { for: 'new-username', text: 'Username' }), username,
    h('p', { class: 'hint', text: 'Start a private conversation with one person.' }));
  const groupFields = h('div', { class: 'fields', hidden: true },
    h('label', { for: 'new-title', text: 'Group name' }), groupTitle,
    h('label', { for: 'new-members', text: 'Add people (usernames)' }), members,
    h('p', { class: 'hint', text: 'Separate usernames with commas. You can add more people later.' }));
  const submit = h('button', { class: 'button primary', type: 'submit', text: 'Start chatting' });
  const tabs = ['direct', 'group'].map((m) => h('button', {
    class: `segment${m === mode ? ' active' : ''}`,
    type: 'button',
    role: 'tab',
    'aria-selected': String(m === mode),
    text: m === 'direct' ? 'Direct message' : 'New group',
    onclick: () => {
      mode = m;
      for (const t of tabs) {
        const active = t.textContent === (m === 'direct' ? 'Direct message' : 'New group');
        t.classList.toggle('active', active);
        t.setAttribute('aria-selected', String(active));
      }
      directFields.hidden = m !== 'direct';
      groupFields.hidden = m !== 'group';
      username.required = m === 'direct';
      groupTitle.required = m === 'group';
      submit.textContent = m === 'direct' ? 'Start chatting' : 'Create group';
      error.textContent = '';
      (m === 'direct' ? username : groupTitle).focus();
    },
  }));
  const created = await dialog((close) => [
    h('div', { class: 'dialog-head' },
      h('h2', { text: 'New conversation' }),
      h('button', { class: 'icon-button', type: 'button', 'aria-label': 'Close', onclick: () => close(undefined), html: icons.close })),
    h('div', { class: 'segmented', role: 'tablist', 'aria-label': 'Kind of conversation' }, tabs),
    h('form', {
      class: 'form',
      onsubmit: async (/** @type {Event} */ e) => {
        e.preventDefault();
        error.textContent = '';
        submit.setAttribute('disabled', '');
        try {
          if (mode === 'direct') {
            const name = username.value.trim().replace(/^@/, '');
            if (name.toLowerCase() === state.session?.user.username.toLowerCase()) throw new Error('That is you! Pick someone else.');
            const user = await findUser(client, name);
            close(await client.createDirect(user.id));
          } else {
            const names = members.value.split(/[\s,]+/).map((s) => s.replace(/^@/, '')).filter(Boolean);
            const users = await Promise.all(names.map((n) => findUser(client, n)));
            close(await client.createGroup(groupTitle.value.trim(), users.map((u) => u.id)));
          }
        } catch (err) {
          error.textContent = errorText(err);
        } finally {
          submit.removeAttribute('disabled');
        }
      },
    }, directFields, groupFields, error, h('div', { class: 'dialog-actions' },
      h('button', { class: 'button ghost', type: 'button', onclick: () => close(undefined), text: 'Cancel' }), submit)),
  ], { label: 'New conversation', className: 'new-chat' });
  if (created) {
    onConversation(created);
    location.hash = `#/c/${created.id}`;
  }
}

/** Your display name, as others see it: changed over REST (`PATCH /v1/me`). */
async function nameDialog() {
  const session = state.session;
  if (!session) return;
  const error = h('p', { class: 'form-error', role: 'alert' });
  const name = /** @type {HTMLInputElement} */ (h('input', { id: 'my-name', class: 'input', autocomplete: 'name', maxlength: '64', value: session.user.display_name }));
  const submit = h('button', { class: 'button primary', type: 'submit', text: 'Save' });
  const user = await dialog((close) => [
    h('div', { class: 'dialog-head' },
      h('h2', { text: 'Your name' }),
      h('button', { class: 'icon-button', type: 'button', 'aria-label': 'Close', onclick: () => close(undefined), html: icons.close })),
    h('form', {
      class: 'form',
      oninput: () => {
        error.textContent = '';
      },
      onsubmit: async (/** @type {Event} */ e) => {
        e.preventDefault();
        submit.setAttribute('disabled', '');
        try {
          const api = new NatterApi(location.origin, { token: session.token });
          close(await api.setDisplayName(name.value.trim()));
        } catch (err) {
          error.textContent = errorText(err);
        } finally {
          submit.removeAttribute('disabled');
        }
      },
    },
    h('div', { class: 'fields' },
      h('label', { for: 'my-name', text: 'Name' }), name,
      h('p', { class: 'hint', text: `What others see beside @${session.user.username}. Leave it empty to show your username. People who have the app open see it once they reload.` })),
    error,
    h('div', { class: 'dialog-actions' },
      h('button', { class: 'button ghost', type: 'button', onclick: () => close(undefined), text: 'Cancel' }), submit)),
  ], { label: 'Your name' });
  if (!user || state.session !== session) return;
  session.user = user;
  saveSession(session);
  const shown = user.display_name || user.username;
  dom.menu?.querySelector('.menu-name')?.replaceChildren(shown);
  dom.menuButton?.querySelector('.me-name')?.replaceChildren(shown);
  dom.menuButton?.setAttribute('aria-label', `Account menu for ${shown}`);
  schedule('pane');
}

async function devicesDialog() {
  const client = state.client;
  if (!client) return;
  const list = h('ul', { class: 'device-list', 'aria-busy': 'true' }, h('li', { class: 'device loading', text: 'Loading devices…' }));
  const error = h('p', { class: 'form-error', role: 'alert' });
  const load = async () => {
    try {
      const devices = await client.devices();
      devices.sort((a, b) => Number(b.current) - Number(a.current) || b.last_seen_at_ms - a.last_seen_at_ms);
      list.removeAttribute('aria-busy');
      list.replaceChildren(...devices.map((d) => h('li', { class: 'device' },
        h('span', { class: 'device-icon', html: icons.devices }),
        h('span', { class: 'device-body' },
          h('span', { class: 'device-name' }, d.name || 'Unnamed device', d.current ? h('span', { class: 'pill', text: 'This device' }) : null),
          h('span', { class: 'device-meta', text: `Signed in ${fmt.since(d.created_at_ms)} · last active ${fmt.since(d.last_seen_at_ms)}` })),
        h('button', {
          class: `button small ${d.current ? 'ghost' : 'danger'}`,
          type: 'button',
          text: d.current ? 'Sign out' : 'Revoke',
          'aria-label': d.current ? 'Sign out of this device' : `Revoke ${d.name}`,
          onclick: async () => {
            if (d.current) {
              /** @type {HTMLDialogElement | null} */ (list.closest('dialog'))?.close();
              await signOut();
              return;
            }
            try {
              await client.revokeDevice(d.id);
              await load();
            } catch (e) {
              error.textContent = errorText(e);
            }
          },
        }))));
    } catch (e) {
      error.textContent = errorText(e);
    }
  };
  void load();
  await dialog((close) => [
    h('div', { class: 'dialog-head' },
      h('h2', { text: 'Your devices' }),
      h('button', { class: 'icon-button', type: 'button', 'aria-label': 'Close', onclick: () => close(), html: icons.close })),
    h('p', { class: 'dialog-text', text: 'Everywhere you are signed in. Revoke a device you do not recognise: it is signed out at once.' }),
    list, error,
  ], { label: 'Your devices', className: 'devices' });
}

function toggleMenu() {
  const menu = dom.menu;
  const open = menu.hidden;
  menu.hidden = !open;
  dom.menuButton.setAttribute('aria-expanded', String(open));
  if (open) /** @type {HTMLElement | null} */ (menu.querySelector('button'))?.focus();
}

function closeMenu() {
  if (!dom.menu || dom.menu.hidden) return false;
  dom.menu.hidden = true;
  dom.menuButton.setAttribute('aria-expanded', 'false');
  return true;
}

function notificationsAvailable() {
  return 'Notification' in window;
}

async function enableNotifications() {
  if (!notificationsAvailable()) return;
  try {
    await Notification.requestPermission();
  } catch {
    // Old browsers take a callback; nothing to do here.
  }
  renderNotifyPrompt();
}

function renderNotifyPrompt() {
  const prompt = dom.notify;
  if (!prompt) return;
  const show = notificationsAvailable() && Notification.permission === 'default' && localStorage.getItem('natter.notify.dismissed') !== '1';
  prompt.hidden = !show;
  if (!show) return;
  prompt.replaceChildren(
    h('span', { class: 'notify-icon', html: icons.bell }),
    h('span', { class: 'notify-text', text: 'Get notified of new messages while Natter is in the background.' }),
    h('span', { class: 'notify-actions' },
      h('button', { class: 'button primary small', type: 'button', text: 'Turn on', onclick: () => enableNotifications() }),
      h('button', { class: 'button ghost small', type: 'button', text: 'Not now', onclick: () => {
        localStorage.setItem('natter.notify.dismissed', '1');
        renderNotifyPrompt();
      } })));
}

/** @param {Message} m */
function notify(m) {
  if (!notificationsAvailable() || Notification.permission !== 'granted') return;
  if (!document.hidden || m.sender_id === me() || m.content.type !== 'text') return;
  if (Date.now() - m.sent_at_ms > 5 * 60_000) return;
  const c = state.conversations.get(m.conversation_id);
  if (!c) return;
  try {
    const n = new Notification(title(c), {
      body: c.kind === 'group' ? `${userName(m.sender_id)}: ${m.content.text}` : m.content.text,
      tag: `natter-${c.id}`,
      icon: '/favicon.svg',
    });
    n.onclick = () => {
      window.focus();
      location.hash = `#/c/${c.id}`;
      n.close();
    };
  } catch {
    // Some platforms allow notifications from service workers only.
  }
}

// ----- client events ------------------------------------------------------------------------

/** @param {Conversation} c */
function onConversation(c) {
  const previous = state.conversations.get(c.id);
  /** @type {Conversation} */
  const merged = { ...previous, ...c, members: c.members.map((m) => ({ ...m })) };
  if (previous) {
    // Keep what the newer snapshot lacks, and never go back in time.
    if (!c.last_message && previous.last_message) merged.last_message = previous.last_message;
    if (previous.last_seq > c.last_seq) {
      merged.last_seq = previous.last_seq;
      merged.last_message = previous.last_message;
      merged.last_activity_at_ms = Math.max(previous.last_activity_at_ms, c.last_activity_at_ms);
    }
    for (const m of merged.members) {
      const old = previous.members.find((x) => x.user_id === m.user_id);
      if (old) {
        m.read_seq = Math.max(m.read_seq, old.read_seq);
        m.delivered_seq = Math.max(m.delivered_seq, old.delivered_seq);
      }
    }
  }
  state.conversations.set(c.id, merged);
  unhideIfBack(merged);
  rememberUsers(merged);
  const other = peer(merged);
  if (other) askPresence([other.user_id]);
  schedule('list', 'pane', 'title');
}

/** The most ids one `presence` command may carry (protocol §`presence`). */
const PRESENCE_IDS_MAX = 256;
/** Users asked about on this connection: the server leaves out those we share nothing with. */
const presenceAsked = new Set();

/**
 * Ask the server whether these users are online, unless already known or asked on this
 * connection; the answers and later changes come as `presence` events.
 * @param {number[]} userIds
 */
function askPresence(userIds) {
  const client = state.client;
  if (!client?.connected) return;
  const ids = [...new Set(userIds)].filter((u) => u !== me() && !state.presence.has(u) && !presenceAsked.has(u));
  for (const u of ids) presenceAsked.add(u);
  for (let i = 0; i < ids.length; i += PRESENCE_IDS_MAX) {
    client.presence(ids.slice(i, i + PRESENCE_IDS_MAX)).catch(() => {
      for (const u of ids) presenceAsked.delete(u);
    });
  }
}

/** @param {Message} m */
function onMessage(m, fromAck = false) {
  const c = state.conversations.get(m.conversation_id);
  if (!c) {
    state.client?.conversation(m.conversation_id).then(onConversation, () => {});
  } else {
    if (m.seq >= c.last_seq) {
      c.last_seq = m.seq;
      c.last_message = m;
      c.last_activity_at_ms = Math.max(c.last_activity_at_ms, m.sent_at_ms);
    }
    if (m.sender_id === me()) setMyRead(c, m.seq);
    const sender = c.members.find((x) => x.user_id === m.sender_id);
    if (sender) {
      sender.read_seq = Math.max(sender.read_seq, m.seq);
      sender.delivered_seq = Math.max(sender.delivered_seq, m.seq);
    }
  }
  const timeline = state.timelines.get(m.conversation_id);
  if (timeline && m.seq >= timeline.low) timeline.bySeq.set(m.seq, m);
  if (!fromAck) notify(m);
  if (m.content.type === 'system' && state.client?.connected) {
    state.client.conversation(m.conversation_id).then(onConversation, () => {});
  }
  schedule('list', 'pane', 'title');
}

/** @param {NatterClient} client */
function wire(client) {
  client.on('status', ({ status }) => {
    state.status = status;
    if (status === 'online') {
      state.everOnline = true;
      state.disconnectedAt = 0;
    } else if (!state.disconnectedAt && status !== 'idle') {
      state.disconnectedAt = Date.now();
    }
    schedule('banner');
  });
  client.on('connected', () => {
    loadConversations(client);
    pumpLookups();
  });
  client.on('disconnected', () => {
    // Presence is only known while connected.
    state.presence.clear();
    presenceAsked.clear();
    state.typing.clear();
    schedule('list', 'pane');
  });
  client.on('reset', () => {
    // The saved sync state was not this server's (another deployment's, or from before a restore
    // from an older backup): neither are the conversations and messages cached with it. Drop
    // them; the client syncs again and the list is loaded anew. Drafts and the outbox stay.
    state.conversations.clear();
    state.timelines.clear();
    state.typing.clear();
    state.replyTo.clear();
    state.users.clear();
    state.users.set(me(), { username: state.session?.user.username ?? '', display_name: state.session?.user.display_name ?? '' });
    lookupQueue.clear();
    lookupAsked.clear();
    // Ids of another server's groups would hide this one's.
    state.hidden.clear();
    saveHidden();
    state.listLoaded = false;
    recentlyOpened = [];
    unreadMark = null;
    try {
      localStorage.removeItem(cacheKey());
    } catch {
      // Nothing cached, then.
    }
    loadConversations(client);
    // The open conversation is asked for again, or left if this server has no such thing.
    const open = state.openId;
    state.openId = null;
    openConversation(open);
  });
  client.on('conversation', onConversation);
  client.on('message', (m) => onMessage(m));
  client.on('ack', ({ entry, ack }) => {
    onMessage({
      conversation_id: ack.conversation_id,
      seq: ack.seq,
      pos: ack.pos,
      sender_id: me(),
      client_msg_id: ack.client_msg_id,
      content: entry.content,
      reply_to: entry.reply_to,
      sent_at_ms: ack.sent_at_ms,
    }, true);
  });
  client.on('receipt', (r) => {
    const c = state.conversations.get(r.conversation_id);
    const member = c?.members.find((m) => m.user_id === r.user_id);
    if (member) {
      member.delivered_seq = Math.max(member.delivered_seq, r.delivered_seq);
      member.read_seq = Math.max(member.read_seq, r.read_seq);
      schedule('list', 'pane', 'title');
    }
  });
  client.on('typingchange', ({ conversation_id: id, user_ids: users }) => {
    state.typing.set(id, users);
    schedule('list', 'pane');
  });
  client.on('presence', (p) => {
    state.presence.set(p.user_id, p);
    schedule('list', 'pane');
  });
  client.on('outbox', ({ entries }) => {
    state.pending = entries;
    schedule('list', 'pane', 'banner');
  });
  client.on('sendfailed', ({ entry, error }) => {
    state.failed.set(entry.client_msg_id, { entry, error });
    schedule('pane');
  });
  client.on('stopped', ({ error }) => {
    if (error.code === 'unauthorized' || error.code === 'user_disabled') {
      void signOut('You were signed out on this device.', false);
    }
  });
}

/** @param {NatterClient} client */
async function loadConversations(client) {
  try {
    const list = await client.conversations();
    if (state.client !== client) return;
    for (const c of list) onConversation(c);
    state.listLoaded = true;
    for (const [id, t] of state.timelines) if (t.stale) void refreshTimeline(id);
    askPresence(list.map(peer).filter((m) => m !== undefined).map((m) => /** @type {any} */ (m).user_id));
    schedule('list', 'pane', 'title');
  } catch {
    // Retried on the next connection.
  }
}

// ----- screens ------------------------------------------------------------------------------

/** @param {string} [notice] */
function authScreen(notice) {
  for (const key of Object.keys(dom)) delete dom[key];
  document.title = 'Natter — sign in';
  let mode = 'login';
  const error = h('p', { class: 'form-error', role: 'alert' });
  const username = /** @type {HTMLInputElement} */ (h('input', { id: 'auth-username', class: 'input', name: 'username', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false', required: true }));
  const displayName = /** @type {HTMLInputElement} */ (h('input', { id: 'auth-display', class: 'input', name: 'display_name', autocomplete: 'name' }));
  const password = /** @type {HTMLInputElement} */ (h('input', { id: 'auth-password', class: 'input', name: 'password', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'auth-password-hint' }));
  const passwordHint = h('p', { id: 'auth-password-hint', class: 'hint', hidden: true, text: 'At least 8 characters.' });
  const displayField = h('div', { class: 'field', hidden: true }, h('label', { for: 'auth-display', text: 'Your name' }), displayName, h('p', { class: 'hint', text: 'What others see. You can leave it empty.' }));
  const submit = h('button', { class: 'button primary wide', type: 'submit', text: 'Sign in' });
  const switchText = h('span', { text: 'New here?' });
  const switchButton = h('button', { class: 'link', type: 'button', text: 'Create an account' });
  const heading = h('h1', { text: 'Welcome back' });
  const setMode = (/** @type {string} */ m) => {
    mode = m;
    const register = m === 'register';
    heading.textContent = register ? 'Create your account' : 'Welcome back';
    displayField.hidden = !register;
    password.autocomplete = register ? 'new-password' : 'current-password';
    password.minLength = register ? 8 : 0;
    passwordHint.hidden = !register;
    submit.textContent = register ? 'Create account' : 'Sign in';
    switchText.textContent = register ? 'Already have an account?' : 'New here?';
    switchButton.textContent = register ? 'Sign in' : 'Create an account';
    error.textContent = '';
    username.focus();
  };
  switchButton.addEventListener('click', () => setMode(mode === 'login' ? 'register' : 'login'));
  const form = h('form', {
    class: 'form',
    // An answer to what was typed before goes once it is changed (the browser's own checks may
    // then stop the next submit before the server is asked).
    oninput: () => {
      error.textContent = '';
    },
    onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      error.textContent = '';
      submit.setAttribute('disabled', '');
      const api = new NatterApi(location.origin);
      try {
        const request = { username: username.value.trim(), password: password.value, device_name: fmt.deviceName() };
        const login = mode === 'register'
          ? await api.register({ ...request, display_name: displayName.value.trim() || undefined })
          : await api.login(request);
        const session = { token: login.token, user: login.user, device_id: login.device_id };
        saveSession(session);
        startSession(session);
      } catch (err) {
        error.textContent = errorText(err);
        submit.removeAttribute('disabled');
      }
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'auth-username', text: 'Username' }), username),
  displayField,
  h('div', { class: 'field' }, h('label', { for: 'auth-password', text: 'Password' }), password, passwordHint),
  error,
  submit);
  root.replaceChildren(h('main', { class: 'auth' },
    h('div', { class: 'auth-card' },
      h('div', { class: 'brand' }, h('span', { class: 'brand-mark', html: logo }), h('span', { class: 'brand-name', text: 'Natter' })),
      heading,
      h('p', { class: 'auth-lead', text: 'Private messaging on a server you run.' }),
      notice ? h('p', { class: 'notice', role: 'status', text: notice }) : null,
      form,
      h('p', { class: 'auth-switch' }, switchText, ' ', switchButton)),
    h('p', { class: 'auth-foot', text: 'Your messages stay on this server.' })));
  username.focus();
}

function buildShell() {
  const user = /** @type {Session} */ (state.session).user;
  dom.banner = h('div', { class: 'banner', role: 'status', hidden: true });
  dom.list = h('ul', { class: 'conv-list' });
  dom.notify = h('div', { class: 'notify', hidden: true });
  dom.menu = h('div', { class: 'menu', role: 'menu', hidden: true, 'aria-label': 'Account' },
    h('div', { class: 'menu-head' },
      h('span', { class: 'menu-name', text: user.display_name || user.username }),
      h('span', { class: 'menu-user', text: `@${user.username}` })),
    h('button', { class: 'menu-item', role: 'menuitem', type: 'button', html: `${icons.user}<span>Your name</span>`, onclick: () => { closeMenu(); void nameDialog(); } }),
    h('button', { class: 'menu-item', role: 'menuitem', type: 'button', html: `${icons.devices}<span>Devices</span>`, onclick: () => { closeMenu(); void devicesDialog(); } }),
    notificationsAvailable() ? h('button', { class: 'menu-item', role: 'menuitem', type: 'button', html: `${icons.bell}<span>Notifications</span>`, onclick: async () => {
      closeMenu();
      if (Notification.permission === 'default') await enableNotifications();
      else await alertDialog('Notifications', Notification.permission === 'granted' ? 'Notifications are on. You can turn them off in your browser’s site settings.' : 'Notifications are blocked. Allow them in your browser’s site settings.');
    } }) : null,
    h('button', { class: 'menu-item danger', role: 'menuitem', type: 'button', html: `${icons.logout}<span>Sign out</span>`, onclick: () => { closeMenu(); void signOut(); } }));
  dom.menuButton = h('button', { class: 'me', type: 'button', 'aria-haspopup': 'menu', 'aria-expanded': 'false', 'aria-label': `Account menu for ${user.display_name || user.username}`, onclick: () => toggleMenu() },
    avatar(user.display_name || user.username, user.id, 'small'),
    h('span', { class: 'me-name', text: user.display_name || user.username }));
  const search = /** @type {HTMLInputElement} */ (h('input', { id: 'search', class: 'search-input', type: 'search', placeholder: 'Search conversations', autocomplete: 'off', oninput: (/** @type {Event} */ e) => {
    state.filter = /** @type {HTMLInputElement} */ (e.target).value;
    schedule('list');
  } }));
  dom.pane = h('main', { class: 'pane', 'aria-label': 'Conversation' });
  dom.shell = h('div', { class: 'shell' },
    dom.banner,
    h('div', { class: 'columns' },
      h('aside', { class: 'sidebar', 'aria-label': 'Conversations' },
        h('header', { class: 'sidebar-header' },
          h('div', { class: 'menu-anchor' }, dom.menuButton, dom.menu),
          h('button', { class: 'icon-button accent', type: 'button', 'aria-label': 'New conversation', title: 'New conversation', html: icons.compose, onclick: () => newChatDialog() })),
        h('div', { class: 'search' }, h('label', { class: 'sr-only', for: 'search', text: 'Search conversations' }), h('span', { class: 'search-icon', html: icons.search }), search),
        dom.notify,
        h('nav', { class: 'conv-nav', 'aria-label': 'Conversation list' }, dom.list)),
      dom.pane));
  root.replaceChildren(dom.shell);
  renderNotifyPrompt();
}

/** @param {Session} session */
function startSession(session) {
  state.session = session;
  state.conversations.clear();
  state.timelines.clear();
  state.typing.clear();
  state.presence.clear();
  presenceAsked.clear();
  state.users.clear();
  lookupQueue.clear();
  lookupAsked.clear();
  lookupsInFlight = 0;
  state.failed.clear();
  state.drafts.clear();
  state.hidden.clear();
  state.replyTo.clear();
  state.listLoaded = false;
  state.everOnline = false;
  state.disconnectedAt = 0;
  state.status = 'idle';
  state.users.set(session.user.id, { username: session.user.username, display_name: session.user.display_name });
  recentlyOpened = [];
  loadCache();
  loadDrafts();
  loadHidden();
  const client = new NatterClient({
    server: location.origin,
    token: session.token,
    storageKey: `u${session.user.id}`,
    initialSync: 'recent',
    backoff: { baseMs: 250, capMs: 5_000 },
    requestTimeoutMs: 20_000,
  });
  state.client = client;
  state.pending = client.pending();
  wire(client);
  buildShell();
  route();
  scheduleAll();
  client.start();
}

/** @param {string} [notice] @param {boolean} [revoke] */
async function signOut(notice, revoke = true) {
  const client = state.client;
  if (state.session) {
    localStorage.removeItem(cacheKey());
    localStorage.removeItem(draftsKey());
  }
  cacheWrite.cancel();
  draftsWrite.cancel();
  state.drafts.clear();
  state.client = null;
  state.session = null;
  saveSession(null);
  if (client) {
    if (revoke) await client.logout();
    else {
      client.close();
      client.clearStorage();
    }
  }
  location.hash = '';
  authScreen(notice);
}

// ----- global wiring ------------------------------------------------------------------------

window.addEventListener('hashchange', () => {
  if (state.session) route();
});
window.addEventListener('online', () => {
  state.client?.reconnectNow();
  schedule('banner');
});
// The browser knows the network is gone long before a dead socket would be noticed (the
// server's idle timeout): give the connection up at once, so that the banner says so and the
// outbox waits for `online`.
window.addEventListener('offline', () => {
  state.client?.dropConnection();
  schedule('banner');
});
window.addEventListener('pagehide', () => {
  saveCache();
  saveDrafts();
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') {
    state.client?.reconnectNow();
    maybeMarkRead();
  }
});
document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.defaultPrevented) return;
  if (document.querySelector('dialog[open]')) return;
  if (closeMenu()) {
    dom.menuButton?.focus();
    return;
  }
  if (state.detailsOpen) {
    toggleDetails(false);
    return;
  }
  if (state.openId !== null && state.replyTo.has(state.openId)) {
    cancelReply();
    return;
  }
  if (state.openId !== null) {
    location.hash = '#/';
    setTimeout(() => /** @type {HTMLElement | null} */ (document.querySelector('.conv.active, .conv'))?.focus(), 30);
  }
});
document.addEventListener('click', (event) => {
  const target = /** @type {Node} */ (event.target);
  if (dom.menu && !dom.menu.hidden && !dom.menu.contains(target) && !dom.menuButton.contains(target)) closeMenu();
});
// While disconnected, the banner turns from "reconnecting" to "offline" after a while.
setInterval(() => {
  if (state.session && state.status !== 'online') schedule('banner');
}, 1000);
// Relative times ("last seen 5 min ago") age.
setInterval(() => {
  if (state.session) schedule('list', 'pane');
}, 60_000);

const saved = loadSession();
if (saved) startSession(saved);
else authScreen();
