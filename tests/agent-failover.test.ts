// A real agent given two real servers (--server A,B): when the one it talks
// to is SIGKILLed it moves to the other and takes its work there, and when
// that one is killed in turn it goes back to the first, restarted meanwhile.
// Each server here has its own file store, so the commands each side runs are
// those submitted to it; leases carried across a switch need servers on one
// store, as several servers on one PostgreSQL database have.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { linesAbout, submit, waitFinal } from './fixtures/agent-harness.ts';
import { cleanup, startAgent, startServer, tempDir, type LogLine } from './support/processes.ts';

const test = suite('agent failover between two servers');
test.after(cleanup);

const MOVED = 'server failed a call; moving to the next in the list';

test('the server in use SIGKILLed: the agent moves to the next and runs its commands; then back to the first, restarted', async () => {
  const dirA = tempDir();
  let a = await startServer(dirA, ['--lease-timeout', '5s']);
  const b = await startServer(tempDir(), ['--lease-timeout', '5s']);
  const agent = startAgent(`${a.url},${b.url}`, tempDir(), ['--concurrency', '2']);
  await agent.waitForMsg('agent ready');

  const first = await submit(a.url, 'DELAY', { ms: 10 });
  assert.is((await waitFinal(a.url, first)).status, 'COMPLETED');

  // The agent's claim is parked at a: the kill cuts it.
  await a.proc.kill('SIGKILL');
  const onB = [await submit(b.url, 'DELAY', { ms: 10 }), await submit(b.url, 'DELAY', { ms: 10 })];
  for (const id of onB) assert.is((await waitFinal(b.url, id)).status, 'COMPLETED', id);
  const moved = await agent.waitFor((l: LogLine) => l.msg === MOVED && l.to === b.url, 15_000, 'the move to b');
  assert.is(moved.from, a.url);

  // a back on its port and state; b killed: the list wraps around to a.
  a = await startServer(dirA, ['--lease-timeout', '5s'], {}, a.port);
  await b.proc.kill('SIGKILL');
  const backOnA = await submit(a.url, 'DELAY', { ms: 10 });
  assert.is((await waitFinal(a.url, backOnA)).status, 'COMPLETED');
  await agent.waitFor((l: LogLine) => l.msg === MOVED && l.from === b.url && l.to === a.url, 15_000, 'the move back to a');

  for (const id of [first, ...onB, backOnA]) assert.is(linesAbout([agent], 'executing', id).length, 1, `${id} executed once`);
  await agent.kill('SIGTERM');
  assert.equal(await agent.exited, { code: 0, signal: null });
});

test.run();
