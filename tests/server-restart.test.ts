// The server as a real process: SIGKILL it and start it again on the same
// directory. Every acknowledged submit is still there; leases held when it
// died get a fresh full timeout, then the expiry rules; a command's log lines
// across both processes tell its story; a second server on a directory in
// use, or on a busy port, exits with a message that says so. What holds for
// any store runs on the file store and on PostgreSQL (support/stores.ts); a
// lease's fresh timeout and the directory's lock are the file store's own
// (on PostgreSQL deadlines live on the database's clock, and any number of
// servers share it).
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { call } from './support/http.ts';
import { cleanup, Proc, startServer, tempDir, type LogLine } from './support/processes.ts';
import { runSuites, STORES } from './support/stores.ts';

async function submitDelay(url: string, ms: number, headers: Record<string, string> = {}): Promise<string> {
  const r = await call(url, 'POST', '/commands', { type: 'DELAY', payload: { ms } }, headers);
  if (r.status !== 201) throw new Error(`submit answered ${r.status}: ${r.text}`);
  return r.body.commandId;
}

async function listAll(url: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const r: { status: number; body: { commands: Array<{ id: string }>; nextCursor: string | null } } = await call(
      url,
      'GET',
      `/commands?limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`,
    );
    assert.is(r.status, 200);
    ids.push(...r.body.commands.map((c) => c.id));
    cursor = r.body.nextCursor;
  } while (cursor !== null);
  return ids;
}

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const test = suite(store.label('server restart'));
  test.after(cleanup);

  test('SIGKILL after N acknowledged submits, restart on the same store: all N are there', async () => {
    const dir = tempDir();
    const args = await store.serverArgs();
    const first = await startServer(dir, args);
    const N = 60;
    const acked: string[] = [];
    const keyed = new Map<string, string>(); // idempotency key -> id
    let sent = 0;
    let killed: Promise<void> | undefined;
    // 16 clients submit back to back; the kill lands on the N-th acknowledgement
    // with the others in flight (those may or may not survive: nobody was told).
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (!killed) {
          const i = sent++;
          const key = i % 4 === 0 ? `key-${i}` : undefined;
          let id: string;
          try {
            id = await submitDelay(first.url, i, key ? { 'idempotency-key': key } : {});
          } catch {
            return; // the server died under this request
          }
          if (killed) return; // acknowledged after the kill was decided: not counted
          acked.push(id);
          if (key) keyed.set(key, id);
          if (acked.length === N) killed = first.proc.kill('SIGKILL');
        }
      }),
    );
    await killed;
    assert.is(acked.length, N);

    const second = await startServer(dir, args);
    if (store.name === 'file') {
      const recovered = second.proc.lines.find((l) => l.msg === 'recovered')!;
      assert.ok(Number(recovered.commands) >= N, `recovered ${String(recovered.commands)} commands`);
    }
    const all = new Set(await listAll(second.url));
    for (const id of acked) assert.ok(all.has(id), `acknowledged ${id} is gone after the restart`);
    assert.ok(all.size <= sent, 'more commands than were ever submitted');
    for (const id of acked.slice(0, 5)) {
      const r = await call(second.url, 'GET', `/commands/${id}`);
      assert.equal([r.status, r.body.status], [200, 'PENDING']);
    }
    // Idempotency keys survive too: a retry after the restart gets the same id.
    for (const [key, id] of [...keyed].slice(0, 5)) {
      const i = Number(key.slice(4));
      const r = await call(second.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: i } }, { 'idempotency-key': key });
      assert.equal([r.status, r.body.commandId], [200, id], key);
    }
    // And the restarted server takes new work.
    const fresh = await submitDelay(second.url, 1);
    assert.not.ok(all.has(fresh));
    assert.is((await listAll(second.url)).length, all.size + 1);
    await second.proc.kill('SIGTERM');
  });

  test('a busy port: exit 1 saying so, and the store is left free for the next start', async () => {
    const busy = await startServer(tempDir());
    const dir = tempDir();
    const args = await store.serverArgs();
    const clash = new Proc('server', ['server.ts', '--state-dir', dir, '--port', String(busy.port), ...args]);
    const { code } = await clash.exited;
    assert.is(code, 1);
    assert.match(clash.stderr, /port is already in use/);
    const t0 = Date.now();
    const next = await startServer(dir, args);
    assert.ok(Date.now() - t0 < 10_000);
    assert.is((await call(next.url, 'GET', '/readyz')).status, 200);
  });

  test('SIGTERM: a clean exit 0 with nothing lost; the restart takes the store at once', async () => {
    const dir = tempDir();
    const args = await store.serverArgs();
    const first = await startServer(dir, args);
    const id = await submitDelay(first.url, 5);
    first.proc.child.kill('SIGTERM');
    const { code } = await first.proc.exited;
    assert.is(code, 0);
    assert.ok(first.proc.lines.some((l) => l.msg === 'shutting down'));
    const second = await startServer(dir, args);
    assert.is((await call(second.url, 'GET', `/commands/${id}`)).body.status, 'PENDING');
  });

  suites.push(test);
}

const fileOnly = suite('server restart: lease grace and the directory lock [file store only]');
fileOnly.after(cleanup);

