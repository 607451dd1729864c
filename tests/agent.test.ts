// One server, one agent, real processes: commands run to completion, cancel
// and lease loss abort the work, SIGTERM finishes what is in hand, and a
// server outage is waited out with the result kept in the ledger.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DelayResult, HttpGetJsonResult } from '../lib/protocol.ts';
import { about, submit, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type Proc, type ServerHandle } from './support/processes.ts';

const test = suite('agent');
let target: Target;
let server: ServerHandle;
let serverDir: string;
let agent: Proc;

test.before(async () => {
  target = await startTarget();
  serverDir = tempDir();
  server = await startServer(serverDir, ['--lease-timeout', '2s']);
  agent = startAgent(server.url, tempDir(), ['--http-timeout', '2s']);
  await agent.waitForMsg('agent ready');
});
test.after(async () => {
  await cleanup();
  await target.close();
});

test('DELAY and HTTP_GET_JSON complete, each step logged with the command id', async () => {
  const d = await submit(server.url, 'DELAY', { ms: 150 });
  const h = await submit(server.url, 'HTTP_GET_JSON', { url: `${target.url}/json?basic` });
  const dv = await waitFinal(server.url, d);
  const hv = await waitFinal(server.url, h);
  assert.is(dv.status, 'COMPLETED');
  assert.ok((dv.result as DelayResult).tookMs >= 150);
  assert.is(hv.status, 'COMPLETED');
  assert.equal((hv.result as HttpGetJsonResult).body, { hello: 'world', n: 42 });
  assert.is(target.hits('/json?basic'), 1);
  for (const msg of ['executing', 'done', 'reported']) await agent.waitFor(about(msg, h), 5000, `${msg} ${h}`);
});

test('an HTTP command with no response fails with the error set', async () => {
  const h = await submit(server.url, 'HTTP_GET_JSON', { url: `${target.url}/slow?timeout` });
  const v = await waitFinal(server.url, h);
  assert.is(v.status, 'FAILED');
  assert.match(v.error!, /^TIMEOUT/);
  assert.is((v.result as HttpGetJsonResult).status, null);
});

test('cancel aborts a running command: FAILED CANCELED, well before its end', async () => {
  const d = await submit(server.url, 'DELAY', { ms: 60_000 });
  await agent.waitFor(about('executing', d), 5000);
  const c = await call(server.url, 'POST', `/commands/${d}/cancel`);
  assert.is(c.status, 202, c.text);
  const v = await waitFinal(server.url, d, 5000);
  assert.is(v.status, 'FAILED');
  assert.is(v.error, 'CANCELED');
});

test('a lease lost while the agent was stalled aborts its work; the server keeps AGENT_LOST', async () => {
  const d = await submit(server.url, 'DELAY', { ms: 60_000 });
  await agent.waitFor(about('executing', d), 5000);
  agent.child.kill('SIGSTOP'); // no heartbeats: the 2 s lease runs out
  try {
    await server.proc.waitFor(about('lease expired', d), 6000);
  } finally {
    agent.child.kill('SIGCONT');
  }
  assert.is((await waitFinal(server.url, d)).error, 'AGENT_LOST');
  await agent.waitFor(about('lease revoked', d), 5000);
  await agent.waitFor(about('reported', d), 5000);
  // The agent's late FAILED report settles its ledger but changes nothing on the server.
  const v = await waitFinal(server.url, d);
  assert.is(v.error, 'AGENT_LOST');
  assert.equal(v.result, { error: 'AGENT_LOST' });
});

test('server down: the agent finishes, keeps the result and reports it when the server is back', async () => {
  const d = await submit(server.url, 'DELAY', { ms: 800 });
  await agent.waitFor(about('executing', d), 5000);
  await server.proc.kill('SIGKILL');
  await agent.waitFor(about('done', d), 5000);
  await agent.waitForMsg('server unreachable; retrying with backoff', 5000);
  server = await startServer(serverDir, ['--lease-timeout', '2s'], {}, server.port);
  await agent.waitFor(about('reported', d), 10_000);
  const v = await waitFinal(server.url, d);
  assert.is(v.status, 'COMPLETED');
  assert.ok((v.result as DelayResult).tookMs >= 800);
});

test('SIGTERM: no new claims, the command in hand finishes, exit 0', async () => {
  const d = await submit(server.url, 'DELAY', { ms: 700 });
  await agent.waitFor(about('executing', d), 5000);
  agent.child.kill('SIGTERM');
  assert.equal(await agent.exited, { code: 0, signal: null });
  assert.is((await waitFinal(server.url, d, 1000)).status, 'COMPLETED');
  const later = await submit(server.url, 'DELAY', { ms: 1 });
  const r = await call(server.url, 'GET', `/commands/${later}`);
  assert.is(r.body.status, 'PENDING');
});

test('SIGTERM with the server down and nothing in hand: the log names no command, only the give-back it waits for', async () => {
  const idle = startAgent(server.url, tempDir(), ['--grace', '300ms']);
  await idle.waitForMsg('agent ready');
  await server.proc.kill('SIGKILL');
  // A claim met the dead server: at shutdown the agent asks what the server holds for it, to give it back.
  await idle.waitForMsg('server unreachable; retrying with backoff', 5000);
  idle.child.kill('SIGTERM');
  const waiting = await idle.waitForMsg('finishing work in hand', 5000);
  assert.equal([waiting.commands, waiting.givingBack], [[], 1]);
  assert.equal(await idle.exited, { code: 0, signal: null });
  server = await startServer(serverDir, ['--lease-timeout', '2s'], {}, server.port);
});

test('SIGTERM with the server down: past the grace period the work is aborted, kept in the ledger, reported on the next start', async () => {
  const dir = tempDir();
  const second = startAgent(server.url, dir, ['--grace', '300ms']);
  await second.waitForMsg('agent ready');
  const d = await submit(server.url, 'DELAY', { ms: 60_000 });
  await second.waitFor(about('executing', d), 5000);
  await server.proc.kill('SIGKILL');
  second.child.kill('SIGTERM');
  await second.waitForMsg('grace period over: aborting work in hand', 5000);
  await second.waitFor(about('done', d), 5000);
  assert.equal(await second.exited, { code: 0, signal: null }, 'exit 0 though the report could not be sent');
  assert.not.ok(second.lines.some(about('reported', d)));

  // A lease that outlasts the next agent's start-up, however busy the machine:
  // this test is about the ledger, not about expiry.
  server = await startServer(serverDir, ['--lease-timeout', '30s'], {}, server.port);
  const third = startAgent(server.url, dir);
  assert.is((await third.waitFor(about('reconcile', d), 10_000)).step, 'done');
  const v = await waitFinal(server.url, d);
  assert.is(v.status, 'FAILED');
  assert.match(v.error!, /^SHUTDOWN/);
});

test.run();
