// Kill the agent (KEEL_CRASH_AT) at each crash point from execution on,
// restart it on the same ledger, and check the command ends in the
// documented state with the remote reached at most once.
//   mid-http      `executing` HTTP: FAILED, never sent again
//   mid-delay     `executing` DELAY: resumed to its original deadline
//   after-done    `done`: reported after the restart
//   after-finish  `done` (the server already has it): reported again, settled
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DelayResult, HttpGetJsonResult } from '../lib/protocol.ts';
import { about, crashAndRestart, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { cleanup, startServer, tempDir, type ServerHandle } from './support/processes.ts';

const test = suite('agent crash during and after execution');
let target: Target;
let server: ServerHandle;

// Long enough that a restarted agent (about 2 s of stale lock) is back before it runs out.
const LEASE = '6s';

test.before(async () => {
  target = await startTarget();
  server = await startServer(tempDir(), ['--lease-timeout', LEASE]);
});
test.after(async () => {
  await cleanup();
  await target.close();
});

test('agent:mid-http: the request is not sent again; FAILED, saying why', async () => {
  const path = '/json?mid-http';
  const { id, restarted } = await crashAndRestart(server.url, 'agent:mid-http', 'HTTP_GET_JSON', { url: target.url + path });
  assert.is(target.hits(path), 1);
  assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
  const v = await waitFinal(server.url, id);
  assert.is(v.status, 'FAILED');
  assert.match(v.error!, /^INTERRUPTED: .*may have reached the remote/);
  assert.is((v.result as HttpGetJsonResult).status, null);
  assert.is(target.hits(path), 1);
  await restarted.kill('SIGTERM');
});

test('agent:mid-delay: the DELAY resumes to startedAt + ms and reports the true tookMs', async () => {
  const ms = 5000;
  const { id, crashed, restarted } = await crashAndRestart(server.url, 'agent:mid-delay', 'DELAY', { ms });
  const startedAt = Date.parse(String(crashed.lines.find(about('executing', id))!.t));
  assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
  const v = await waitFinal(server.url, id);
  const tookMs = (v.result as DelayResult).tookMs;
  assert.is(v.status, 'COMPLETED');
  assert.ok(tookMs >= ms, `tookMs ${tookMs}`);
  // Restarted from scratch it would have taken at least ms/2 (before the crash) + ms.
  assert.ok(tookMs < ms + ms / 2, `tookMs ${tookMs}: the delay was not resumed`);
  assert.ok(Date.parse(v.updatedAt) - startedAt >= ms);
  await restarted.kill('SIGTERM');
});

for (const point of ['agent:after-done', 'agent:after-finish']) {
  test(`${point}: the result is reported after the restart, and the request ran once`, async () => {
    const path = `/json?${point}`;
    const { id, restarted } = await crashAndRestart(server.url, point, 'HTTP_GET_JSON', { url: target.url + path });
    assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'done');
    const reported = await restarted.waitFor(about('reported', id), 10_000);
    assert.is(reported.refused, undefined, 'the server takes the same result again');
    const v = await waitFinal(server.url, id);
    assert.is(v.status, 'COMPLETED');
    assert.equal((v.result as HttpGetJsonResult).body, { hello: 'world', n: 42 });
    assert.is(target.hits(path), 1);
    await restarted.kill('SIGTERM');
  });
}

test.run();
