// A step of the wall clock fails no live work: the server and the agent run
// under libfaketime, and the test steps their wall clock forward and back
// while commands run. Leases, the online window and a DELAY's wait are on the
// monotonic clock, which the step leaves alone.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { AgentView, DelayResult } from '../lib/protocol.ts';
import { about, submit, waitFinal } from './fixtures/agent-harness.ts';
import { FakeWallClock } from './support/faketime.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type Proc, type ServerHandle } from './support/processes.ts';

const test = suite('wall-clock steps');
// Short, so a lease judged by the wall clock would run out at the first sweep after a step.
const LEASE = '3s';
const DELAY_MS = 4000;
let clock: FakeWallClock;
let server: ServerHandle;
let agent: Proc;

test.before(async () => {
  clock = new FakeWallClock(tempDir());
  server = await startServer(tempDir(), ['--lease-timeout', LEASE], clock.env);
  agent = startAgent(server.url, tempDir(), [], clock.env);
  await agent.waitForMsg('agent ready');
});
test.after(cleanup);

/** Submit a DELAY and resolve once the server has it RUNNING. */
async function running(ms: number): Promise<string> {
  const id = await submit(server.url, 'DELAY', { ms });
  await server.proc.waitFor((l) => about('transition', id)(l) && l.state === 'RUNNING', 20_000, `${id} RUNNING`);
  return id;
}

test('a step forward of two hours: the running DELAY completes on time, its agent stays online', async () => {
  const id = await running(DELAY_MS);
  clock.step('+2h');
  const v = await waitFinal(server.url, id, 30_000);
  assert.is(v.status, 'COMPLETED', `${v.status} ${v.error}`);
  const tookMs = (v.result as DelayResult).tookMs;
  assert.ok(tookMs >= DELAY_MS && tookMs < DELAY_MS + 60_000, `tookMs ${tookMs}: the delay was measured on the wall clock`);
  const agents = (await call<{ agents: AgentView[] }>(server.url, 'GET', '/agents')).body.agents;
  assert.equal(agents.map((a) => a.status), ['online']);
});

test('a step back of two hours: the running DELAY still ends on time', async () => {
  const id = await running(DELAY_MS);
  clock.step('+0');
  const v = await waitFinal(server.url, id, 30_000);
  assert.is(v.status, 'COMPLETED', `${v.status} ${v.error}`);
  const tookMs = (v.result as DelayResult).tookMs;
  assert.ok(tookMs >= DELAY_MS && tookMs < DELAY_MS + 60_000, `tookMs ${tookMs}`);
});

test('a step back after the agent died: its lease still runs out one timeout later', async () => {
  const id = await running(60_000);
  await agent.kill('SIGKILL');
  clock.step('-2h');
  // Judged by the wall clock, the last heartbeat's deadline would be two hours away.
  const v = await waitFinal(server.url, id, 30_000);
  assert.is(v.status, 'FAILED');
  assert.is(v.error, 'AGENT_LOST');
});

test.run();
