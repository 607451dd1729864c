// Kill the agent (KEEL_CRASH_AT) at each crash point before a command starts
// executing, restart it on the same ledger, and check the command ends in
// the documented state with the remote reached at most once.
//   after-claim    nothing journaled: the resuming claim lists it, the agent
//                  gives it back, and it runs under lease 2
//   after-claimed  `claimed`: start answers ok, so it runs
//   after-start    `claimed` (the server has it RUNNING): start is a retry, it runs once
//   canceled       nothing journaled, canceled while the agent was down: given
//                  back, it ends FAILED CANCELED
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpGetJsonResult } from '../lib/protocol.ts';
import { about, crashAndRestart, thenStop, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { cleanup, startServer, tempDir, type ServerHandle } from './support/processes.ts';

const test = suite('agent crash before execution');
let target: Target;
let server: ServerHandle;

// Far longer than a restart (process start-up on a busy machine, and a stale
// lock's takeover), so no lease runs out while its agent is down: the outcomes below
// are the ledger's doing, not a race with lease expiry.
const LEASE = '30s';

test.before(async () => {
  target = await startTarget();
  server = await startServer(tempDir(), ['--lease-timeout', LEASE]);
});
test.after(async () => {
  await cleanup();
  await target.close();
});

for (const point of ['agent:after-claim', 'agent:after-claimed', 'agent:after-start']) {
  test(`${point}: the command runs once after the restart`, async () => {
    const path = `/json?${point}`;
    const run = await crashAndRestart(server.url, point, 'HTTP_GET_JSON', { url: target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is(target.hits(path), 0, 'nothing was sent before the crash');
      const v = await waitFinal(server.url, id);
      assert.is(v.status, 'COMPLETED');
      assert.is((v.result as HttpGetJsonResult).status, 200);
      // Given back and claimed again, or started under the lease it had.
      assert.is(v.attempt, point === 'agent:after-claim' ? 2 : 1);
      assert.is(target.hits(path), 1);
      if (point !== 'agent:after-claim') assert.is((await restarted.waitFor(about('reconcile', id), 5000)).step, 'claimed');
      await restarted.waitFor(about('reported', id), 5000);
    });
  });
}

test('claimed, then canceled while the agent was down: given back unbegun, it ends FAILED CANCELED', async () => {
  const path = '/json?canceled-while-down';
  const run = await crashAndRestart(server.url, 'agent:after-claim', 'HTTP_GET_JSON', { url: target.url + path }, async (id) => {
    const c = await call(server.url, 'POST', `/commands/${id}/cancel`);
    assert.is(c.status, 202, c.text);
  });
  await thenStop(run, async ({ id, restarted }) => {
    await restarted.waitFor(about('released', id), 10_000);
    const v = await waitFinal(server.url, id);
    assert.is(v.error, 'CANCELED');
    assert.is(target.hits(path), 0);
  });
});

test.run();
