// Several keel servers on one PostgreSQL database, with real agents given the
// servers' list (--server A,B):
// - an agent whose server is SIGKILLed in the middle of a command beats its
//   lease at the other server and reports there: the command completes once;
// - two servers, four agents split between them, 2,000 HTTP_GET_JSON commands
//   to a local target, the servers SIGKILLed and restarted at random (one at
//   a time, a bounded number of times): every target hit exactly once, every
//   command COMPLETED, nothing left ASSIGNED, RUNNING or PENDING.
// KEEL_TEST_SEED replays a kill schedule; a failure prints the seed it used.
import { setTimeout as sleep } from 'node:timers/promises';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mulberry32 } from '../lib/prng.ts';
import type { CommandView } from '../lib/protocol.ts';
import { linesAbout, submit, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { freshDatabase, stopPostgres } from './support/postgres.ts';
import { cleanup, startAgent, startServer, tempDir, type LogLine, type Proc, type ServerHandle } from './support/processes.ts';

const test = suite('several servers on one PostgreSQL');
let target: Target;

test.before(async () => {
  target = await startTarget();
});
test.after(async () => {
  await cleanup();
  await target.close();
  await stopPostgres();
});

const MOVED = 'server failed a call; moving to the next in the list';

/** A keel server on `db` that can be SIGKILLed and started again on the same port. */
class FleetServer {
  handle: ServerHandle | undefined;
  port = 0;
  readonly name: string;
  private readonly args: string[];
  private readonly dir = tempDir();

  constructor(name: string, db: string, extra: string[]) {
    this.name = name;
    this.args = ['--store', db, ...extra];
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.handle = await startServer(this.dir, this.args, {}, this.port);
    this.port = this.handle.port;
  }

  async kill(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.proc.kill('SIGKILL');
  }
}

test('a server SIGKILLed mid-command: the agent beats its lease at the other and reports there; the command completes once', async () => {
  const db = await freshDatabase();
  // A lease shorter than the command: it lives only if the beats reach the other server.
  const a = new FleetServer('a', db, ['--lease-timeout', '2s']);
  const b = new FleetServer('b', db, ['--lease-timeout', '2s']);
  await a.start();
  await b.start();
  const agent = startAgent(`${a.url},${b.url}`, tempDir());
  await agent.waitForMsg('agent ready');
  const id = await submit(a.url, 'DELAY', { ms: 5000 });
  await agent.waitFor((l: LogLine) => l.msg === 'executing' && l.id === id, 15_000, 'the command executing');
  await a.kill();
  const v = await waitFinal(b.url, id, 30_000);
  assert.is(v.status, 'COMPLETED', `${v.state}: ${v.error}`);
  assert.is(v.attempts.length, 1, 'executed once');
  await agent.waitFor((l: LogLine) => l.msg === MOVED && l.from === a.url && l.to === b.url, 5000, 'the move to b');
  assert.not.ok(agent.lines.some((l) => l.msg === 'lease revoked'), 'the lease was never lost');
  await agent.kill('SIGTERM');
});

// The big run. Bounded: at most MAX_KILLS kills, none after KILL_WINDOW_MS.
const COMMANDS = 2000;
const BATCH = 100;
const MAX_KILLS = 8;
const KILL_WINDOW_MS = 90_000;
// Each command's request takes this long at the target, so the run lasts long enough to be interrupted.
const PAUSE_MS = 100;

test('two servers, four agents, 2,000 HTTP_GET_JSON, servers SIGKILLed and restarted at random: every target hit once, nothing lost, nothing stuck', async () => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const rand = mulberry32(seed);
  const why = (s: string): string => `${s} (KEEL_TEST_SEED=${seed})`;
  const db = await freshDatabase();
  const servers = [new FleetServer('a', db, ['--lease-timeout', '15s']), new FleetServer('b', db, ['--lease-timeout', '15s'])];
  for (const s of servers) await s.start();
  const [a, b] = servers as [FleetServer, FleetServer];
  // Two agents list a first, two b first: the fleet starts split between the servers.
  const agents: Proc[] = [0, 1, 2, 3].map((i) => startAgent(i % 2 === 0 ? `${a.url},${b.url}` : `${b.url},${a.url}`, tempDir(), ['--concurrency', '4', '--id', `fleet-${i}`]));
  await Promise.all(agents.map((p) => p.waitForMsg('agent ready')));

  const url = (i: number): string => `${target.url}/pause/${PAUSE_MS}?fleet=${i}`;
  let done = false;
  let kills = 0;
  // One server down at a time, at random moments, for a random while.
  const chaos = (async () => {
    const started = performance.now();
    while (!done && kills < MAX_KILLS && performance.now() - started < KILL_WINDOW_MS) {
      await sleep(300 + rand() * 1200);
      if (done) break;
      const victim = servers[rand() < 0.5 ? 0 : 1]!;
      await victim.kill();
      kills++;
      await sleep(100 + rand() * 900);
      await victim.start();
    }
  })();

  // Submitted in batches, each to either server, with an idempotency key per
  // command: a batch whose answer was lost to a kill goes again (to the other
  // server) and gets the same ids.
  const ids: string[] = [];
  try {
    for (let from = 0; from < COMMANDS; from += BATCH) {
      const commands = Array.from({ length: BATCH }, (_, k) => ({ type: 'HTTP_GET_JSON', payload: { url: url(from + k) }, idempotencyKey: `fleet-${from + k}` }));
      for (let tries = 0; ; tries++) {
        const via = servers[(from / BATCH + tries) % 2]!;
        const r = await call(via.url, 'POST', '/commands/batch', { commands }).catch(() => undefined);
        if (r?.status === 201 || r?.status === 200) {
          ids.push(...(r.body.commandIds as string[]));
          break;
        }
        assert.ok(tries < 200, why(`batch at ${from} not accepted after 200 tries; last ${r?.status}: ${r?.text}`));
        await sleep(50);
      }
    }
    assert.is(new Set(ids).size, COMMANDS);

    // Every command final, read through whichever server is up.
    const final: CommandView[] = [];
    for (const id of ids) {
      for (let tries = 0; ; tries++) {
        const via = servers.find((s) => s.handle) ?? a;
        const v = await waitFinal(via.url, id, 60_000).catch((err: Error) => (tries < 20 ? undefined : assert.unreachable(why(err.message))));
        if (v) {
          final.push(v);
          break;
        }
        await sleep(100);
      }
    }
    done = true;
    await chaos;
    assert.ok(kills >= 2, why(`only ${kills} kills: too few to prove anything`));

    for (const v of final) assert.is(v.status, 'COMPLETED', why(`${v.id}: ${v.state} ${v.error}`));
    const hits = Array.from({ length: COMMANDS }, (_, i) => target.hits(`/pause/${PAUSE_MS}?fleet=${i}`));
    const wrong = hits.map((n, i) => [i, n]).filter(([, n]) => n !== 1);
    assert.equal(wrong, [], why('targets not hit exactly once: [index, hits]'));
    for (const v of final) assert.is(v.attempts.length, 1, why(`${v.id} executed ${v.attempts.length} times`));

    // Nothing stuck: with both servers up, neither counts a command that is not final.
    for (const s of servers) if (!s.handle) await s.start();
    for (const s of servers) {
      const m = (await call(s.url, 'GET', '/metrics')).text;
      for (const state of ['PENDING', 'ASSIGNED', 'RUNNING']) {
        assert.match(m, new RegExp(`^keel_commands\\{state="${state}"\\} 0$`, 'm'), why(`${s.name} counts ${state} commands`));
      }
      assert.match(m, new RegExp(`^keel_commands\\{state="COMPLETED"\\} ${COMMANDS}$`, 'm'), why(`${s.name}: COMPLETED count`));
    }
    // Every agent worked, and at least one was moved by a kill.
    const perAgent = agents.map((p) => p.lines.filter((l) => l.msg === 'executing').length);
    assert.is(perAgent.reduce((x, y) => x + y, 0), COMMANDS, why(`executions per agent: ${perAgent.join(', ')}`));
    assert.ok(agents.some((p) => p.lines.some((l) => l.msg === MOVED)), why('no agent moved between servers'));
    for (const id of ids.slice(0, 50)) assert.is(linesAbout(agents, 'executing', id).length, 1, why(`${id} executing lines`));
  } finally {
    done = true;
    await chaos;
    await Promise.all(agents.map((p) => p.kill('SIGTERM')));
  }
});

test.run();
