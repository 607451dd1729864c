// A restarted agent resumes its interrupted work in that work's own slots and
// claims for the others at once; an outcome it had journaled but not reported
// goes out before its first claim.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { about, getCommand, submit, waitFinal } from './fixtures/agent-harness.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';

const test = suite('agent restart: resumed work and fresh claims side by side');
let server: ServerHandle;

test.before(async () => {
  // Long enough that no lease runs out while the agent is down.
  server = await startServer(tempDir(), ['--lease-timeout', '30s']);
});
test.after(cleanup);

test('a resumed long DELAY holds one slot; PENDING work runs in the others meanwhile', async () => {
  const dir = tempDir();
  // Dies right after journaling the short command's outcome, before reporting it.
  const crashed = startAgent(server.url, dir, ['--concurrency', '2'], { KEEL_CRASH_AT: 'agent:after-done' });
  await crashed.waitForMsg('agent ready');
  const long = await submit(server.url, 'DELAY', { ms: 600_000 });
  await crashed.waitFor(about('executing', long), 20_000, 'the long DELAY executing');
  const short = await submit(server.url, 'DELAY', { ms: 10 });
  const exit = await crashed.exited;
  assert.is(exit.signal, 'SIGKILL', crashed.stderr);
  assert.is((await getCommand(server.url, short)).status, 'RUNNING');

  const waiting = [];
  for (let i = 0; i < 3; i++) waiting.push(await submit(server.url, 'DELAY', { ms: 10 }));
  const restarted = startAgent(server.url, dir, ['--concurrency', '2']);
  await restarted.waitFor((l) => l.msg === 'reconcile' && l.id === long && l.step === 'executing', 20_000, 'the long DELAY resumed');
  // Before the fix these waited the long DELAY's ten minutes out.
  for (const id of waiting) assert.is((await waitFinal(server.url, id, 60_000)).status, 'COMPLETED');
  assert.is((await getCommand(server.url, long)).status, 'RUNNING');
  assert.is((await waitFinal(server.url, short, 1000)).status, 'COMPLETED');

  // The journaled outcome was reported before anything was claimed.
  const reportedAt = restarted.lines.findIndex(about('reported', short));
  const firstClaim = restarted.lines.findIndex((l) => l.msg === 'claimed');
  assert.ok(reportedAt >= 0 && firstClaim > reportedAt, `reported at line ${reportedAt}, first claim at ${firstClaim}`);

  const canceled = await call(server.url, 'POST', `/commands/${long}/cancel`);
  assert.is(canceled.status, 202, canceled.text);
  assert.is((await waitFinal(server.url, long, 30_000)).error, 'CANCELED');
  await restarted.kill('SIGTERM');
});

test.run();
