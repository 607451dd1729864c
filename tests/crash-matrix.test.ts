// The crash matrix: for every named crash point on both sides, run a small
// workload, SIGKILL the process at that point (KEEL_CRASH_AT), restart it,
// and check what docs/design.md promises:
//   - no acknowledged command lost (every returned commandId still answers 200);
//   - no HTTP_GET_JSON sent twice (the local target counts requests per command);
//   - every command final, in the state this row documents;
//   - the shown status never went backwards (polled throughout);
//   - both journals replay cleanly afterwards (no cut, no repair, no error).
// The agent's rows run against a server on PostgreSQL too: where an agent dies
// does not depend on the server's store (support/stores.ts). The server's own
// points on PostgreSQL are in pg-crash.test.ts.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandView, DelayResult, HttpGetJsonResult } from '../lib/protocol.ts';
import { CommandStore } from '../state/command-store.ts';
import { Ledger } from '../state/ledger.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { cleanup, Proc, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { StatusWatch } from './support/status-watch.ts';
import { fileStore, postgresStore, runSuites, storedCommands, STORES, type StoreUnderTest } from './support/stores.ts';

type Kind = 'DELAY' | 'HTTP';
interface Row {
  side: 'server' | 'agent';
  point: string;
  /** The one command of this kind goes through the crash; a second, plain DELAY follows it. */
  kind: Kind;
  /** Extra server flags for this row. */
  serverFlags?: string[];
  /** Submitted before the crash to make the point reachable (snapshots need journal bytes). */
  filler?: number;
  /** The crashing command's expected end: status and, for FAILED, the error. */
  /** `executions`: the runs in its attempts list (a lease given back unbegun is not one). */
  expect: { status: 'COMPLETED' | 'FAILED'; error?: RegExp; executions?: number };
  /** Job options for the crashing command (retry, delay, timeout). */
  opts?: Record<string, unknown>;
  /** The DELAY command's ms, if not DELAY_MS. */
  delayMs?: number;
  /** The HTTP command's target path (default /json) and how often it may be requested (default once). */
  http?: { path: string; maxHits: number; expectStatus?: string };
  /** A ghost agent claims the command first: and vanishes (`claim`), or keeps heartbeating, wedged (`wedged`). */
  ghost?: 'claim' | 'wedged';
  /** The crashed agent never comes back (another one, on its own ledger, runs the rest). */
  agentGone?: boolean;
  /** The server is paused (SIGSTOP) once the agent logs `executing`, and resumed once the agent died: the finish goes unanswered. */
  pauseServer?: boolean;
}

