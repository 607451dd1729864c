// The dashboard in a real browser (Debian's Chromium through playwright-core):
// it loads without console errors, follows commands submitted through the API
// live, cancels a RUNNING command, shows a command's history, and says so when
// the token is wrong. Screenshots go to tests/screenshots/ (git-ignored).
// tests/run.ts runs this file only when a Chromium is found.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { launchBrowser, type TestBrowser } from './support/browser.ts';
import { cleanup as cleanupProcs, ROOT, startAgent, tempDir } from './support/processes.ts';
import { call, claimOne, closeAll, finish, startTestServer, submit, type TestServer } from './support/server-harness.ts';

const SHOTS = path.join(ROOT, 'tests', 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

const test = suite('dashboard');
let b: TestBrowser;
let s: TestServer;

test.before(async () => {
  b = await launchBrowser();
});
test.before.each(() => {
  b.errors.length = 0;
});
test.after.each(async () => {
  // Leave the page first: its stream would retry against the closed server
  // and log connection errors into the next test.
  await b.page.goto('about:blank');
  await closeAll();
});
test.after(async () => {
  await b?.close();
  await cleanupProcs();
});

const shot = (name: string): Promise<Buffer> => b.page.screenshot({ path: path.join(SHOTS, `${name}.png`) });

async function openLive(url: string): Promise<void> {
  await b.page.goto(url);
  await b.page.waitForSelector('#conn[data-state="live"]');
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent !== '–');
}

const count = (status: string): Promise<number> => b.page.$eval(`#count-${status}`, (e) => Number(e.textContent!.replace(/\D/g, '')));

/** Run the next PENDING command to COMPLETED through the agent API. */
async function complete(url: string): Promise<string> {
  const { id, lease } = await claimOne(url, 'agent-t');
  await finish(url, 'agent-t', [{ id, lease, outcome: 'COMPLETED', result: { ok: true, tookMs: 1 } }]);
  return id;
}

test('the page loads from the server alone, with no console errors', async () => {
  s = await startTestServer();
  const failed: string[] = [];
  b.page.on('requestfailed', (r) => failed.push(r.url()));
  const external: string[] = [];
  b.page.on('request', (r) => {
    if (!r.url().startsWith(s.url)) external.push(r.url());
  });
  await openLive(`${s.url}/`);
  assert.is(await b.page.title(), 'keel');
  assert.is(await b.page.$eval('#commands', (e) => e.textContent), 'No commands yet. Submit one on the right.');
  await shot('empty');
  assert.equal(b.errors, []);
  assert.equal(external, [], 'the page loaded something from elsewhere');
  assert.equal(failed.filter((u) => !u.endsWith('/events')), []);
});

test('counts, chart and table follow commands submitted through the API, live', async () => {
  s = await startTestServer();
  await openLive(`${s.url}/`);
  const ids = [await submit(s.url), await submit(s.url), await submit(s.url)];
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '3');
  for (const id of ids) await b.page.waitForSelector(`tr[data-id="${id}"]`);
  // Newest first.
  assert.equal(await b.page.$$eval('#commands tr', (trs) => trs.map((t) => (t as HTMLElement).dataset.id)), ids.slice().reverse());

  const done = await complete(s.url);
  await b.page.waitForFunction(() => document.getElementById('count-COMPLETED')!.textContent === '1');
  assert.is(await count('PENDING'), 2);
  await b.page.waitForFunction((id) => document.querySelector(`tr[data-id="${id}"] .pill`)?.textContent === 'COMPLETED', done);
  await b.page.waitForFunction(() => /1 completed/.test(document.getElementById('rate')!.textContent!));

  // The status filter asks the server; a command that enters the filter's status shows up.
  await b.page.selectOption('#status-filter', 'COMPLETED');
  await b.page.waitForFunction(() => document.querySelectorAll('#commands tr[data-id]').length === 1);
  const next = await complete(s.url);
  await b.page.waitForSelector(`tr[data-id="${next}"]`);
  await shot('live');
  assert.equal(b.errors, []);
});

test('a dropped stream resumes without a gap; past what the server still holds, the page re-lists', async () => {
  s = await startTestServer({ eventRing: { events: 3, bytes: 1 << 20 } });
  await openLive(`${s.url}/`);
  await submit(s.url);
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '1');
  let relists = 0;
  b.page.on('request', (r) => {
    if (r.url().endsWith('/metrics')) relists++;
  });
  const drop = async (): Promise<void> => {
    await b.page.route('**/events', (r) => r.abort());
    for (const stream of [...s.keel.ctx.streams.open]) stream.end();
    await b.page.waitForSelector('#conn[data-state="reconnecting"]');
  };

  // Two transitions while it is away: the ring still holds them.
  await drop();
  const a = [await submit(s.url), await submit(s.url)];
  await b.page.unroute('**/events');
  for (const id of a) await b.page.waitForSelector(`tr[data-id="${id}"]`, { timeout: 30_000 });
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '3');
  assert.is(relists, 0, 'the page re-listed although nothing was lost');

  // Five: more than the ring holds. The server says `reset`, the page lists again.
  await drop();
  const more: string[] = [];
  for (let i = 0; i < 5; i++) more.push(await submit(s.url));
  await b.page.unroute('**/events');
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '8', undefined, { timeout: 30_000 });
  for (const id of more) await b.page.waitForSelector(`tr[data-id="${id}"]`);
  assert.ok(relists >= 1, 'no re-list after the reset');
  assert.equal(b.errors.filter((e) => !/ERR_FAILED/.test(e)), []);
});

