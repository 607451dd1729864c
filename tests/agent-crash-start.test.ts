// Kill the agent (KEEL_CRASH_AT) around the start of an execution, restart
// it on the same ledger, and check the command ends in the documented state
// with the remote reached at most once.
//   after-claim      the server has it RUNNING, nothing journaled: the resuming
//                    claim lists it, the agent gives it back, and it runs once,
//                    under lease 2
//   canceled         the same, canceled while the agent was down: given back, it
//                    ends FAILED CANCELED
//   after-executing  `executing` durable, nothing sent: it may have been, as far
//                    as the ledger can tell, so it is never sent: INTERRUPTED
//   claimed          a `claimed` entry from a ledger written before
//                    claim-and-start: never begun, so given back, and it runs once
// Against a server on the file store and on PostgreSQL (support/stores.ts).
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpGetJsonResult } from '../lib/protocol.ts';
import { Ledger } from '../state/ledger.ts';
import { about, crashAndRestart, submit, thenStop, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { runSuites, STORES } from './support/stores.ts';

let target: Target;
let server: ServerHandle;

// Far longer than a restart (process start-up on a busy machine, and a stale
// lock's takeover), so no lease runs out while its agent is down: the outcomes below
// are the ledger's doing, not a race with lease expiry.
const LEASE = '30s';

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const test = suite(store.label('agent crash before execution'));
  test.before(async () => {
    target = await startTarget();
    server = await startServer(tempDir(), ['--lease-timeout', LEASE, ...(await store.serverArgs())]);
  });
  test.after(async () => {
    await cleanup();
    await target.close();
  });

  test('agent:after-claim: given back unbegun, the command runs once after the restart', async () => {
    const path = '/json?after-claim';
    const run = await crashAndRestart(server.url, 'agent:after-claim', 'HTTP_GET_JSON', { url: target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is(target.hits(path), 0, 'nothing was sent before the crash');
      const released = await restarted.waitFor(about('released', id), 10_000);
      assert.is(released.lease, 1);
      const v = await waitFinal(server.url, id);
      assert.is(v.status, 'COMPLETED');
      assert.is((v.result as HttpGetJsonResult).status, 200);
      assert.is(v.attempt, 2, 'claimed again under the next lease');
      assert.is(v.attempts.length, 1, 'the lease given back is not an execution');
      assert.is(target.hits(path), 1);
      const events = (await call(server.url, 'GET', `/commands/${id}/events`)).body.events.map((e: { event: string; to: string }) => `${e.event}->${e.to}`);
      assert.equal(events, ['submit->PENDING', 'claim-start->RUNNING', 'release->PENDING', 'claim-start->RUNNING', 'finish->COMPLETED']);
    });
  });

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

  test('agent:after-executing: `executing` on disk means it may have run, so an HTTP_GET_JSON is not sent again', async () => {
    const path = '/json?after-executing';
    const run = await crashAndRestart(server.url, 'agent:after-executing', 'HTTP_GET_JSON', { url: target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
      const v = await waitFinal(server.url, id);
      assert.equal([v.status, v.attempt], ['FAILED', 1]);
      assert.match(v.error ?? '', /^INTERRUPTED/);
      assert.is(target.hits(path), 0);
    });
  });

  test('a `claimed` entry from a ledger written before claim-and-start: given back, then run once', async () => {
    const path = '/json?legacy-claimed';
    const dir = tempDir();
    const agentId = 'legacy-agent';
    const id = await submit(server.url, 'HTTP_GET_JSON', { url: target.url + path });
    // The server side of such a claim: the command is held by that agent.
    const claim = await call(server.url, 'POST', '/agent/claim', { agentId, max: 1 });
    assert.equal(claim.body.commands.map((c: { id: string; lease: number }) => [c.id, c.lease]), [[id, 1]]);
    const ledger = await Ledger.open(dir);
    await ledger.write({ t: 'identity', agentId });
    await ledger.write({ t: 'claimed', id, lease: 1, type: 'HTTP_GET_JSON', payload: { url: target.url + path }, at: Date.now() });
    await ledger.close();
    const agent = startAgent(server.url, dir);
    try {
      const dropped = await agent.waitFor(about('dropped', id), 10_000);
      assert.match(String(dropped.reason), /given back/);
      const v = await waitFinal(server.url, id);
      assert.equal([v.status, v.attempt], ['COMPLETED', 2]);
      assert.is(target.hits(path), 1);
    } finally {
      await agent.kill('SIGTERM');
    }
  });

  suites.push(test);
}

runSuites(...suites);