const DELAY_MS = 300;
const done = { status: 'COMPLETED' } as const;
const ROWS: Row[] = [
  // server: the journal's write/fsync gap and the reply gap, on different transitions
  { side: 'server', point: 'journal:written#1', kind: 'DELAY', expect: done }, // the submit itself
  { side: 'server', point: 'journal:written#2', kind: 'DELAY', expect: done }, // claim-and-start
  { side: 'server', point: 'journal:synced#2', kind: 'HTTP', expect: done }, // claim-and-start durable, reply lost
  { side: 'server', point: 'journal:synced#3', kind: 'HTTP', expect: done }, // finish (riding in a claim) durable, reply lost
  // server: mid-snapshot, each step of the sequence
  ...['snapshot:tmp-written', 'snapshot:rotated', 'snapshot:renamed', 'snapshot:segment-deleted'].map(
    (point): Row => ({ side: 'server', point, kind: 'DELAY', serverFlags: ['--snapshot-bytes', '4096'], filler: 12, expect: done }),
  ),
  // server: during lease expiry (a ghost agent claims and vanishes); the restart
  // grants a fresh lease, it expires again: claimed is RUNNING, so FAILED AGENT_LOST
  { side: 'server', point: 'server:lease-expiry', kind: 'DELAY', ghost: 'claim', expect: { status: 'FAILED', error: /^AGENT_LOST$/, executions: 1 } },
  // server: job semantics. Scheduled -> PENDING, killed before and after the due
  // records are durable; the restart promotes what fell due at once.
  ...['server:due', 'server:due-synced'].map((point): Row => ({ side: 'server', point, kind: 'DELAY', opts: { delay: '500ms' }, expect: done })),
  // RETRY_WAIT -> PENDING: the first attempt gets a 503, the second (after the crash) a 200.
  ...['server:due', 'server:due-synced'].map((point): Row => ({
    side: 'server', point, kind: 'HTTP', http: { path: '/flaky/1', maxHits: 2, expectStatus: '2xx' },
    opts: { retry: { attempts: 2, backoff: 'fixed', delay: '300ms' } }, expect: { status: 'COMPLETED', executions: 2 },
  })),
  // The server's timeout of a wedged attempt (its agent heartbeats but never finishes),
  // killed before and after the timeout is durable; the restart times it out again if needed.
  ...['server:timeout', 'server:timeout-synced'].map((point): Row => ({
    side: 'server', point, kind: 'DELAY', ghost: 'wedged', opts: { timeout: '100ms' }, expect: { status: 'FAILED', error: /^TIMEOUT$/, executions: 1 },
  })),
  // agent: each gap of the ledger sequence, for both command types.
  //   after-claim      the claim answer is in hand (the command RUNNING), nothing journaled:
  //                    the restarted agent's resuming claim lists it, it gives it back,
  //                    and it runs once, under the next lease
  //   after-executing  `executing` durable, nothing run: it may have run, as far as a
  //                    restart can tell (a DELAY resumes; an HTTP_GET_JSON is INTERRUPTED)
  //   after-done       `done` written (not synced: a SIGKILL keeps it), the finish not yet sent
  //   after-finish     the server answered the finish; `done` written and maybe not synced
  ...(['DELAY', 'HTTP'] as const).flatMap((kind) =>
    ['agent:after-claim', 'agent:after-executing', 'agent:after-done', 'agent:after-finish'].map(
      (point): Row => ({
        side: 'agent', point, kind,
        expect: point === 'agent:after-executing' && kind === 'HTTP' ? { status: 'FAILED', error: /^INTERRUPTED/ } : done,
      }),
    ),
  ),
  // The price of claim-and-start: killed after the claim answer, before `executing`,
  // and never back: the command expires like any RUNNING one, FAILED AGENT_LOST.
  { side: 'agent', point: 'agent:after-claim', kind: 'HTTP', agentGone: true, expect: { status: 'FAILED', error: /^AGENT_LOST$/, executions: 1 } },
  // The finish goes out and the server (paused) does not answer: the agent fsyncs
  // `done` while it retries, and is killed right after; the restart reports it.
  { side: 'agent', point: 'agent:done-synced', kind: 'DELAY', delayMs: 1500, pauseServer: true, expect: done },
  { side: 'agent', point: 'agent:done-synced', kind: 'HTTP', http: { path: '/pause/1500', maxHits: 1 }, pauseServer: true, expect: done },
  { side: 'agent', point: 'agent:mid-delay', kind: 'DELAY', expect: done },
  // A DELAY with a timeout, killed halfway: the restarted agent keeps the deadline
  // its ledger journaled (claimed.timeoutMs, executing.startedAt) and times it out.
  { side: 'agent', point: 'agent:mid-delay', kind: 'DELAY', delayMs: 3000, opts: { timeout: '2s' }, expect: { status: 'FAILED', error: /^TIMEOUT$/ } },
  { side: 'agent', point: 'agent:mid-http', kind: 'HTTP', expect: { status: 'FAILED', error: /^INTERRUPTED/ } },
];

let target: Target;
const suiteWithTarget = (name: string) => {
  const s = suite(name);
  s.before(async () => {
    target = await startTarget();
  });
  s.after(async () => {
    await cleanup();
    await target.close();
  });
  return s;
};
const test = suiteWithTarget('crash matrix [file store]');
const agentRowsOnPg = suiteWithTarget('crash matrix, the agent\'s rows [postgres store]');
const onPg = STORES.includes(postgresStore);

/** Submit until acknowledged, with one Idempotency-Key, riding out a server restart. */
async function submit(base: () => string, body: unknown, key: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await call(base(), 'POST', '/commands', body, { 'idempotency-key': key });
      if (r.status === 201 || r.status === 200) return r.body.commandId;
    } catch {
      // the server is down: it comes back below
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`submit ${key} never acknowledged`);
}

const rowName = (row: Row): string => `${row.side} killed at ${row.point} (${row.kind}${row.opts ? ` ${JSON.stringify(row.opts)}` : ''})`;
for (const row of ROWS) test(rowName(row), () => runRow(row, fileStore));
for (const row of ROWS.filter((r) => r.side === 'agent')) agentRowsOnPg(rowName(row), () => runRow(row, postgresStore));

