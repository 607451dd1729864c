// Every route on a full disk, against an in-process server whose state
// directory is on a 4 MiB tmpfs the test fills: what must be journaled is
// refused with 503 disk full and changes nothing; reads and heartbeats are
// answered; once space returns the same requests go through.
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call, claimOne, closeAll, getCommand, heartbeat, start, startTestServer, submit, type Reply, type TestServer } from './support/server-harness.ts';
import { SmallDisk } from './support/tmpfs.ts';

const test = suite('routes on a full disk');
let disk: SmallDisk;
let srv: TestServer;

test.before(async () => {
  disk = new SmallDisk(4);
  srv = await startTestServer({ stateDir: path.join(disk.dir, 'server') });
});
test.after(async () => {
  await closeAll();
  disk.remove();
});

const AGENT = 'agent-1';
const DELAY = { type: 'DELAY', payload: { ms: 1 } };

test('journaled routes answer 503 disk full and change nothing; reads and heartbeats are answered', async () => {
  // Two commands RUNNING (claim-and-start), one PENDING.
  await submit(srv.url);
  const held = await claimOne(srv.url, AGENT);
  await submit(srv.url);
  const assigned = await claimOne(srv.url, AGENT);
  const pending = await submit(srv.url);

  disk.fill();
  const full = new Promise<void>((resolve) => srv.keel.ctx.store.durable.journal.onDiskFull((e) => e && resolve()));
  let stuck: Promise<Reply> | undefined;
  for (let i = 0; i < 1000 && !stuck; i++) {
    const sent = call(srv.url, 'POST', '/commands', DELAY);
    if ((await Promise.race([sent, full.then(() => undefined)])) === undefined) stuck = sent;
  }
  assert.ok(stuck, 'no submit met the full disk');
  const seq = srv.keel.ctx.store.durable.journal.lastSeq;

  const refused: Array<[string, Promise<Reply>]> = [
    ['submit', call(srv.url, 'POST', '/commands', DELAY)],
    ['batch submit', call(srv.url, 'POST', '/commands/batch', { commands: [DELAY, DELAY] })],
    ['cancel', call(srv.url, 'POST', `/commands/${pending}/cancel`)],
    ['claim', call(srv.url, 'POST', '/agent/claim', { agentId: AGENT, max: 1, waitMs: 0 })],
    ['claim with a finish riding', call(srv.url, 'POST', '/agent/claim', { agentId: AGENT, max: 1, waitMs: 0, finish: [{ ...held, outcome: 'COMPLETED', result: {} }] })],
    ['finish', call(srv.url, 'POST', '/agent/finish', { agentId: AGENT, items: [{ ...held, outcome: 'COMPLETED', result: {} }] })],
    ['release', call(srv.url, 'POST', '/agent/release', { agentId: AGENT, items: [assigned] })],
  ];
  for (const [what, p] of refused) {
    const r = await p;
    assert.is(r.status, 503, `${what}: ${r.text}`);
    assert.is(r.body.error, 'disk full', what);
    assert.ok(r.headers.get('retry-after'), `${what}: Retry-After`);
  }
  assert.is(srv.keel.ctx.store.durable.journal.lastSeq, seq, 'nothing was queued');

  // A protocol-1 agent's start of a command its claim started writes nothing: answered.
  assert.is((await start(srv.url, AGENT, [assigned])).status, 200);
  const beat = await heartbeat(srv.url, AGENT, [held, assigned]);
  assert.is(beat.status, 200, beat.text);
  assert.equal(beat.body.revoked, []);
  assert.is((await getCommand(srv.url, held.id)).status, 'RUNNING');
  assert.is((await getCommand(srv.url, pending)).status, 'PENDING');
  for (const p of ['/commands?limit=5', `/commands/${held.id}/events`, '/agents', '/metrics', '/healthz']) {
    assert.is((await call(srv.url, 'GET', p)).status, 200, p);
  }
  assert.is((await call(srv.url, 'GET', '/readyz')).status, 503);

  disk.free();
  assert.is((await stuck).status, 201);
  const fin = await call(srv.url, 'POST', '/agent/finish', { agentId: AGENT, items: [{ ...held, outcome: 'COMPLETED', result: {} }] });
  assert.is(fin.status, 200, fin.text);
  assert.is((await getCommand(srv.url, held.id)).status, 'COMPLETED');
  assert.is((await call(srv.url, 'POST', `/commands/${pending}/cancel`)).status, 200);
  assert.is((await call(srv.url, 'GET', '/readyz')).status, 200);
});

test.run();
