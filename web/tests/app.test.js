// The web app in a real Chromium against a real `natter serve` started here: two people chat
// both ways, typing comes and goes, read ticks turn, a reload keeps session and history, the
// server is killed and restarted while a message is pending, and a third person sees nothing of
// a conversation they are not in. Screenshots of the main screens go to tests/screenshots/.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { NatterApi } from '../../clients/js/src/index.js';
import { startServer } from '../../clients/js/test/server.js';
import { launchBrowser, openApp, screenshot, until } from './browser.js';

/** @typedef {import('playwright-core').Page} Page */

/** @type {import('../../clients/js/test/server.js').TestServer} */
let server;
/** @type {import('playwright-core').Browser} */
let browser;
/** @type {{page: Page, errors: string[], context: import('playwright-core').BrowserContext}} */
let alice;
/** @type {{page: Page, errors: string[], context: import('playwright-core').BrowserContext}} */
let bob;
/** @type {{page: Page, errors: string[], context: import('playwright-core').BrowserContext}} */
let dave;
const suffix = String(Date.now() % 100000);
const names = { alice: `alice${suffix}`, bob: `bob${suffix}`, carol: `carol${suffix}`, dave: `dave${suffix}` };
const PASSWORD = 'a long enough password';
const MESSAGE_BYTES_MAX = 4000;
let conversationUrl = '';
/** Erin, over REST, and her direct chat with Alice. @type {NatterApi} */
let erin;
let erinChatId = 0;

/**
 * Register through the sign-in screen.
 * @param {Page} page
 * @param {string} username
 * @param {string} displayName
 */
async function registerInUi(page, username, displayName) {
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Your name').fill(displayName);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('.sidebar').waitFor();
}

/** Alice over REST, with the token of her browser (not a new device). */
async function aliceApi() {
  const token = await alice.page.evaluate(() => JSON.parse(localStorage.getItem('natter.session') ?? '{}').token);
  return new NatterApi(server.url, { token });
}

/** @param {Page} page @param {string} text */
const bubbles = (page, text) => page.locator('.messages .msg', { hasText: text });

/** @param {Page} page @param {string} text */
async function send(page, text) {
  const input = page.getByRole('textbox', { name: 'Message' });
  await input.fill(text);
  await input.press('Enter');
}

/** The list item of a conversation, by its title. @param {Page} page @param {string} name */
const listItem = (page, name) => page.locator('.conv').filter({ has: page.locator('.conv-title', { hasText: name }) });

/** @param {Page} page @param {string} name */
async function openConversation(page, name) {
  await listItem(page, name).click();
  await page.locator('.pane-title h2', { hasText: name }).waitFor();
}

