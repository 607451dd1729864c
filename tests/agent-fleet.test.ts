// More than one agent process: two agents sharing a server run every command
// exactly once; a supervised agent that is SIGKILLed every second keeps
// restarting and the commands still complete.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DelayResult } from '../lib/protocol.ts';
import { about, linesAbout, submit, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { cleanup, startAgent, startServer, tempDir } from './support/processes.ts';

const test = suite('agent fleet');
let target: Target;

test.before(async () => {
  target = await startTarget();
});
test.after(async () => {
  await cleanup();
  await target.close();
});

const TOKEN = 'fleet-secret';

test('two agents on one server: every command executed once', async () => {
  const server = await startServer(tempDir(), ['--lease-timeout', '2s', '--token', TOKEN]);
  // The token both ways: by flag and by environment.
  const agents = [
    startAgent(server.url, tempDir(), ['--concurrency', '3', '--token', TOKEN]),
    startAgent(server.url, tempDir(), ['--concurrency', '3'], { KEEL_TOKEN: TOKEN }),
  ];
  await Promise.all(agents.map((a) => a.waitForMsg('agent ready')));
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) {
    ids.push(await submit(server.url, 'HTTP_GET_JSON', { url: `${target.url}/json?fleet=${i}` }, TOKEN));
    ids.push(await submit(server.url, 'DELAY', { ms: 20 }, TOKEN));
  }
  for (const id of ids) assert.is((await waitFinal(server.url, id, 20_000, TOKEN)).status, 'COMPLETED', id);
  for (let i = 0; i < 30; i++) assert.is(target.hits(`/json?fleet=${i}`), 1, `fleet=${i}`);
  for (const id of ids) assert.is(linesAbout(agents, 'executing', id).length, 1, `${id} executed once`);
  const perAgent = agents.map((a) => a.lines.filter((l) => l.msg === 'executing').length);
  assert.ok(perAgent.every((n) => n > 0), `both agents worked: ${perAgent.join(', ')}`);
});

test('--supervise --kill-after=1: the agent keeps restarting and the commands complete', async () => {
  // Leases outlive a restart even on a busy machine: a command cut short is
  // resumed by the next child, not lost to lease expiry.
  const server = await startServer(tempDir(), ['--lease-timeout', '30s']);
  const supervisor = startAgent(server.url, tempDir(), ['--supervise', '--kill-after=1']);
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push(await submit(server.url, 'DELAY', { ms: 300 }));
  for (const id of ids) {
    const v = await waitFinal(server.url, id, 40_000);
    assert.is(v.status, 'COMPLETED', `${id}: ${v.error}`);
    assert.ok((v.result as DelayResult).tookMs >= 300);
  }
  const kills = supervisor.lines.filter((l) => l.msg === 'agent child died; restarting');
  assert.ok(kills.length >= 1, 'a child was killed and restarted');
  assert.ok(kills.every((l) => l.signal === 'SIGKILL'));
  supervisor.child.kill('SIGTERM');
  assert.equal(await supervisor.exited, { code: 0, signal: null });
});

test('--kill-after=1polls: one claim cycle, then SIGKILL before the next claim', async () => {
  const server = await startServer(tempDir(), ['--lease-timeout', '30s']);
  const id = await submit(server.url, 'DELAY', { ms: 50 });
  const dir = tempDir();
  const agent = startAgent(server.url, dir, ['--kill-after=1polls']);
  assert.equal(await agent.exited, { code: null, signal: 'SIGKILL' });
  // The next claim waits for the execution to end, not for its report.
  assert.ok(agent.lines.some(about('executing', id)), 'the first cycle ran its command');
  assert.ok(agent.lines.some((l) => l.msg === 'killing myself'), 'killed by the flag, before the second claim');
  // Reported before the kill or not, the next start settles it.
  const again = startAgent(server.url, dir);
  try {
    assert.is((await waitFinal(server.url, id)).status, 'COMPLETED');
  } finally {
    await again.kill('SIGTERM');
  }
});

test.run();
