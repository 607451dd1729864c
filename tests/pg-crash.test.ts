// Crash points of the PostgreSQL store: a server on --store SIGKILLed at each
// (KEEL_CRASH_AT, state/crash-points.ts) in the middle of one command's life
// (submit with an Idempotency-Key, claim-and-start, finish), then started
// again. Each request is retried until it is answered, as a client and an
// agent do (an agent's retried claim resumes: it lists what it holds).
// Whatever the point: the command ends COMPLETED with exactly one submit,
// claim-start and finish in its events, a command acknowledged before the
// crash is still there, and a claim cut off before its commit left no lock
// behind (the command is claimable at once, with its first lease). Then the
// same for a finish that rides in a claim (the agent's protocol 2): killed
// after the finish committed, or around the claim it rode in.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call, type Reply } from './support/http.ts';
import { freshDatabase, stopPostgres } from './support/postgres.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';

const POINTS = [
  'pg:submit-uncommitted',
  'pg:submit-committed',
  'pg:claim-uncommitted',
  'pg:claim-committed',
  'pg:finish-committed',
];

const test = suite('PostgreSQL store crash points');

/** A server on a fresh database that SIGKILLs itself at `crashAt`; `once` retries a request across the restart, as clients and agents do. */
async function crashingServer(crashAt: string): Promise<{
  once(method: string, p: string, body: unknown, headers?: Record<string, string>): Promise<Reply>;
  readonly crashed: boolean;
  stop(): Promise<void>;
}> {
  const url = await freshDatabase();
  const dir = tempDir();
  let crashed = false;
  const boot = async (env: NodeJS.ProcessEnv): Promise<{ proc: Proc; url: string }> => {
    const proc = new Proc('server', ['server.ts', '--port', '0', '--state-dir', dir, '--store', url], env);
    const line = await proc.waitForMsg('listening');
    return { proc, url: String(line.url) };
  };
  let server = await boot({ KEEL_CRASH_AT: crashAt });
  return {
    async once(method, p, body, headers = {}) {
      for (;;) {
        try {
          return await call(server.url, method, p, body, headers);
        } catch {
          // The server died at the point: start it again (without the crash) and retry.
          const { code, signal } = await server.proc.exited;
          assert.is(signal ?? code, 'SIGKILL', 'the server died of the crash point');
          crashed = true;
          server = await boot({});
        }
      }
    },
    get crashed() {
      return crashed;
    },
    stop: () => server.proc.kill('SIGTERM'),
  };
}

for (const point of POINTS) {
  test(`SIGKILL at ${point}: nothing acknowledged lost, each step once`, async () => {
    // The first submit is the one acknowledged before the test's command: pg:submit-committed fires on the
    // second. A single submit is one statement; a batch is a transaction, where pg:submit-uncommitted is.
    const server = await crashingServer(point === 'pg:submit-committed' ? `${point}#2` : point);
    const { once } = server;
    // A command acknowledged before anything else: it must survive.
    const before = await once('POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': 'before' });
    assert.ok(!server.crashed);
    const beforeId = before.body.commandId as string;
    const item = { type: 'DELAY', payload: { ms: 2 } };
    const sub = point === 'pg:submit-uncommitted'
      ? await once('POST', '/commands/batch', { commands: [{ ...item, idempotencyKey: 'under-test' }] })
      : await once('POST', '/commands', item, { 'idempotency-key': 'under-test' });
    assert.ok(sub.status === 201 || sub.status === 200, sub.text);
    const id = (sub.body.commandId ?? sub.body.commandIds[0]) as string;
    // Both commands in one claim (so a claim point fires on ours); after a crash, the retry resumes and finds it among what the agent holds.
    let target: { id: string; lease: number } | undefined;
    for (let resume = false; target === undefined; resume = true) {
      const r = await once('POST', '/agent/claim', { agentId: 'w', max: 2, protocol: 2, resume });
      assert.is(r.status, 200, r.text);
      target = [...r.body.commands, ...(r.body.held ?? [])].find((c: { id: string }) => c.id === id);
      // The other (acknowledged first) command may come first: finish it to get at ours.
      for (const c of r.body.commands) {
        if (c.id !== id) assert.is((await once('POST', '/agent/finish', { agentId: 'w', items: [{ id: c.id, lease: c.lease, outcome: 'COMPLETED' }] })).status, 200);
      }
    }
    assert.is(target.lease, 1, 'a claim cut off before its commit left the command claimable with its first lease');
    const done = await once('POST', '/agent/finish', { agentId: 'w', items: [{ id, lease: 1, outcome: 'COMPLETED' }] });
    assert.is(done.status, 200, done.text);
    assert.ok(server.crashed, `the server never reached ${point}`);

    const cmd = await once('GET', `/commands/${id}`, undefined);
    assert.is(cmd.body.state, 'COMPLETED');
    const events = await once('GET', `/commands/${id}/events`, undefined);
    assert.equal(events.body.events.map((e: { event: string }) => e.event), ['submit', 'claim-start', 'finish']);
    assert.is((await once('GET', `/commands/${beforeId}`, undefined)).status, 200, 'an acknowledged command was lost');
    const list = await once('GET', '/commands?limit=10', undefined);
    assert.ok(list.body.commands.length <= 2, 'a retried submit made a second command');
    await server.stop();
  });
}