async function runRow(row: Row, store: StoreUnderTest): Promise<void> {
  const serverDir = tempDir();
  const agentDir = tempDir();
  const crashEnv = { KEEL_CRASH_AT: row.point };
  const lease = row.ghost || row.agentGone ? '1s' : '10s';
  const storeArgs = await store.serverArgs();
  const serverArgs = ['--lease-timeout', lease, ...(row.serverFlags ?? []), ...storeArgs];
  let server: ServerHandle = await startServer(serverDir, serverArgs, row.side === 'server' ? crashEnv : {});
  const port = server.port;
  const url = server.url;
  const watch = new StatusWatch().poll(url);
  const tag = `${row.point.replace(/[^a-z0-9]/g, '-')}-${row.kind}`;
  const path = `${row.http?.path ?? '/json'}?${tag}`;
  const expectStatus = row.http?.expectStatus ? { expectStatus: row.http.expectStatus } : {};
  const body = {
    ...(row.kind === 'DELAY' ? { type: 'DELAY', payload: { ms: row.delayMs ?? DELAY_MS } } : { type: 'HTTP_GET_JSON', payload: { url: target.url + path, ...expectStatus } }),
    ...row.opts,
  };

  let crashed: Proc = server.proc;
  const ids: string[] = [];
  const restartServer = async (): Promise<void> => {
    const { signal } = await server.proc.exited;
    assert.is(signal, 'SIGKILL', `server did not die at ${row.point}: ${server.proc.stderr}`);
    server = await startServer(serverDir, serverArgs, {}, port);
  };
  let serverBack: Promise<void> | undefined;
  if (row.side === 'server') serverBack = restartServer();

  for (let i = 0; i < (row.filler ?? 0); i++) ids.push(await submit(() => url, { type: 'DELAY', payload: { ms: 0 } }, `${tag}-filler-${i}`));
  const id = await submit(() => url, body, `${tag}-main`);
  ids.push(id);
  watch.track(ids);

  let beating: NodeJS.Timeout | undefined;
  if (row.ghost) {
    const claim = await call(url, 'POST', '/agent/claim', { agentId: 'ghost', max: 10 });
    assert.is(claim.status, 200);
    if (row.ghost === 'wedged') {
      const leases = claim.body.commands.map((c: { id: string; lease: number }) => ({ id: c.id, lease: c.lease }));
      // Alive to the server, across its restart, but it never finishes.
      beating = setInterval(() => void call(url, 'POST', '/agent/heartbeat', { agentId: 'ghost', leases }).catch(() => {}), 200);
    }
  }
  // The agent joins now and rides out a server crash on its own.
  let agent = startAgent(url, agentDir, ['--id', `matrix-${tag}`], row.side === 'agent' ? crashEnv : {});
  if (row.side === 'agent') {
    crashed = agent;
    if (row.pauseServer) {
      await agent.waitFor((l) => l.msg === 'executing' && l.id === id, 30_000, 'the command begun');
      server.proc.child.kill('SIGSTOP');
      void agent.exited.then(() => server.proc.child.kill('SIGCONT'));
    }
    const { signal } = await agent.exited;
    assert.is(signal, 'SIGKILL', `agent did not die at ${row.point}:\n${agent.stdout.slice(-2000)}\n${agent.stderr}`);
    agent = row.agentGone ? startAgent(url, tempDir(), ['--id', `matrix-${tag}-other`]) : startAgent(url, agentDir, []);
  }
  await serverBack;
  ids.push(await submit(() => url, { type: 'DELAY', payload: { ms: 0 } }, `${tag}-after`));
  watch.track(ids);

  const finals: CommandView[] = [];
  for (const each of ids) {
    const r = await call(url, 'GET', `/commands/${each}?wait=30s`);
    assert.is(r.status, 200, `acknowledged command ${each} lost`);
    assert.ok(r.body.status === 'COMPLETED' || r.body.status === 'FAILED', `${each} not final: ${r.text}`);
    finals.push(r.body);
  }
  clearInterval(beating);
  await watch.stop();
  // A retried command goes back to PENDING between attempts, by design.
  if (!row.opts?.retry) assert.equal(watch.regressions, [], 'shown status went backwards');

  const main = finals.find((v) => v.id === id)!;
  assert.is(main.status, row.expect.status, `${row.point}: ${JSON.stringify(main)}`);
  if (row.expect.error) assert.match(main.error ?? '', row.expect.error);
  if (row.expect.executions) assert.is(main.attempts.length, row.expect.executions, JSON.stringify(main.attempts));
  if (row.kind === 'DELAY' && main.status === 'COMPLETED') assert.ok((main.result as DelayResult).tookMs >= (row.delayMs ?? DELAY_MS));
  if (row.kind === 'HTTP') {
    assert.ok(target.hits(path) <= (row.http?.maxHits ?? 1), `${path} requested ${target.hits(path)} times`);
    if (main.status === 'COMPLETED') assert.is((main.result as HttpGetJsonResult).status, 200);
  }
  for (const v of finals) if (v.id !== id) assert.is(v.status, 'COMPLETED', `bystander ${v.id}: ${JSON.stringify(v)}`);
  assert.ok(crashed.stderr.includes(`"point":"${row.point.split('#')[0]}"`), 'the crash was not at the named point');

  // Both journals (or the server's database) hold every command, and replay cleanly once their processes are gone.
  await agent.kill('SIGTERM');
  await server.proc.kill('SIGTERM');
  const notes: string[] = [];
  assert.is((await storedCommands(serverDir, storeArgs, (m) => notes.push(m))).size, ids.length);
  const ledger = await Ledger.open(agentDir, { log: (m) => notes.push(m) });
  assert.equal(ledger.open(), [], 'ledger has unsettled entries');
  await ledger.close();
  assert.equal(notes.filter((n) => !n.startsWith('snapshot written')), [], 'replay reported damage');
}