test('scheduled and retry-waiting commands count as PENDING, from the first load on', async () => {
  s = await startTestServer();
  await submit(s.url, { type: 'DELAY', payload: { ms: 1 }, delay: '10m' });
  await openLive(`${s.url}/`);
  assert.is(await count('PENDING'), 1);
  assert.match(await b.page.$eval('#commands', (e) => e.textContent), /scheduled/);
  // A command that fails with an attempt left waits in RETRY_WAIT: still PENDING.
  const id = await submit(s.url, { type: 'DELAY', payload: { ms: 1 }, retry: { attempts: 2, delay: '10m' } });
  const { lease } = await claimOne(s.url, 'agent-t');
  await b.page.waitForFunction(() => document.getElementById('count-RUNNING')!.textContent === '1');
  await finish(s.url, 'agent-t', [{ id, lease, outcome: 'FAILED', error: 'boom' }]);
  await b.page.waitForFunction((cid) => document.querySelector(`tr[data-id="${cid}"]`)?.textContent!.includes('retry wait'), id);
  assert.equal([await count('PENDING'), await count('RUNNING'), await count('FAILED')], [2, 0, 0]);
  await b.page.reload();
  await b.page.waitForSelector('#conn[data-state="live"]');
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '2');
  assert.equal(b.errors, []);
});

test('paging: older commands on the next page, and back', async () => {
  s = await startTestServer();
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) ids.push(await submit(s.url));
  await openLive(`${s.url}/`);
  await b.page.waitForFunction(() => document.querySelectorAll('#commands tr[data-id]').length === 15);
  await b.page.click('#next');
  await b.page.waitForFunction(() => document.getElementById('page')!.textContent === 'page 2');
  await b.page.waitForFunction((first) => (document.querySelector('#commands tr[data-id]') as HTMLElement | null)?.dataset.id === first, ids[4]);
  assert.equal(await b.page.$$eval('#commands tr[data-id]', (trs) => trs.map((t) => (t as HTMLElement).dataset.id)), ids.slice(0, 5).reverse());
  assert.ok(await b.page.$eval('#next', (e) => (e as HTMLButtonElement).disabled));
  await b.page.click('#prev');
  await b.page.waitForFunction((first) => (document.querySelector('#commands tr[data-id]') as HTMLElement | null)?.dataset.id === first, ids[19]);
  assert.equal(b.errors, []);
});

