// Dates, names and previews as people read them.

const locale = undefined; // The browser's.
const timeFormat = new Intl.DateTimeFormat(locale, { hour: 'numeric', minute: '2-digit' });
const weekdayFormat = new Intl.DateTimeFormat(locale, { weekday: 'long' });
const shortWeekdayFormat = new Intl.DateTimeFormat(locale, { weekday: 'short' });
const dateFormat = new Intl.DateTimeFormat(locale, { day: 'numeric', month: 'short' });
const longDateFormat = new Intl.DateTimeFormat(locale, { day: 'numeric', month: 'long', year: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(locale, { dateStyle: 'full', timeStyle: 'short' });

const DAY_MS = 24 * 60 * 60 * 1000;

/** Midnight of the day of `ms`, local time. @param {number} ms */
export function dayStart(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** "14:05". @param {number} ms */
export function time(ms) {
  return timeFormat.format(ms);
}

/** "Tuesday, 3 March 2026 at 14:05", for tooltips. @param {number} ms */
export function fullTime(ms) {
  return fullFormat.format(ms);
}

/** A day separator: "Today", "Yesterday", "Monday", "3 March 2025". @param {number} ms */
export function dayLabel(ms, now = Date.now()) {
  const days = Math.round((dayStart(now) - dayStart(ms)) / DAY_MS);
  if (days <= 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (days < 7) return weekdayFormat.format(ms);
  return longDateFormat.format(ms);
}

/** The time in the conversation list: "14:05", "Mon", "3 Mar". @param {number} ms */
export function listTime(ms, now = Date.now()) {
  const days = Math.round((dayStart(now) - dayStart(ms)) / DAY_MS);
  if (days <= 0) return time(ms);
  if (days === 1) return 'Yesterday';
  if (days < 7) return shortWeekdayFormat.format(ms);
  return dateFormat.format(ms);
}

/** "today at 14:05", "yesterday at 9:12", "on Monday", "on 3 Mar". @param {number} ms */
export function since(ms, now = Date.now()) {
  const days = Math.round((dayStart(now) - dayStart(ms)) / DAY_MS);
  if (days <= 0) return `today at ${time(ms)}`;
  if (days === 1) return `yesterday at ${time(ms)}`;
  if (days < 7) return `on ${weekdayFormat.format(ms)}`;
  return `on ${dateFormat.format(ms)}`;
}

/** "last seen 5 minutes ago". @param {number | undefined} ms */
export function lastSeen(ms, now = Date.now()) {
  if (!ms) return 'offline';
  const minutes = Math.floor((now - ms) / 60_000);
  if (minutes < 1) return 'last seen just now';
  if (minutes < 60) return `last seen ${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24 && dayStart(ms) === dayStart(now)) return `last seen today at ${time(ms)}`;
  if (hours < 48) return `last seen ${dayLabel(ms, now).toLowerCase()} at ${time(ms)}`;
  return `last seen ${dateFormat.format(ms)}`;
}

const LETTER = /[\p{L}\p{N}]/u;
const PICTURE = /\p{Extended_Pictographic}/u;
const TAG = /<[^<>]*>/g;

/**
 * Up to two initials of a name, from letters and digits only: "Alice Martin" → "AM", "Bob" → "BO",
 * "Weekend trip <b>🏕️</b>" → "WT" (what looks like markup counts only when nothing else is left:
 * "<Cat>" → "CA"). A name without letters or digits gets its first emoji, or "?".
 * @param {string} name
 */
export function initials(name) {
  const letters = (/** @type {string} */ text) => [...text].filter((ch) => LETTER.test(ch));
  const untagged = name.replace(TAG, ' ');
  const text = letters(untagged).length ? untagged : name;
  const words = text.split(/\s+/).map(letters).filter((w) => w.length);
  if (!words.length) return [...name].find((ch) => PICTURE.test(ch)) ?? '?';
  const picked = words.length === 1 ? words[0].slice(0, 2) : [words[0][0], words[words.length - 1][0]];
  return picked.join('').toUpperCase();
}

/** A stable colour index (0–7) for a user or conversation. @param {number | string} key */
export function colorIndex(key) {
  const text = String(key);
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (hash * 31 + text.charCodeAt(i)) >>> 0;
  return hash % 8;
}

/** "Alice", "Alice and Bob", "Alice, Bob and 2 others". @param {string[]} names */
export function nameList(names) {
  if (names.length <= 1) return names[0] ?? '';
  if (names.length === 2) return `${names[0]} and ${names[1]}`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

/** A device name from the browser's user agent: "Chrome on Linux". */
export function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox' : /Chrom(e|ium)\//.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS'
    : /Windows/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : 'the web';
  return `${browser} on ${os}`;
}