// Retention: the server keeps --retain-max 4 final commands and is killed
// right after a forget is queued (in memory, not yet durable) or at a step of
// a snapshot that leaves forgotten commands out. Afterwards every command
// acknowledged is either held and final or gone with a 404 that says it may
// have expired; exactly 4 final ones are held; a second restart brings none
// back; no HTTP_GET_JSON was sent twice; the journals replay cleanly.
const RETENTION_POINTS = ['retention:forgotten#3', 'snapshot:tmp-written#3', 'snapshot:renamed#3', 'snapshot:segment-deleted#3'];
const RETAIN = 4;
for (const point of RETENTION_POINTS) {
  test(`server killed at ${point} with --retain-max ${RETAIN}`, async () => {
    const serverDir = tempDir();
    const agentDir = tempDir();
    const serverArgs = ['--lease-timeout', '10s', '--retain-max', String(RETAIN), '--snapshot-bytes', '4096'];
    let server = await startServer(serverDir, serverArgs, { KEEL_CRASH_AT: point });
    const { port, url } = server;
    const back = (async () => {
      const { signal } = await server.proc.exited;
      assert.is(signal, 'SIGKILL', `server did not die at ${point}: ${server.proc.stderr}`);
      assert.ok(server.proc.stderr.includes(`"point":"${point.split('#')[0]}"`), 'the crash was not at the named point');
      server = await startServer(serverDir, serverArgs, {}, port);
    })();
    const agent = startAgent(url, agentDir, ['--id', `retention-${point.replace(/[^a-z0-9]/g, '-')}`]);
    const tag = `retention-${point.replace(/[^a-z0-9]/g, '-')}`;
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const body = { type: 'HTTP_GET_JSON', payload: { url: `${target.url}/json?${tag}-${i}` } };
      ids.push(await submit(() => url, body, `${tag}-${i}`));
    }
    await back;

    /** Each command: 'held' (final) or 'gone' (404, may have expired). */
    const settle = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const id of ids) {
        const r = await call(url, 'GET', `/commands/${id}?wait=30s`);
        if (r.status === 404) {
          assert.is(r.body.mayHaveExpired, true, r.text);
          out.push('gone');
          continue;
        }
        assert.is(r.status, 200, `acknowledged command ${id} lost: ${r.text}`);
        assert.ok(r.body.status === 'COMPLETED' || r.body.status === 'FAILED', `${id} not final: ${r.text}`);
        out.push('held');
      }
      return out;
    };
    // Held ones are final: wait until the newest are (the older ones may go meanwhile).
    let seen = await settle();
    seen = await settle();
    assert.is(seen.filter((s) => s === 'held').length, RETAIN, seen.join(' '));
    assert.equal(seen.slice(-RETAIN), Array(RETAIN).fill('held'), 'the newest final commands are the ones kept');
    for (let i = 0; i < ids.length; i++) assert.ok(target.hits(`/json?${tag}-${i}`) <= 1, `command ${i} sent twice`);

    await agent.kill('SIGTERM');
    await server.proc.kill('SIGTERM');
    server = await startServer(serverDir, serverArgs, {}, port);
    assert.equal(await settle(), seen, 'a restart brought a forgotten command back');
    await server.proc.kill('SIGTERM');

    const notes: string[] = [];
    const store = await CommandStore.open(serverDir, { log: (m) => notes.push(m) });
    assert.is(store.table.size, RETAIN);
    await store.close();
    const ledger = await Ledger.open(agentDir, { log: (m) => notes.push(m) });
    assert.equal(ledger.open(), [], 'ledger has unsettled entries');
    await ledger.close();
    assert.equal(notes.filter((n) => !n.startsWith('snapshot written')), [], 'replay reported damage');
  });
}

runSuites(test, ...(onPg ? [agentRowsOnPg] : []));