test('Cancel cancels a RUNNING command; the detail shows its history as it grows', async () => {
  s = await startTestServer({ leaseTimeoutMs: 3000 });
  const agent = startAgent(s.url, tempDir());
  await agent.waitForMsg('agent ready', 30_000);
  await openLive(`${s.url}/`);
  const id = await submit(s.url, { type: 'DELAY', payload: { ms: 120_000 } });
  await b.page.waitForFunction((cid) => document.querySelector(`tr[data-id="${cid}"] .pill`)?.textContent === 'RUNNING', id, { timeout: 30_000 });
  // The agent list: online, the types it runs, and this command.
  await b.page.waitForFunction((short) => document.querySelector('.agent.online')?.textContent!.includes(short), id.slice(0, 8));
  assert.match(await b.page.$eval('.agent.online', (e) => e.textContent), /runs DELAY, HTTP_GET_JSON/);

  await b.page.click(`tr[data-id="${id}"]`);
  await b.page.waitForFunction(() => document.querySelectorAll('#detail-history tr').length === 2);
  assert.equal(await b.page.$$eval('#detail-history tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent)), ['submit', 'claim-start']);
  assert.match(await b.page.$eval('#detail-payload', (e) => e.textContent), /"ms": 120000/);
  await b.page.click('#cancel');
  await b.page.waitForFunction(() => /cancel requested/.test(document.getElementById('detail-message')!.textContent!));
  // The agent hears of it on its next heartbeat, aborts and reports FAILED CANCELED.
  await b.page.waitForFunction(() => document.getElementById('detail-status')!.textContent === 'FAILED', undefined, { timeout: 30_000 });
  await b.page.waitForFunction(() => document.querySelectorAll('#detail-history tr').length === 4);
  assert.equal(await b.page.$$eval('#detail-history tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent)), ['submit', 'claim-start', 'cancel', 'finish']);
  assert.match(await b.page.$eval('#detail-result', (e) => e.textContent), /CANCELED/);
  assert.is(await b.page.$eval('#detail-message', (e) => e.textContent), 'canceled: the agent aborted it');
  const cmd = await call(s.url, 'GET', `/commands/${id}`);
  assert.equal([cmd.body.status, cmd.body.error], ['FAILED', 'CANCELED']);
  assert.ok(await b.page.$eval('#cancel', (e) => (e as HTMLButtonElement).disabled), 'Cancel stays enabled on a final command');
  await shot('detail-canceled');
  assert.equal(b.errors, []);
});

test('Retry on a failed command submits it again as a new command, which the detail then shows', async () => {
  s = await startTestServer();
  const id = await submit(s.url);
  await call(s.url, 'POST', `/commands/${id}/cancel`);
  await openLive(`${s.url}/`);
  await b.page.click(`tr[data-id="${id}"]`);
  await b.page.waitForFunction(() => document.getElementById('detail-status')!.textContent === 'FAILED');
  assert.ok(await b.page.$eval('#cancel', (e) => (e as HTMLButtonElement).disabled), 'Cancel is enabled on a final command');
  await b.page.click('#retry');
  await b.page.waitForSelector('#detail-message button');
  const { body } = await call(s.url, 'GET', '/commands');
  const retried = body.commands[0];
  assert.is(retried.retryOf, id);
  assert.match(await b.page.$eval('#detail-message', (e) => e.textContent), `retried as ${retried.id.slice(0, 8)}`);
  await b.page.waitForSelector(`tr[data-id="${retried.id}"]`);
  await b.page.click('#detail-message button');
  await b.page.waitForFunction((rid) => document.getElementById('detail-title')!.textContent === rid, retried.id);
  await b.page.waitForFunction(() => document.getElementById('detail-status')!.textContent === 'PENDING');
  assert.match(await b.page.$eval('#detail-fields', (e) => e.textContent), `retryOf${id}`);
  assert.equal(b.errors, []);
});

test('the submit form submits, and a refusal shows the server\'s message', async () => {
  s = await startTestServer();
  await openLive(`${s.url}/`);
  await b.page.fill('textarea[name="payload"]', '{"ms": 250}');
  await b.page.click('form.submit button[type="submit"]');
  await b.page.waitForFunction(() => /submitted/.test(document.getElementById('submit-result')!.textContent!));
  await b.page.waitForFunction(() => document.getElementById('count-PENDING')!.textContent === '1');
  const { body } = await call(s.url, 'GET', '/commands');
  assert.equal(body.commands[0].payload, { ms: 250 });
  await b.page.fill('textarea[name="payload"]', '{"ms": -1}');
  await b.page.click('form.submit button[type="submit"]');
  await b.page.waitForFunction(() => /payload\.ms/.test(document.getElementById('submit-result')!.textContent!));
  assert.equal(b.errors.filter((e) => !/status of 400/.test(e)), []);
});

test('with a client token: the page asks once, keeps it for the tab, never puts it in a URL; a wrong one (or the agent\'s) shows an error', async () => {
  s = await startTestServer({ clientToken: 'right-token', agentToken: 'agent-token' });
  const urls: string[] = [];
  b.page.on('request', (r) => urls.push(r.url()));
  await b.page.goto(`${s.url}/`);
  await b.page.waitForSelector('#token-dialog[open]');
  await b.page.fill('#token-dialog input', 'wrong-token');
  await b.page.click('#token-dialog button[type="submit"]');
  await b.page.waitForSelector('#token-error:not([hidden])');
  assert.match(await b.page.$eval('#token-error', (e) => e.textContent), /refused/);
  assert.match(await b.page.$eval('#banner', (e) => ((e as HTMLElement).hidden ? '' : e.textContent)), /refused/);
  assert.is(await b.page.$eval('#conn', (e) => e.textContent), 'needs token');
  await shot('wrong-token');

  // The agent token is refused too (403), and the page says which token it needs.
  await b.page.fill('#token-dialog input', 'agent-token');
  await b.page.click('#token-dialog button[type="submit"]');
  await b.page.waitForFunction(() => /agent token/.test(document.getElementById('token-error')!.textContent!));

  await b.page.fill('#token-dialog input', 'right-token');
  await b.page.click('#token-dialog button[type="submit"]');
  await b.page.waitForSelector('#conn[data-state="live"]');
  await b.page.waitForSelector('#token-dialog:not([open])', { state: 'attached' });
  const id = await submit(s.url, undefined, { authorization: 'Bearer right-token' });
  await b.page.waitForSelector(`tr[data-id="${id}"]`);
  assert.is(await b.page.evaluate(() => sessionStorage.getItem('keel.token')), 'right-token');
  // A reload keeps the token: no second question.
  await b.page.reload();
  await b.page.waitForSelector('#conn[data-state="live"]');
  assert.is(await b.page.$('#token-dialog[open]'), null);
  assert.ok(urls.every((u) => !u.includes('token')), `a URL carried the token: ${urls.find((u) => u.includes('token'))}`);
  assert.equal(b.errors.filter((e) => !/status of 40[13]/.test(e)), []);
});

test.run();
