// Kill the agent (KEEL_CRASH_AT) at each crash point from execution on,
// restart it on the same ledger, and check the command ends in the
// documented state with the remote reached at most once.
//   mid-http      `executing` HTTP: FAILED, never sent again
//   mid-delay     `executing` DELAY: resumed to its original deadline
//   after-done    `done` written (not synced), the finish not yet out: reported after the restart
//   after-finish  the server has it, `done` written: reported again, settled
//   done-synced   the finish fails (the server is gone): `done` is fsynced while it
//                 is retried; killed then, the restart reports the real result
// Against a server on the file store and on PostgreSQL (support/stores.ts).
import { setTimeout as sleep } from 'node:timers/promises';
import * as assert from 'uvu/assert';
import type { DelayResult, HttpGetJsonResult } from '../lib/protocol.ts';
import { about, crashAndRestart, runCrashSuites, submit, thenStop, waitFinal } from './fixtures/agent-harness.ts';
import { startAgent, startServer, tempDir, type Proc } from './support/processes.ts';

runCrashSuites('agent crash during and after execution', (test, env, store) => {
  test('agent:mid-http: the request is not sent again; FAILED, saying why', async () => {
    const path = '/json?mid-http';
    const run = await crashAndRestart(env.server.url, 'agent:mid-http', 'HTTP_GET_JSON', { url: env.target.url + path });
    await thenStop(run, async ({ id, restarted }) => {
      assert.is(env.target.hits(path), 1);
      assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
      const v = await waitFinal(env.server.url, id);
      assert.is(v.status, 'FAILED');
      assert.match(v.error!, /^INTERRUPTED: .*may have reached the remote/);
      assert.is((v.result as HttpGetJsonResult).status, null);
      assert.is(env.target.hits(path), 1);
    });
  });

  // Agent-side timing alone, the longest case here: on the file store only (the crash
  // matrix's agent:mid-delay rows kill an agent mid-delay against PostgreSQL too).
  if (store.name === 'file') {
    test('agent:mid-delay: the DELAY resumes to startedAt + ms and reports the true tookMs', async () => {
      const ms = 5000;
      const run = await crashAndRestart(env.server.url, 'agent:mid-delay', 'DELAY', { ms });
      await thenStop(run, async ({ id, crashed, restarted }) => {
        assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'executing');
        const v = await waitFinal(env.server.url, id);
        const tookMs = (v.result as DelayResult).tookMs;
        assert.is(v.status, 'COMPLETED');
        assert.ok(tookMs >= ms, `tookMs ${tookMs}`);
        // Resumed, it ends at startedAt + ms or at once if the restart came later:
        // tookMs = max(ms, down) where down >= ms/2 is the time from start to
        // reconcile. Run again from scratch it would be at least down + ms.
        const reconciledAt = Date.parse(String(restarted.lines.find(about('reconcile', id))!.t));
        const executingAt = Date.parse(String(crashed.lines.find(about('executing', id))!.t));
        const down = reconciledAt - executingAt;
        assert.ok(down >= ms / 2, `the crash came mid-delay (${down} ms)`);
        assert.ok(tookMs < down + ms / 2, `tookMs ${tookMs} with ${down} ms down: the delay was not resumed`);
      });
    });
  }

  // `done` is written before the finish goes out, and a SIGKILL keeps what was
  // written: the ledger holds `done` (the restart reports it, which the server
  // takes as new or as a retry) or the entry settled already.
  for (const point of ['agent:after-done', 'agent:after-finish']) {
    test(`${point}: the result reaches the server once, and the request ran once`, async () => {
      const path = `/json?${point}`;
      const run = await crashAndRestart(env.server.url, point, 'HTTP_GET_JSON', { url: env.target.url + path });
      await thenStop(run, async ({ id, restarted }) => {
        await restarted.waitForMsg('agent ready', 10_000);
        const reconciled = restarted.lines.find(about('reconcile', id));
        if (reconciled) {
          assert.is(reconciled.step, 'done');
          const reported = await restarted.waitFor(about('reported', id), 10_000);
          assert.is(reported.refused, undefined, 'the server takes the same result again');
        }
        const v = await waitFinal(env.server.url, id);
        assert.is(v.status, 'COMPLETED');
        assert.equal((v.result as HttpGetJsonResult).body, { hello: 'world', n: 42 });
        assert.is(env.target.hits(path), 1);
      });
    });
  }

  test('agent:done-synced: a finish that fails (its server SIGKILLed) makes the agent fsync `done` while it retries; the restart reports the real result', async () => {
    const serverDir = tempDir();
    const agentDir = tempDir();
    const args = env.serverArgs;
    let own = await startServer(serverDir, args);
    const crashed = startAgent(own.url, agentDir, [], { KEEL_CRASH_AT: 'agent:done-synced' });
    let restarted: Proc | undefined;
    try {
      await crashed.waitForMsg('agent ready');
      const path = `/pause/1500?done-synced-${store.name}`;
      const id = await submit(own.url, 'HTTP_GET_JSON', { url: env.target.url + path });
      await crashed.waitFor(about('executing', id), 20_000);
      // Gone before the request ends: its finish meets a refused connection, again and again.
      await own.proc.kill('SIGKILL');
      const giveUp = new AbortController();
      const exit = await Promise.race([crashed.exited, sleep(20_000, undefined, { signal: giveUp.signal }).catch(() => undefined)]);
      giveUp.abort();
      assert.is(exit?.signal, 'SIGKILL', `the agent should have died at agent:done-synced; stdout: ${crashed.stdout.slice(-2000)}`);
      assert.ok(crashed.stderr.includes('"point":"agent:done-synced"'), crashed.stderr);
      assert.not.ok(crashed.lines.some(about('reported', id)), 'the server never answered');

      own = await startServer(serverDir, args, {}, own.port);
      restarted = startAgent(own.url, agentDir);
      assert.is((await restarted.waitFor(about('reconcile', id), 10_000)).step, 'done');
      const v = await waitFinal(own.url, id);
      assert.is(v.status, 'COMPLETED', 'the result, not INTERRUPTED: `done` was kept');
      assert.equal((v.result as HttpGetJsonResult).body, { hello: 'world', paused: 1500 });
      assert.is(env.target.hits(path), 1);
    } finally {
      await crashed.kill();
      await restarted?.kill('SIGTERM');
      await own.proc.kill('SIGTERM');
    }
  });
});
