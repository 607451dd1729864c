// Crash points of the PostgreSQL store: a server on --store SIGKILLed at each
// (KEEL_CRASH_AT, state/crash-points.ts) in the middle of one command's life
// (submit with an Idempotency-Key, claim-and-start, finish), then started
// again. Each request is retried until it is answered, as a client and an
// agent do (an agent's retried claim resumes: it lists what it holds).
// Whatever the point: the command ends COMPLETED with exactly one submit,
// claim-start and finish in its events, a command acknowledged before the
// crash is still there, and a claim cut off before its commit left no lock
// behind (the command is claimable at once, with its first lease).
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

for (const point of POINTS) {
  test(`SIGKILL at ${point}: nothing acknowledged lost, each step once`, async () => {
    const url = await freshDatabase();
    const dir = tempDir();
    let server: { proc: Proc; url: string } | undefined;
    let crashed = false;
    const boot = async (env: NodeJS.ProcessEnv): Promise<{ proc: Proc; url: string }> => {
      const proc = new Proc('server', ['server.ts', '--port', '0', '--state-dir', dir, '--store', url], env);
      const line = await proc.waitForMsg('listening');
      return { proc, url: String(line.url) };
    };
    // The first submit is the one acknowledged before the test's command: pg:submit-committed fires on the
    // second. A single submit is one statement; a batch is a transaction, where pg:submit-uncommitted is.
    server = await boot({ KEEL_CRASH_AT: point === 'pg:submit-committed' ? `${point}#2` : point });
    // A command acknowledged before anything else: it must survive.
    const before = await call(server.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': 'before' });
    const once = async (method: string, p: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> => {
      for (;;) {
        try {
          return await call(server!.url, method, p, body, headers);
        } catch {
          // The server died at the point: start it again (without the crash) and retry.
          const { code, signal } = await server!.proc.exited;
          assert.is(signal ?? code, 'SIGKILL', 'the server died of the crash point');
          crashed = true;
          server = await boot({});
        }
      }
    };
    assert.is(before.status, 201);
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
    assert.ok(crashed, `the server never reached ${point}`);

    const cmd = await once('GET', `/commands/${id}`, undefined);
    assert.is(cmd.body.state, 'COMPLETED');
    const events = await once('GET', `/commands/${id}/events`, undefined);
    assert.equal(events.body.events.map((e: { event: string }) => e.event), ['submit', 'claim-start', 'finish']);
    assert.is((await once('GET', `/commands/${beforeId}`, undefined)).status, 200, 'an acknowledged command was lost');
    const list = await once('GET', '/commands?limit=10', undefined);
    assert.ok(list.body.commands.length <= 2, 'a retried submit made a second command');
    await server!.proc.kill('SIGTERM');
  });
}

test.after(async () => {
  await cleanup();
  await stopPostgres();
});
test.run();