fileOnly('leases held at the kill get a fresh full timeout after the restart, then the expiry rules', async () => {
  // Long enough that the checks right after the restart land well inside the grace on a busy machine.
  const LEASE_MS = 2000;
  const dir = tempDir();
  const first = await startServer(dir, ['--lease-timeout', `${LEASE_MS}ms`]);
  const unbegun = await submitDelay(first.url, 1);
  const kept = await submitDelay(first.url, 2);
  const abandoned = await submitDelay(first.url, 3);
  const claim = await call(first.url, 'POST', '/agent/claim', { agentId: 'agent-1', max: 3 });
  const leases = new Map<string, number>(claim.body.commands.map((c: { id: string; lease: number }) => [c.id, c.lease]));
  assert.equal([...leases.keys()], [unbegun, kept, abandoned]);
  const ref = (id: string): { id: string; lease: number } => ({ id, lease: leases.get(id)! });
  const lastHeard = Date.now();
  await first.proc.kill('SIGKILL');

  // Down for longer than a lease: a server that kept wall-clock deadlines
  // across the restart would expire all three the moment it came back.
  await new Promise((r) => setTimeout(r, Math.max(0, lastHeard + 1.5 * LEASE_MS - Date.now())));
  const second = await startServer(dir, ['--lease-timeout', `${LEASE_MS}ms`]);
  // Logged just before the lease clock starts: every fresh deadline is at least LEASE_MS after it.
  const recovered = second.proc.lines.find((l) => l.msg === 'recovered')!;
  const states = await Promise.all([unbegun, kept, abandoned].map(async (id) => (await call(second.url, 'GET', `/commands/${id}`)).body.state));
  assert.equal(states, ['RUNNING', 'RUNNING', 'RUNNING'], 'a lease expired at startup instead of getting its grace');

  // Not heard from since the restart: offline, but still shown holding its commands.
  const agents = (await call(second.url, 'GET', '/agents')).body.agents;
  assert.equal(agents.map((a: Record<string, unknown>) => [a.id, a.status, a.lastSeen]), [['agent-1', 'offline', null]]);
  assert.equal([...agents[0].commands].sort(), [unbegun, kept, abandoned].sort());

  // The agent is back for two of them: it heartbeats them, as an agent does, and keeps them.
  const beat = (): Promise<unknown[]> =>
    call(second.url, 'POST', '/agent/heartbeat', { agentId: 'agent-1', leases: [ref(unbegun), ref(kept)] }).then((r) => r.body.revoked);
  assert.equal(await beat(), []);
  const revoked: unknown[] = [];
  let beatOut: Promise<unknown> = Promise.resolve();
  const beating = setInterval(() => (beatOut = beat().then((r) => revoked.push(...r), () => {})), LEASE_MS / 8);
  beating.unref(); // a failed assertion below must not keep the file running

  // The third is not heartbeated: RUNNING, so FAILED AGENT_LOST, no sooner than a full timeout after startup.
  const expired = await second.proc.waitFor((l: LogLine) => l.msg === 'lease expired' && l.id === abandoned, 10_000, 'expiry of the abandoned lease');
  assert.equal([expired.state, expired.error], ['FAILED', 'AGENT_LOST']);
  const graceMs = Date.parse(String(expired.t)) - Date.parse(String(recovered.t));
  assert.ok(graceMs >= LEASE_MS, `expired ${graceMs} ms after the restart, before a full lease timeout`);

  // The beats stop before the finish: one answered after it would rightly revoke the finished command.
  clearInterval(beating);
  await beatOut;
  assert.equal(revoked, [], 'a heartbeated lease was revoked');

  // The agent's work from before the kill is accepted: the command held RUNNING finishes.
  const done = await call(second.url, 'POST', '/agent/finish', { agentId: 'agent-1', items: [{ ...ref(kept), outcome: 'COMPLETED', result: { ok: true, tookMs: 2 } }] });
  assert.is(done.status, 200, done.text);
  // The one it never began, it gives back.
  assert.is((await call(second.url, 'POST', '/agent/release', { agentId: 'agent-1', items: [ref(unbegun)] })).status, 200);
  assert.is((await call(second.url, 'GET', `/commands/${unbegun}`)).body.status, 'PENDING');
  const lost = await call(second.url, 'GET', `/commands/${abandoned}`);
  assert.equal([lost.body.status, lost.body.error], ['FAILED', 'AGENT_LOST']);

  // grep <id> across both processes' stdout tells the command's whole story.
  const story = [first, second].flatMap((srv) =>
    srv.proc.stdout.split('\n').filter((line) => line.includes(kept)).map((line) => JSON.parse(line) as LogLine),
  );
  assert.equal(
    story.filter((l) => l.msg === 'transition').map((l) => `${l.event}:${l.state}`),
    ['submit:PENDING', 'claim-start:RUNNING', 'finish:COMPLETED'],
  );
  assert.ok(story.every((l) => l.id === kept));
  await second.proc.kill('SIGTERM');
});

fileOnly('two servers on one directory: the second exits non-zero naming the directory; the first carries on', async () => {
  const dir = tempDir();
  const first = await startServer(dir);
  const id = await submitDelay(first.url, 1);
  const second = new Proc('server', ['server.ts', '--state-dir', dir, '--port', '0']);
  const { code } = await second.exited;
  assert.ok(code !== 0 && code !== null, `second server exit code ${code}`);
  assert.ok(second.stderr.includes(dir), `stderr does not name ${dir}: ${second.stderr}`);
  assert.match(second.stderr, /in use/);
  assert.match(second.stderr, new RegExp(`pid ${first.proc.pid}`));
  assert.not.match(second.stderr, /\n\s+at /, 'a stack trace instead of a message');
  assert.not.ok(second.lines.some((l) => l.msg === 'listening'));
  // The first still owns the directory and works.
  assert.is((await call(first.url, 'GET', `/commands/${id}`)).status, 200);
  assert.is((await call(first.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } })).status, 201);
  await first.proc.kill('SIGTERM');
});

runSuites(...suites, fileOnly);