before(async () => {
  // A size limit of its own, so that the app is seen to take it from `hello`.
  server = await startServer({ args: ['--typing-ttl-ms', '3000', '--message-bytes-max', String(MESSAGE_BYTES_MAX)] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

let broken = false;

/**
 * A step of the story: the steps build on each other, so after a failure the rest fail at once
 * (never skip: a skipped step would pass a run that tested nothing).
 * @param {string} name
 * @param {() => Promise<void> | void} fn
 */
function step(name, fn) {
  it(name, async () => {
    if (broken) throw new Error('not run: an earlier step failed');
    try {
      await fn();
    } catch (e) {
      broken = true;
      for (const [who, app] of [['alice', alice], ['bob', bob], ['dave', dave]]) {
        if (app && !app.page.isClosed()) await screenshot(app.page, `failed-${who}`).catch(() => {});
        if (app?.errors.length) console.error(`${who}'s page errors:`, app.errors);
      }
      throw e;
    }
  });
}

describe('the web app', () => {
  step('serves itself with the SDK and nothing from elsewhere', async () => {
    const index = await fetch(`${server.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /text\/html/);
    assert.ok(index.headers.get('cache-control'));
    const html = await index.text();
    assert.doesNotMatch(html, /https?:\/\//);
    const sdk = await fetch(`${server.url}/sdk/index.js`);
    assert.match(sdk.headers.get('content-type') ?? '', /javascript/);
    const css = await fetch(`${server.url}/style.css`);
    assert.match(css.headers.get('content-type') ?? '', /text\/css/);
    const etag = css.headers.get('etag');
    assert.ok(etag);
    const again = await fetch(`${server.url}/style.css`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
  });

  step('lets two people register and chat both ways', async () => {
    alice = await openApp(browser, server.url);
    const requests = [];
    alice.page.on('request', (r) => requests.push(r.url()));
    await alice.page.getByRole('heading', { name: 'Welcome back' }).waitFor();
    await screenshot(alice.page, '01-sign-in');
    await registerInUi(alice.page, names.alice, 'Alice Martin');
    await screenshot(alice.page, '02-empty-list');

    bob = await openApp(browser, server.url);
    await registerInUi(bob.page, names.bob, 'Bob Chen');

    // Alice starts a direct chat by username.
    await alice.page.locator('.sidebar-header').getByRole('button', { name: 'New conversation' }).click();
    const dialog = alice.page.getByRole('dialog');
    await dialog.getByLabel('Username', { exact: true }).fill(names.bob);
    await screenshot(alice.page, '03-new-conversation');
    await dialog.getByRole('button', { name: 'Start chatting' }).click();
    await alice.page.locator('.pane-title h2', { hasText: 'Bob Chen' }).waitFor();
    conversationUrl = alice.page.url();
    assert.match(conversationUrl, /#\/c\/\d+$/);

    await send(alice.page, 'Hi Bob! Are we still on for Saturday?');
    await bubbles(alice.page, 'Are we still on').waitFor();

    // Bob sees it in his list, unread, with the count in the title.
    const item = listItem(bob.page, 'Alice Martin');
    await item.waitFor();
    await until(async () => (await item.locator('.badge').textContent()) === '1', 'the unread badge');
    await until(async () => (await bob.page.title()) === '(1) Natter', 'the unread count in the title');
    await until(async () => /Are we still on/.test(await item.textContent() ?? ''), 'the preview');
    await screenshot(bob.page, '04-unread-in-list');
    await openConversation(bob.page, 'Alice Martin');
    await bubbles(bob.page, 'Are we still on').waitFor();
    await until(async () => (await bob.page.title()) === 'Natter', 'the title to clear once read');
    await send(bob.page, 'Yes! 10am at the station.');
    await send(bob.page, 'I will bring coffee ☕');
    await bubbles(alice.page, '10am at the station').waitFor();
    await bubbles(alice.page, 'bring coffee').waitFor();
    assert.equal(await alice.page.locator('.messages .msg.theirs').count(), 2);
    assert.equal(await alice.page.locator('.messages .msg.own').count(), 1);

    // Reply to a message: the quote shows.
    const target = bubbles(alice.page, '10am at the station');
    await target.hover();
    await target.getByRole('button', { name: /Reply to/ }).click();
    await alice.page.locator('.reply-bar', { hasText: '10am' }).waitFor();
    await send(alice.page, 'Perfect, see you there');
    await bubbles(bob.page, 'Perfect, see you there').locator('.quote', { hasText: '10am at the station' }).waitFor();
    await screenshot(alice.page, '05-conversation');

    // Nothing was fetched from anywhere but this server.
    assert.deepEqual(requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('data:')), []);
  });

  step('shows the typing indicator while the other person types, and hides it after', async () => {
    const input = bob.page.getByRole('textbox', { name: 'Message' });
    await input.click();
    await input.pressSequentially('Let me check the trai', { delay: 20 });
    const typing = alice.page.locator('.typing-row.visible', { hasText: 'Bob Chen is typing' });
    await typing.waitFor();
    await alice.page.locator('.pane-subtitle', { hasText: 'typing…' }).waitFor();
    await screenshot(alice.page, '06-typing');
    await input.fill('');
    await input.press('Backspace');
    await typing.waitFor({ state: 'detached' }).catch(() => {});
    await until(async () => !(await alice.page.locator('.typing-row.visible').count()), 'the typing indicator to go');
  });

  step('keeps a message over the size limit in the composer and says by how much', async () => {
    const input = alice.page.getByRole('textbox', { name: 'Message' });
    const note = alice.page.locator('#composer-note');
    const count = await alice.page.locator('.messages .msg').count();
    // "é" is two bytes: 1,900 of them come near the limit, 2,100 go over it.
    await input.fill('é'.repeat(1900));
    await until(async () => /200 bytes left/.test(await note.textContent() ?? ''), 'the counter near the limit');
    assert.equal(await note.isVisible(), true);
    const text = 'é'.repeat(2100);
    await input.fill(text);
    await input.press('Enter');
    await alice.page.locator('#composer-note[role="alert"]', { hasText: /too long to send: 200 bytes over the limit of 4,?000 bytes/ }).waitFor();
    assert.equal(await input.inputValue(), text, 'the text stays in the composer');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await alice.page.locator('.messages .msg').count(), count, 'nothing was sent');
    await screenshot(alice.page, '06b-too-long');
    // Shortened, it goes, and the note goes with it.
    await input.fill('é'.repeat(20));
    await input.press('Enter');
    await bubbles(alice.page, 'é'.repeat(20)).waitFor();
    assert.equal(await note.isVisible(), false);
    assert.equal(await input.inputValue(), '');
  });

  step('words form errors for people, not as the server’s messages', async () => {
    const stranger = await openApp(browser, server.url);
    await stranger.page.getByRole('button', { name: 'Create an account' }).click();
    await stranger.page.getByLabel('Username', { exact: true }).fill('a b!');
    await stranger.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await stranger.page.getByRole('button', { name: 'Create account' }).click();
    await stranger.page.locator('.form-error', { hasText: /^A username is 3 to 32 characters: letters a–z, digits/ }).waitFor();
    // Typing again takes the answer to the old text away.
    await stranger.page.getByLabel('Username', { exact: true }).fill('better_name');
    await until(async () => (await stranger.page.locator('.form-error').textContent()) === '', 'the old error to go');
    await stranger.context.close();

    await alice.page.locator('.sidebar-header').getByRole('button', { name: 'New conversation' }).click();
    const dialog = alice.page.getByRole('dialog');
    await dialog.getByLabel('Username', { exact: true }).fill('nosuchuser');
    await dialog.getByRole('button', { name: 'Start chatting' }).click();
    await dialog.locator('.form-error', { hasText: /^No one is called “nosuchuser”\.$/ }).waitFor();
    await dialog.getByRole('tab', { name: 'New group' }).click();
    await dialog.getByLabel('Group name').fill('Nobody here');
    await dialog.getByLabel('Add people (usernames)').fill(`${names.bob}, nosuchuser`);
    await dialog.getByRole('button', { name: 'Create group' }).click();
    await dialog.locator('.form-error', { hasText: /^No one is called “nosuchuser”\.$/ }).waitFor();
    await alice.page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
  });

  step('turns ticks from sent to delivered to read', async () => {
    // Bob looks at his list, not at the conversation.
    await bob.page.evaluate(() => { location.hash = '#/'; });
    await bob.page.locator('.pane-empty').waitFor();
    await send(alice.page, 'Did the tickets arrive?');
    const mine = bubbles(alice.page, 'Did the tickets arrive?');
    await until(async () => (await mine.getAttribute('data-state')) === 'delivered', 'the delivered ticks');
    await screenshot(alice.page, '07-delivered');
    await openConversation(bob.page, 'Alice Martin');
    await until(async () => (await mine.getAttribute('data-state')) === 'read', 'the read ticks');
    assert.equal(await mine.locator('.tick.read').count(), 1);
  });

  step('keeps session and history across a reload', async () => {
    await alice.page.reload();
    await alice.page.locator('.pane-title h2', { hasText: 'Bob Chen' }).waitFor();
    await bubbles(alice.page, 'Are we still on').waitFor();
    await bubbles(alice.page, 'bring coffee').waitFor();
    await bubbles(alice.page, 'Did the tickets arrive?').waitFor();
    assert.equal(await bubbles(alice.page, 'Perfect, see you there').locator('.quote').count(), 1);
    await until(async () => (await bubbles(alice.page, 'Did the tickets arrive?').getAttribute('data-state')) === 'read', 'ticks after reload');
    // Still signed in: no sign-in form.
    assert.equal(await alice.page.getByRole('heading', { name: 'Welcome back' }).count(), 0);
  });

  step('survives a server crash with a message pending: it shows reconnecting and delivers it once', async () => {
    await server.kill();
    await alice.page.locator('.banner[data-kind="reconnecting"], .banner[data-kind="offline"]').waitFor();
    assert.match(await alice.page.locator('.banner').textContent() ?? '', /Reconnecting|Offline/);
    const text = 'Sent while the server was down';
    await send(alice.page, text);
    const pending = bubbles(alice.page, text);
    await until(async () => (await pending.getAttribute('data-state')) === 'pending', 'the pending state');
    await alice.page.locator('.banner', { hasText: '1 message waiting' }).waitFor();
    await screenshot(alice.page, '08-reconnecting-pending');

    await server.restart();
    await until(async () => (await alice.page.locator('.banner').isHidden()), 'the banner to go', 20_000);
    await bubbles(bob.page, text).waitFor({ timeout: 20_000 });
    await until(async () => ['sent', 'delivered', 'read'].includes(await bubbles(alice.page, text).getAttribute('data-state') ?? ''), 'the message to be acknowledged');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await bubbles(bob.page, text).count(), 1, 'once at Bob');
    assert.equal(await bubbles(alice.page, text).count(), 1, 'once at Alice');
    // And once on the server.
    const api = new NatterApi(server.url);
    await api.login({ username: names.bob, password: PASSWORD });
    const id = Number(/#\/c\/(\d+)/.exec(conversationUrl)?.[1]);
    const page = await api.history(id, { after: 0, limit: 100 });
    assert.equal(page.messages.filter((m) => m.content.type === 'text' && m.content.text === text).length, 1);
    await send(bob.page, 'Got it, all good');
    await bubbles(alice.page, 'Got it, all good').waitFor();
  });

  step('says it is offline as soon as the browser is, and sends what waited once it is back', async () => {
    await openConversation(bob.page, 'Alice Martin');
    await bob.context.setOffline(true);
    // The browser knows at once; a dead socket would go unnoticed for the server's idle timeout.
    await bob.page.locator('.banner[data-kind="offline"]').waitFor({ timeout: 3000 });
    const text = 'Typed in a tunnel';
    await send(bob.page, text);
    await bob.page.locator('.banner', { hasText: '1 message waiting' }).waitFor();
    await send(alice.page, 'Out of the tunnel yet?');
    await bob.context.setOffline(false);
    await bubbles(alice.page, text).waitFor({ timeout: 20_000 });
    await bubbles(bob.page, 'Out of the tunnel yet?').waitFor({ timeout: 20_000 });
    await until(async () => await bob.page.locator('.banner').isHidden(), 'the banner to go');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await bubbles(alice.page, text).count(), 1, 'once at Alice');
    assert.equal(await bubbles(bob.page, 'Out of the tunnel yet?').count(), 1, 'once at Bob');
  });

  step('shows a conversation to its members only', async () => {
    const carol = await openApp(browser, server.url);
    await registerInUi(carol.page, names.carol, 'Carol Diaz');
    await carol.page.locator('.list-empty', { hasText: 'No conversations yet' }).waitFor();
    await carol.page.goto(conversationUrl);
    await carol.page.locator('.sidebar').waitFor();
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(await carol.page.locator('.messages .msg').count(), 0);
    const body = await carol.page.locator('body').textContent();
    assert.doesNotMatch(body ?? '', /Are we still on|Sent while the server was down|Bob Chen/);
    await screenshot(carol.page, '09-outsider');
    const api = new NatterApi(server.url);
    await api.login({ username: names.carol, password: PASSWORD });
    const id = Number(/#\/c\/(\d+)/.exec(conversationUrl)?.[1]);
    await assert.rejects(api.history(id, { after: 0 }), (/** @type {any} */ e) => e.code === 'not_member');
    await carol.context.close();
  });

  step('creates a group, adds and removes members, and leaves it', async () => {
    const daveApi = new NatterApi(server.url);
    await daveApi.register({ username: names.dave, password: PASSWORD, display_name: 'Dave Okafor' });
    // Dave is online, in a group with Alice but in no direct chat with her.
    dave = await openApp(browser, server.url);
    await dave.page.getByLabel('Username', { exact: true }).fill(names.dave);
    await dave.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await dave.page.getByRole('button', { name: 'Sign in' }).click();
    await dave.page.locator('.sidebar').waitFor();
    await alice.page.locator('.sidebar-header').getByRole('button', { name: 'New conversation' }).click();
    const dialog = alice.page.getByRole('dialog');
    await dialog.getByRole('tab', { name: 'New group' }).click();
    await dialog.getByLabel('Group name').fill('Weekend trip');
    await dialog.getByLabel('Add people (usernames)').fill(`${names.bob}, ${names.carol}`);
    await dialog.getByRole('button', { name: 'Create group' }).click();
    await alice.page.locator('.pane-title h2', { hasText: 'Weekend trip' }).waitFor();
    await send(alice.page, 'Packing list: boots, rain jacket, snacks');
    await listItem(bob.page, 'Weekend trip').waitFor();
    await openConversation(bob.page, 'Weekend trip');
    await bubbles(bob.page, 'Packing list').waitFor();
    await send(bob.page, 'I have a spare tent');
    await bubbles(alice.page, 'spare tent').locator('.sender', { hasText: 'Bob Chen' }).waitFor();

    await alice.page.getByRole('button', { name: 'Group details' }).click();
    const details = alice.page.getByRole('complementary', { name: 'Conversation details' });
    await details.getByLabel('Add people by username').fill(names.dave);
    await details.getByRole('button', { name: 'Add member' }).click();
    await details.locator('.member', { hasText: 'Dave Okafor' }).waitFor();
    await alice.page.locator('.system', { hasText: 'added Dave Okafor' }).waitFor();
    // Online members show as online, also those Alice has no direct chat with.
    await details.locator('.member', { hasText: 'Dave Okafor' }).locator('.presence-dot.online').waitFor();
    await details.locator('.member', { hasText: 'Bob Chen' }).locator('.presence-dot.online').waitFor();
    // "you" in the middle of a sentence, lower case.
    await openConversation(dave.page, 'Weekend trip');
    await dave.page.locator('.system', { hasText: /^Alice Martin added you$/ }).waitFor();
    assert.equal(await bubbles(alice.page, 'Packing list').getByRole('button', { name: 'Reply to yourself', exact: true }).count(), 1);
    await screenshot(alice.page, '10-group-details');
    // Removing asks first, like leaving; cancelled, nothing happens.
    await details.getByRole('button', { name: 'Remove Carol Diaz' }).click();
    const confirm = alice.page.getByRole('dialog', { name: 'Remove member' });
    await confirm.getByRole('heading', { name: 'Remove Carol Diaz from “Weekend trip”?' }).waitFor();
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    await confirm.waitFor({ state: 'detached' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await details.locator('.member', { hasText: 'Carol Diaz' }).count(), 1);
    assert.equal(await alice.page.locator('.system', { hasText: 'removed Carol Diaz' }).count(), 0);
    await details.getByRole('button', { name: 'Remove Carol Diaz' }).click();
    await confirm.getByRole('button', { name: 'Remove', exact: true }).click();
    await alice.page.locator('.system', { hasText: 'removed Carol Diaz' }).waitFor();
    await until(async () => (await details.locator('.member', { hasText: 'Carol Diaz' }).count()) === 0, 'Carol to leave the list');

    // Bob leaves.
    await bob.page.getByRole('button', { name: 'Group details' }).click();
    await bob.page.getByRole('button', { name: 'Leave group' }).click();
    await bob.page.getByRole('dialog').getByRole('button', { name: 'Leave group' }).click();
    await alice.page.locator('.system', { hasText: 'Bob Chen left' }).waitFor();
    await alice.page.keyboard.press('Escape');
    await dave.context.close();
  });

  step('renames a group, changes roles, and lets its owner leave once someone else owns it', async () => {
    const api = await aliceApi();
    const bobId = (await api.lookupUser(names.bob)).id;
    await api.createGroup('Garden club', [bobId]);
    await listItem(alice.page, 'Garden club').waitFor();
    await openConversation(alice.page, 'Garden club');
    await alice.page.getByRole('button', { name: 'Group details' }).click();
    const details = alice.page.getByRole('complementary', { name: 'Conversation details' });
    await details.getByText('2 members').waitFor();
    // The owner cannot leave yet: told how to, not refused by the server.
    await details.getByRole('button', { name: 'Leave group' }).click();
    const handOver = alice.page.getByRole('dialog', { name: 'Hand the group over first' });
    await handOver.waitFor();
    await handOver.getByRole('button', { name: 'OK' }).click();
    await handOver.waitFor({ state: 'detached' });
    // Someone already in the group is not added again, and the app says so.
    await details.getByLabel('Add people by username').fill(names.bob);
    await details.getByRole('button', { name: 'Add member' }).click();
    await details.getByText('Bob Chen is already in the group.').waitFor();
    // Renamed, for everyone.
    await details.getByLabel('Group name').fill('Garden club 2026');
    await details.getByRole('button', { name: 'Rename' }).click();
    await alice.page.locator('.pane-title h2', { hasText: 'Garden club 2026' }).waitFor();
    await listItem(bob.page, 'Garden club 2026').waitFor();
    // Bob made an admin, then the owner (asked first); Alice is then an admin, without the control.
    await details.getByLabel('Role of Bob Chen').selectOption('admin');
    await details.locator('.member', { hasText: 'Bob Chen' }).locator('.member-meta', { hasText: '· admin' }).waitFor();
    await details.getByLabel('Role of Bob Chen').selectOption('owner');
    const makeOwner = alice.page.getByRole('dialog', { name: 'Make owner' });
    await makeOwner.getByRole('button', { name: 'Make owner' }).click();
    await details.locator('.member', { hasText: 'Bob Chen' }).locator('.member-meta', { hasText: '· owner' }).waitFor();
    await details.locator('.member', { hasText: '(you)' }).locator('.member-meta', { hasText: '· admin' }).waitFor();
    assert.equal(await details.getByLabel('Role of Bob Chen').count(), 0);
    await screenshot(alice.page, '10b-group-roles');
    await details.getByRole('button', { name: 'Leave group' }).click();
    await alice.page.getByRole('dialog', { name: 'Leave group' }).getByRole('button', { name: 'Leave group' }).click();
    await openConversation(bob.page, 'Garden club 2026');
    await bob.page.locator('.system', { hasText: /^Alice Martin left$/ }).waitFor();
    await alice.page.keyboard.press('Escape');
  });

  step('shows the details of a direct chat and of a group left with no stray text', async () => {
    await openConversation(alice.page, 'Bob Chen');
    await alice.page.getByRole('button', { name: 'Conversation details' }).click();
    const details = alice.page.getByRole('complementary', { name: 'Conversation details' });
    await details.locator('.details-note', { hasText: 'Online now' }).waitFor();
    assert.doesNotMatch(await details.textContent() ?? '', /null|undefined/);
    await alice.page.keyboard.press('Escape');

    await openConversation(bob.page, 'Weekend trip');
    await bob.page.getByRole('button', { name: 'Group details' }).click();
    const left = bob.page.getByRole('complementary', { name: 'Conversation details' });
    await left.locator('.member').first().waitFor();
    assert.doesNotMatch(await left.textContent() ?? '', /null|undefined/);
    await bob.page.keyboard.press('Escape');
  });

  step('removes a group you left from the list, remembers it, and brings it back when you are added again', async () => {
    await openConversation(bob.page, 'Weekend trip');
    const id = Number(/#\/c\/(\d+)/.exec(bob.page.url())?.[1]);
    await bob.page.getByRole('button', { name: 'Group details' }).click();
    const details = bob.page.getByRole('complementary', { name: 'Conversation details' });
    await details.getByRole('button', { name: 'Remove from list' }).click();
    const confirm = bob.page.getByRole('dialog', { name: 'Remove from list' });
    await confirm.getByRole('heading', { name: 'Remove “Weekend trip” from your list?' }).waitFor();
    await screenshot(bob.page, '10d-remove-from-list');
    await confirm.getByRole('button', { name: 'Remove from list' }).click();
    await until(async () => (await listItem(bob.page, 'Weekend trip').count()) === 0, 'the group to leave the list');
    await bob.page.locator('.pane-empty').waitFor();
    // Remembered for Bob across a reload.
    await bob.page.reload();
    await listItem(bob.page, 'Alice Martin').waitFor();
    await until(async () => await bob.page.locator('.banner').isHidden(), 'the connection');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await listItem(bob.page, 'Weekend trip').count(), 0);
    const bobId = await bob.page.evaluate(() => JSON.parse(localStorage.getItem('natter.session') ?? '{}').user.id);
    assert.deepEqual(await bob.page.evaluate((key) => Object.keys(JSON.parse(localStorage.getItem(key) ?? '{}')), `natter.hidden.u${bobId}`), [String(id)]);
    // Added back, it returns, to write in; and, being in it, he is offered to leave, not to remove it.
    await (await aliceApi()).addMembers(id, [bobId]);
    await listItem(bob.page, 'Weekend trip').waitFor();
    await openConversation(bob.page, 'Weekend trip');
    await bob.page.locator('.system', { hasText: /^Alice Martin added you$/ }).waitFor();
    assert.equal(await bob.page.getByRole('textbox', { name: 'Message' }).isEnabled(), true);
    await bob.page.getByRole('button', { name: 'Group details' }).click();
    await details.getByRole('button', { name: 'Leave group' }).waitFor();
    assert.equal(await details.getByRole('button', { name: 'Remove from list' }).count(), 0);
    assert.equal(await bob.page.evaluate((key) => localStorage.getItem(key), `natter.hidden.u${bobId}`), null);
    await bob.page.keyboard.press('Escape');
  });

  step('names members who left, by their id, after a reload: their messages and the system lines', async () => {
    const gina = new NatterApi(server.url);
    const { user: ginaUser } = await gina.register({ username: `gina${suffix}`, password: PASSWORD, display_name: 'Gina Park' });
    const group = await (await aliceApi()).createGroup('Book swap', [ginaUser.id]);
    await gina.send(group.id, 'I can bring three novels');
    await gina.send(group.id, 'And a cookbook');
    await gina.leave(group.id);
    await until(async () => /Gina Park left/.test(await listItem(alice.page, 'Book swap').textContent() ?? ''), 'the leaving in the list');
    // Gina is in no other conversation with Alice: after a reload nothing names her but her id.
    /** @type {number[]} */
    const asked = [];
    alice.page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => {
      const frame = typeof payload === 'string' ? JSON.parse(payload) : {};
      if (frame.type === 'lookup_user' && frame.user_id !== undefined) asked.push(frame.user_id);
    }));
    await alice.page.reload();
    await until(async () => /Gina Park left/.test(await listItem(alice.page, 'Book swap').textContent() ?? ''), 'the preview, named again');
    await openConversation(alice.page, 'Book swap');
    await bubbles(alice.page, 'three novels').locator('.sender', { hasText: 'Gina Park' }).waitFor();
    await alice.page.locator('.system', { hasText: /^Gina Park left$/ }).waitFor();
    // Removed earlier, and named only by the system line.
    await openConversation(alice.page, 'Weekend trip');
    await alice.page.locator('.system', { hasText: /^You removed Carol Diaz$/ }).waitFor();
    assert.equal(await alice.page.locator('.messages', { hasText: 'Someone' }).count(), 0);
    // Each id once, however often it shows.
    assert.equal(asked.filter((id) => id === ginaUser.id).length, 1, `asked ${JSON.stringify(asked)}`);
    assert.equal(new Set(asked).size, asked.length, `asked ${JSON.stringify(asked)}`);
  });

  step('loads history as you scroll up, and sends multi-line messages with Shift+Enter', async () => {
    erin = new NatterApi(server.url);
    await erin.register({ username: `erin${suffix}`, password: PASSWORD, display_name: 'Erin Walsh' });
    const alicesId = (await erin.lookupUser(names.alice)).id;
    const chat = await erin.createDirect(alicesId);
    erinChatId = chat.id;
    for (let i = 1; i <= 120; i++) await erin.send(chat.id, `Note ${i} of 120`);
    await listItem(alice.page, 'Erin Walsh').waitFor();
    await until(async () => (await listItem(alice.page, 'Erin Walsh').locator('.badge').textContent()) === '99+', 'a capped unread badge');
    // Read elsewhere (unread, the chat would open at the first of them, not at the newest page).
    await (await aliceApi()).mark(chat.id, { read: 120 });
    await until(async () => (await listItem(alice.page, 'Erin Walsh').locator('.badge').count()) === 0, 'the badge to clear');
    await openConversation(alice.page, 'Erin Walsh');
    await bubbles(alice.page, 'Note 120 of 120').waitFor();
    const shown = await alice.page.locator('.messages .msg').count();
    assert.ok(shown < 120, `only the newest page at first (${shown})`);
    const scroller = alice.page.locator('.scroller');
    await until(async () => {
      await scroller.evaluate((el) => { el.scrollTop = 0; });
      return (await alice.page.locator('.timeline-start').count()) > 0;
    }, 'the beginning of the conversation');
    assert.equal(await alice.page.locator('.messages .msg').count(), 120);
    const seqs = await alice.page.locator('.messages .msg').evaluateAll((els) => els.map((e) => Number(/** @type {HTMLElement} */ (e).dataset.seq)));
    assert.deepEqual(seqs, Array.from({ length: 120 }, (_, i) => i + 1));
    await alice.page.locator('.day', { hasText: 'Today' }).first().waitFor();

    const input = alice.page.getByRole('textbox', { name: 'Message' });
    await input.click();
    // Blank lines before and after are not sent.
    await input.press('Shift+Enter');
    await input.press('Shift+Enter');
    await input.pressSequentially('Thanks for the notes!');
    await input.press('Shift+Enter');
    await input.pressSequentially('Reading them now.');
    await input.press('Shift+Enter');
    await input.press('Enter');
    const page = await until(async () => {
      const history = await erin.history(chat.id, { before: 1000, limit: 1 });
      return history.messages[0]?.content.type === 'text' && history.messages[0].content.text.startsWith('Thanks') ? history : undefined;
    }, 'the multi-line message');
    assert.deepEqual(page.messages[0].content, { type: 'text', text: 'Thanks for the notes!\nReading them now.' });
    assert.equal(await input.inputValue(), '');

    // Web addresses become links (text stays text: no markup is interpreted).
    await erin.send(chat.id, 'Plan: https://example.org/plan?day=2. <b>not bold</b>');
    const link = bubbles(alice.page, 'Plan:').locator('a');
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), 'https://example.org/plan?day=2');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer nofollow');
    assert.equal(await bubbles(alice.page, 'Plan:').locator('b').count(), 0);
  });

  step('offers to jump to the latest message while scrolled up, with the count of new ones', async () => {
    const scroller = alice.page.locator('.scroller');
    const jump = alice.page.locator('.jump');
    assert.equal(await jump.isVisible(), false, 'no button at the bottom');
    await scroller.evaluate((el) => { el.scrollTop = el.scrollHeight / 2; });
    await jump.waitFor();
    await erin.send(erinChatId, 'Are you still reading?');
    await alice.page.locator('.jump', { hasText: /^1 new message$/ }).waitFor();
    await erin.send(erinChatId, 'Hello?');
    await alice.page.locator('.jump', { hasText: /^2 new messages$/ }).waitFor();
    assert.equal(await listItem(alice.page, 'Erin Walsh').locator('.badge').textContent(), '2', 'not read while scrolled up');
    await screenshot(alice.page, '10a-jump-to-latest');
    await alice.page.getByRole('button', { name: /^Jump to the latest message, 2 new messages$/ }).click();
    await until(async () => scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 2), 'the bottom');
    await jump.waitFor({ state: 'hidden' });
    assert.ok(await bubbles(alice.page, 'Hello?').isVisible());
    await until(async () => (await listItem(alice.page, 'Erin Walsh').locator('.badge').count()) === 0, 'the messages to be read');
  });

  step('pushes the previous day’s label away instead of stacking the two at the top', async () => {
    // Two days without waiting for midnight: the older part of the cached timeline is dated a day
    // back, on a page of the same origin that does not run the app (which would save over it).
    // After the reload, the refresh replaces only the newest page.
    const chatUrl = alice.page.url();
    await alice.page.goto(`${server.url}/favicon.svg`);
    await alice.page.evaluate(() => {
      const key = /** @type {string} */ (Object.keys(localStorage).find((k) => k.startsWith('natter.cache.u')));
      const cache = JSON.parse(localStorage.getItem(key) ?? '{}');
      for (const messages of Object.values(cache.timelines)) {
        const top = Math.max(...messages.map((/** @type {any} */ m) => m.seq));
        for (const m of messages) if (m.seq <= top - 45) m.sent_at_ms -= 24 * 60 * 60 * 1000;
      }
      localStorage.setItem(key, JSON.stringify(cache));
    });
    await alice.page.goto(chatUrl);
    await alice.page.locator('.day', { hasText: 'Yesterday' }).waitFor();
    await alice.page.locator('.day', { hasText: 'Today' }).waitFor();
    await until(async () => await alice.page.locator('.banner').isHidden(), 'the connection');
    await new Promise((r) => setTimeout(r, 500));
    // Scroll until Today's label has passed the top (and sticks there).
    const labels = await alice.page.locator('.scroller').evaluate(async (scroller) => {
      const spans = () => [...scroller.querySelectorAll('.day span')];
      const today = /** @type {HTMLElement} */ (spans().find((e) => e.textContent === 'Today'));
      scroller.scrollTop += today.getBoundingClientRect().top - scroller.getBoundingClientRect().top + 150;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const box = (/** @type {string} */ text) => {
        const r = /** @type {HTMLElement} */ (spans().find((e) => e.textContent === text)).getBoundingClientRect();
        return { top: r.top - scroller.getBoundingClientRect().top, bottom: r.bottom - scroller.getBoundingClientRect().top };
      };
      return { today: box('Today'), yesterday: box('Yesterday') };
    });
    await screenshot(alice.page, '10b-day-labels');
    assert.ok(labels.today.top >= 0 && labels.today.top < 20, `Today's label sticks at the top (${JSON.stringify(labels)})`);
    assert.ok(labels.yesterday.bottom <= labels.today.top, `Yesterday's label is pushed away, not under Today's (${JSON.stringify(labels)})`);
  });

  step('opens a conversation with unread messages at a “New messages” divider, and reads them at the end', async () => {
    const frank = new NatterApi(server.url);
    await frank.register({ username: `frank${suffix}`, password: PASSWORD, display_name: 'Frank Ito' });
    const chat = await frank.createDirect((await frank.lookupUser(names.alice)).id);
    for (let i = 1; i <= 50; i++) await frank.send(chat.id, `Earlier ${i}`);
    await (await aliceApi()).mark(chat.id, { read: 50 });
    for (let i = 1; i <= 70; i++) await frank.send(chat.id, `Fresh ${i}`);
    const item = listItem(alice.page, 'Frank Ito');
    await until(async () => (await item.locator('.badge').textContent()) === '70', 'the unread badge');
    await openConversation(alice.page, 'Frank Ito');
    // More than a page back: loaded, with the divider right above the first unread message, in view.
    const divider = alice.page.locator('.unread-divider');
    await divider.waitFor();
    assert.equal(await divider.textContent(), 'New messages');
    assert.equal(await divider.evaluate((el) => /** @type {HTMLElement} */ (el.nextElementSibling).dataset.seq), '51');
    await until(async () => alice.page.locator('.scroller').evaluate((scroller) => {
      const d = /** @type {HTMLElement} */ (scroller.querySelector('.unread-divider')).getBoundingClientRect();
      const s = scroller.getBoundingClientRect();
      return d.top >= s.top && d.bottom <= s.top + s.height / 2;
    }), 'the divider in the upper half of the view');
    await screenshot(alice.page, '10c-new-messages');
    // Not read until shown: the newest are below, behind the jump button.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await item.locator('.badge').textContent(), '70');
    await alice.page.locator('.jump', { hasText: '70 new messages' }).click();
    await until(async () => (await item.locator('.badge').count()) === 0, 'read at the end');
    const api = await aliceApi();
    await until(async () => (await api.mark(chat.id, { delivered: 0 })).read_seq === 120, 'the read marker on the server');
    assert.equal(await divider.count(), 1, 'the divider stays while the chat is open');
  });

  step('keeps an unsent draft across a reload, and forgets it once sent', async () => {
    await openConversation(alice.page, 'Bob Chen');
    const input = alice.page.getByRole('textbox', { name: 'Message' });
    await input.fill('Half-written thought about the');
    await openConversation(alice.page, 'Frank Ito');
    // Named in the list while another conversation is open, and after a reload.
    await listItem(alice.page, 'Bob Chen').locator('.conv-preview.draft', { hasText: 'Draft: Half-written thought about the' }).waitFor();
    await alice.page.reload();
    await listItem(alice.page, 'Bob Chen').locator('.conv-preview.draft', { hasText: 'Draft: Half-written thought about the' }).waitFor();
    await openConversation(alice.page, 'Bob Chen');
    assert.equal(await input.inputValue(), 'Half-written thought about the');
    await input.press('End');
    await input.pressSequentially(' trains');
    await input.press('Enter');
    const sent = bubbles(alice.page, 'Half-written thought about the trains');
    await until(async () => ['sent', 'delivered', 'read'].includes(await sent.getAttribute('data-state') ?? ''), 'the message to be sent');
    await alice.page.reload();
    await alice.page.locator('.pane-title h2', { hasText: 'Bob Chen' }).waitFor();
    assert.equal(await input.inputValue(), '');
    assert.equal(await alice.page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('natter.drafts.')).length), 0);
  });

  step('drops what it cached when its saved cursor is not the server’s, and loads it anew', async () => {
    // As if the browser's state came from before the server was restored from an older backup:
    // a cursor far above the server's position, and a cached group the server does not have. Set
    // on a page of the same origin that does not run the app (which would save over it).
    const chatUrl = alice.page.url();
    await alice.page.goto(`${server.url}/favicon.svg`);
    await alice.page.evaluate(() => {
      const { user } = JSON.parse(localStorage.getItem('natter.session') ?? '{}');
      const stateKey = `natter:u${user.id}:state`;
      localStorage.setItem(stateKey, JSON.stringify({ ...JSON.parse(localStorage.getItem(stateKey) ?? '{}'), cursor: 1e9 }));
      const cacheKey = `natter.cache.u${user.id}`;
      const cache = JSON.parse(localStorage.getItem(cacheKey) ?? '{}');
      const now = Date.now();
      cache.conversations.push({ id: 999999, kind: 'group', title: 'Ghost group', created_at_ms: now, last_activity_at_ms: now + 60_000, last_seq: 1, last_pos: 1,
        members: [{ user_id: user.id, username: user.username, display_name: user.display_name, role: 'owner', delivered_seq: 1, read_seq: 1 }] });
      localStorage.setItem(cacheKey, JSON.stringify(cache));
    });
    await alice.page.goto(chatUrl);
    await until(async () => (await listItem(alice.page, 'Ghost group').count()) === 0, 'the cached group to go');
    await listItem(alice.page, 'Weekend trip').waitFor();
    await bubbles(alice.page, 'Half-written thought about the trains').waitFor();
    const cursor = await alice.page.evaluate(() => {
      const { user } = JSON.parse(localStorage.getItem('natter.session') ?? '{}');
      return JSON.parse(localStorage.getItem(`natter:u${user.id}:state`) ?? '{}').cursor;
    });
    assert.ok(cursor > 0 && cursor < 1e9, `the cursor is the server's again (${cursor})`);
    // And it goes on working live.
    await openConversation(bob.page, 'Alice Martin');
    await send(bob.page, 'Still there after the restore?');
    await bubbles(alice.page, 'Still there after the restore?').waitFor();
  });

  step('lists devices and revokes one, which signs that device out', async () => {
    const other = await openApp(browser, server.url);
    await other.page.getByLabel('Username', { exact: true }).fill(names.alice);
    await other.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await other.page.getByRole('button', { name: 'Sign in' }).click();
    await other.page.locator('.sidebar').waitFor();
    await listItem(other.page, 'Bob Chen').waitFor();
    // A draft on that device goes with its sign-out.
    await openConversation(other.page, 'Bob Chen');
    await other.page.getByRole('textbox', { name: 'Message' }).fill('Never sent');
    await until(async () => other.page.evaluate(() => Object.keys(localStorage).some((k) => k.startsWith('natter.drafts.'))), 'the saved draft');

    await alice.page.getByRole('button', { name: /Account menu/ }).click();
    await alice.page.getByRole('menuitem', { name: 'Devices' }).click();
    const dialog = alice.page.getByRole('dialog', { name: 'Your devices' });
    await until(async () => (await dialog.locator('.device').count()) === 2, 'two devices');
    await screenshot(alice.page, '11-devices');
    await dialog.getByRole('button', { name: /^Revoke/ }).click();
    await until(async () => (await dialog.locator('.device').count()) === 1, 'one device left');
    await alice.page.keyboard.press('Escape');
    await other.page.locator('.notice', { hasText: 'signed out' }).waitFor();
    assert.equal(await other.page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('natter.drafts.')).length), 0);
    await other.context.close();
  });

  step('notifies of new messages while hidden, with the unread count in the title', async () => {
    // A hidden tab cannot be made in headless Chromium: pretend, and record notifications.
    await alice.page.evaluate(() => {
      /** @type {any} */ (window).shown = [];
      class FakeNotification {
        static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        /** @param {string} title @param {any} options */
        constructor(title, options) { /** @type {any} */ (window).shown.push({ title, body: options.body }); }
        close() {}
      }
      Object.defineProperty(window, 'Notification', { value: FakeNotification, configurable: true });
      Object.defineProperty(document, 'hidden', { get: () => true, configurable: true });
      Object.defineProperty(document, 'visibilityState', { get: () => 'hidden', configurable: true });
    });
    await alice.page.evaluate(() => { location.hash = '#/'; });
    await openConversation(bob.page, 'Alice Martin');
    await send(bob.page, 'Are you there?');
    await until(async () => (await alice.page.evaluate(() => /** @type {any} */ (window).shown.length)) > 0, 'a notification');
    const shown = await alice.page.evaluate(() => /** @type {any} */ (window).shown);
    assert.deepEqual(shown[0], { title: 'Bob Chen', body: 'Are you there?' });
    await until(async () => /^\(\d+\) Natter$/.test(await alice.page.title()), 'the unread count in the title');
  });

  step('changes your name from the account menu, kept across a reload', async () => {
    const rename = async (/** @type {string} */ from, /** @type {string} */ to) => {
      await alice.page.getByRole('button', { name: `Account menu for ${from}` }).click();
      await alice.page.getByRole('menuitem', { name: 'Your name' }).click();
      const dialog = alice.page.getByRole('dialog', { name: 'Your name' });
      await dialog.getByLabel('Name').fill(to);
      await dialog.getByRole('button', { name: 'Save' }).click();
      await dialog.waitFor({ state: 'detached' });
      await alice.page.getByRole('button', { name: `Account menu for ${to}` }).waitFor();
    };
    await rename('Alice Martin', 'Alice M.');
    assert.equal((await (await aliceApi()).me()).display_name, 'Alice M.');
    await alice.page.reload();
    await alice.page.getByRole('button', { name: 'Account menu for Alice M.' }).waitFor();
    await rename('Alice M.', 'Alice Martin');
  });

  step('works at phone width', async () => {
    const phone = await openApp(browser, server.url, { viewport: { width: 390, height: 844 } });
    await phone.page.getByLabel('Username', { exact: true }).fill(names.bob);
    await phone.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await screenshot(phone.page, '12-phone-sign-in');
    await phone.page.getByRole('button', { name: 'Sign in' }).click();
    await listItem(phone.page, 'Alice Martin').waitFor();
    await screenshot(phone.page, '13-phone-list');
    await listItem(phone.page, 'Alice Martin').click();
    await bubbles(phone.page, 'Are you there?').waitFor();
    assert.equal(await phone.page.locator('.sidebar').isVisible(), false);
    await screenshot(phone.page, '14-phone-conversation');
    await phone.page.emulateMedia({ colorScheme: 'dark' });
    await screenshot(phone.page, '15-phone-dark');
    await phone.page.emulateMedia({ colorScheme: 'light' });
    // Esc goes back to the list.
    await phone.page.locator('.scroller').click();
    await phone.page.keyboard.press('Escape');
    await phone.page.locator('.sidebar').waitFor();
    await phone.context.close();
  });

  step('makes avatar initials of letters and digits only', async () => {
    const got = await alice.page.evaluate(async () => {
      const { initials } = await import('/format.js');
      return ['Weekend trip <b>🏕️</b>', '<Cat>', '<img src=x onerror=alert(1)>Dave', 'Alice Martin', 'bob', '!!!', '🎉', ''].map(initials);
    });
    assert.deepEqual(got, ['WT', 'CA', 'DA', 'AM', 'BO', '?', '🎉', '?']);
    const daveApi = new NatterApi(server.url);
    await daveApi.login({ username: names.dave, password: PASSWORD });
    await daveApi.createGroup('Book club <b>📚</b>', [(await daveApi.lookupUser(names.alice)).id]);
    const item = listItem(alice.page, 'Book club');
    await item.waitFor();
    assert.equal(await item.locator('.avatar').textContent(), 'BC');
  });

  step('raised no error in the pages', () => {
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
    assert.deepEqual(dave.errors, []);
  });
});
