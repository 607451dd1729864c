// A restarted agent resumes its interrupted work in that work's own slots and
// claims for the others at once; an outcome it had journaled but not reported
// goes out before its first claim.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { about, getCommand, submit, waitFinal } from './fixtures/agent-harness.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { Ledger } from '../state/ledger.ts';

const test = suite('agent restart: resumed work and fresh claims side by side');
let server: ServerHandle;

test.before(async () => {
  // Long enough that no lease runs out while the agent is down.
  server = await startServer(tempDir(), ['--lease-timeout', '30s']);
});
test.after(cleanup);

test('a resumed long DELAY holds one slot; PENDING work runs in the others meanwhile', async () => {
  // The ledger a crash left: a long DELAY executing, a short one whose outcome
  // is journaled (`done`) but not reported. Both are RUNNING for this agent on
  // the server. Written by hand: a real crash cannot promise the finish, which
  // goes out alongside `done`, had not reached the server.
  const dir = tempDir();
  const agentId = 'restart-slots';
  const long = await submit(server.url, 'DELAY', { ms: 600_000 });
  const short = await submit(server.url, 'DELAY', { ms: 10 });
  const claim = await call(server.url, 'POST', '/agent/claim', { agentId, max: 2 });
  assert.equal(claim.body.commands.map((c: { id: string }) => c.id), [long, short]);
  const ledger = await Ledger.open(dir);
  await ledger.write({ t: 'identity', agentId });
  await ledger.write(
    { t: 'executing', id: long, lease: 1, type: 'DELAY', payload: { ms: 600_000 }, startedAt: Date.now() },
    { t: 'executing', id: short, lease: 1, type: 'DELAY', payload: { ms: 10 }, startedAt: Date.now() },
  );
  await ledger.write({ t: 'done', id: short, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 10 }, error: null });
  await ledger.close();
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
  const firstClaim = restarted.lines.findIndex((l) => l.msg === 'executing');
  assert.ok(reportedAt >= 0 && firstClaim > reportedAt, `reported at line ${reportedAt}, first claim at ${firstClaim}`);

  const canceled = await call(server.url, 'POST', `/commands/${long}/cancel`);
  assert.is(canceled.status, 202, canceled.text);
  assert.is((await waitFinal(server.url, long, 30_000)).error, 'CANCELED');
  await restarted.kill('SIGTERM');
});

test.run();
