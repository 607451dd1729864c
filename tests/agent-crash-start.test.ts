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
import * as assert from 'uvu/assert';
import type { HttpGetJsonResult } from '../lib/protocol.ts';
import { Ledger } from '../state/ledger.ts';
import { about, crashAndRestart, runCrashSuites, submit, thenStop, waitFinal } from './fixtures/agent-harness.ts';
import { call } from './support/http.ts';
import { startAgent, tempDir } from './support/processes.ts';


runCrashSuites('agent crash before execution', (test, env) => {
  test('agent:after-claim: given back unbegun, the command runs once after the restart', async () => {
    const path = '/json?after-claim';
    const run = await crashAndRestart(env.server.url, 'agent:after-claim', 'HTTP_GET_JSON', { url: env.target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is(env.target.hits(path), 0, 'nothing was sent before the crash');
      const released = await restarted.waitFor(about('released', id), 10_000);
      assert.is(released.lease, 1);
      const v = await waitFinal(env.server.url, id);
      assert.is(v.status, 'COMPLETED');
      assert.is((v.result as HttpGetJsonResult).status, 200);
      assert.is(v.attempt, 2, 'claimed again under the next lease');
      assert.is(v.attempts.length, 1, 'the lease given back is not an execution');
      assert.is(env.target.hits(path), 1);
      const events = (await call(env.server.url, 'GET', `/commands/${id}/events`)).body.events.map((e: { event: string; to: string }) => `${e.event}->${e.to}`);
      assert.equal(events, ['submit->PENDING', 'claim-start->RUNNING', 'release->PENDING', 'claim-start->RUNNING', 'finish->COMPLETED']);
    });
  });

  test('claimed, then canceled while the agent was down: given back unbegun, it ends FAILED CANCELED', async () => {
    const path = '/json?canceled-while-down';
    const run = await crashAndRestart(env.server.url, 'agent:after-claim', 'HTTP_GET_JSON', { url: env.target.url + path }, async (id) => {
      const c = await call(env.server.url, 'POST', `/commands/${id}/cancel`);
      assert.is(c.status, 202, c.text);
    });
    await thenStop(run, async ({ id, restarted }) => {
      await restarted.waitFor(about('released', id), 10_000);
      const v = await waitFinal(env.server.url, id);
      assert.is(v.error, 'CANCELED');
      assert.is(env.target.hits(path), 0);
    });
  });

  test('agent:after-executing: `executing` on disk means it may have run, so an HTTP_GET_JSON is not sent again', async () => {
    const path = '/json?after-executing';
    const run = await crashAndRestart(env.server.url, 'agent:after-executing', 'HTTP_GET_JSON', { url: env.target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
      const v = await waitFinal(env.server.url, id);
      assert.equal([v.status, v.attempt], ['FAILED', 1]);
      assert.match(v.error ?? '', /^INTERRUPTED/);
      assert.is(env.target.hits(path), 0);
    });
  });

  test('a `claimed` entry from a ledger written before claim-and-start: given back, then run once', async () => {
    const path = '/json?legacy-claimed';
    const dir = tempDir();
    const agentId = 'legacy-agent';
    const id = await submit(env.server.url, 'HTTP_GET_JSON', { url: env.target.url + path });
    // The server side of such a claim: the command is held by that agent.
    const claim = await call(env.server.url, 'POST', '/agent/claim', { agentId, max: 1 });
    assert.equal(claim.body.commands.map((c: { id: string; lease: number }) => [c.id, c.lease]), [[id, 1]]);
    const ledger = await Ledger.open(dir);
    await ledger.write({ t: 'identity', agentId });
    await ledger.write({ t: 'claimed', id, lease: 1, type: 'HTTP_GET_JSON', payload: { url: env.target.url + path }, at: Date.now() });
    await ledger.close();
    const agent = startAgent(env.server.url, dir);
    try {
      const dropped = await agent.waitFor(about('dropped', id), 10_000);
      assert.match(String(dropped.reason), /given back/);
      const v = await waitFinal(env.server.url, id);
      assert.equal([v.status, v.attempt], ['COMPLETED', 2]);
      assert.is(env.target.hits(path), 1);
    } finally {
      await agent.kill('SIGTERM');
    }
  });
});