// A finish riding in a claim: the finish is its own transition, the claim its
// own transaction, both made at once. Killed after the finish committed, or
// before or after the claim's commit (the second claim: the first took the
// command now being finished), the retried claim carries the same finish.
const RIDING = ['pg:finish-committed', 'pg:claim-uncommitted#2', 'pg:claim-committed#2'];

for (const point of RIDING) {
  test(`SIGKILL at ${point} with a finish riding in the claim: both commands end with each step once`, async () => {
    const server = await crashingServer(point);
    const { once } = server;
    const ids: string[] = [];
    for (const key of ['first', 'second']) {
      const r = await once('POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': key });
      assert.ok(r.status === 201 || r.status === 200, r.text);
      ids.push(r.body.commandId);
    }
    const [first, second] = ids as [string, string];
    const claimed = await once('POST', '/agent/claim', { agentId: 'w', max: 1, protocol: 2 });
    assert.equal(claimed.body.commands.map((c: { id: string; lease: number }) => [c.id, c.lease]), [[first, 1]]);
    assert.ok(!server.crashed);
    // The outcome rides in the next claim; a retry (after the crash) resumes, listing what the agent holds.
    const rider = { id: first, lease: 1, outcome: 'COMPLETED' };
    let target: { id: string; lease: number } | undefined;
    for (let resume = false; target === undefined; resume = true) {
      const r = await once('POST', '/agent/claim', { agentId: 'w', max: 1, protocol: 2, resume, finish: [rider] });
      assert.is(r.status, 200, r.text);
      assert.equal(r.body.finished, [{ id: first, ok: true }], 'the riding finish, first made or retried');
      target = [...r.body.commands, ...(r.body.held ?? [])].find((c: { id: string }) => c.id === second);
    }
    assert.is(target.lease, 1, 'a claim cut off before its commit left the command claimable with its first lease');
    assert.ok(server.crashed, `the server never reached ${point}`);
    const done = await once('POST', '/agent/finish', { agentId: 'w', items: [{ id: second, lease: 1, outcome: 'COMPLETED' }] });
    assert.is(done.status, 200, done.text);
    for (const id of ids) {
      assert.is((await once('GET', `/commands/${id}`, undefined)).body.state, 'COMPLETED');
      const events = await once('GET', `/commands/${id}/events`, undefined);
      assert.equal(events.body.events.map((e: { event: string }) => e.event), ['submit', 'claim-start', 'finish'], id);
    }
    await server.stop();
  });
}

test.after(async () => {
  await cleanup();
  await stopPostgres();
});
test.run();
