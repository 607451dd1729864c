// The FSM's job semantics, pure: scheduled commands, retries with backoff,
// timeouts, and cancel of waiting commands; every target state the table names
// is reached by some case here. Then a property over random event sequences:
// a final command never changes, executions never exceed retry.attempts, and
// a trail never holds two attempts RUNNING at once.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isFinal, retriesAfter, step, TRANSITIONS, type Command, type CommandEvent, type EventType, type StepResult } from '../state/command-fsm.ts';
import { CommandTable } from '../state/command-table.ts';
import { attemptsOf, decodeTrail } from '../state/command-line.ts';
import { AGENT_LOST, CANCELED, TIMEOUT, type CommandOptions, type CommandState, type RetryPolicy } from '../state/command-types.ts';
import { backoffDelay, retryAt } from '../state/retry-backoff.ts';
import { mulberry32 } from '../lib/prng.ts';

const test = suite('fsm: scheduling, retries, timeouts');
const at = 1_700_000_000_000;
const retry3: RetryPolicy = { attempts: 3, backoff: 'exponential', delayMs: 1000, maxDelayMs: 60_000 };

function moved(r: StepResult): Command {
  if (r.kind !== 'next') throw new assert.Assertion({ message: `expected a move, got ${JSON.stringify(r)}`, operator: 'step', expects: 'next', actual: r.kind });
  return r.cmd;
}
const submit = (opts?: CommandOptions, when = at): CommandEvent => ({ type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 5 }, at: when, ...(opts ? { opts } : {}) });
const claim = (lease: number, agentId = 'a1'): CommandEvent => ({ type: 'claim', agentId, lease, at });
const start = (lease: number, agentId = 'a1'): CommandEvent => ({ type: 'start', agentId, lease, at });
const fail = (lease: number, error = 'boom', retryAt?: number): CommandEvent => ({ type: 'finish', agentId: 'a1', lease, outcome: 'FAILED', result: { error }, error, at, ...(retryAt ? { retryAt } : {}) });
const complete = (lease: number): CommandEvent => ({ type: 'finish', agentId: 'a1', lease, outcome: 'COMPLETED', result: { ok: true }, error: null, at });
const due = (when: number): CommandEvent => ({ type: 'due', at: when });

function walk(...events: CommandEvent[]): Command {
  let cmd: Command | undefined;
  for (const ev of events) cmd = moved(step(cmd, ev));
  return cmd!;
}
/** Executing attempt n (lease n) of a command with retry3, from PENDING. */
const runAttempt = (cmd: Command, n: number): Command => walk2(cmd, claim(n), start(n));
function walk2(cmd: Command, ...events: CommandEvent[]): Command {
  for (const ev of events) cmd = moved(step(cmd, ev));
  return cmd;
}

test('every target the table names is reached, from the state it names', () => {
  const reached = new Set<string>();
  const note = (ev: EventType, from: CommandState | 'new', cmd: Command): void => void reached.add(`${ev}:${from}:${cmd.state}`);
  const pending = walk(submit());
  const scheduled = walk(submit({ runAt: at + 5000 }));
  const retrying = walk(submit({ retry: retry3 }), claim(1), start(1));
  const plainRunning = walk(submit(), claim(1), start(1));
  const waiting = walk2(retrying, fail(1, 'boom', at + 1000));
  note('submit', 'new', pending);
  note('submit', 'new', scheduled);
  note('claim-start', 'PENDING', walk2(pending, { type: 'claim-start', agentId: 'a1', lease: 1, at }));
  note('claim', 'PENDING', walk2(pending, claim(1)));
  note('start', 'ASSIGNED', walk2(pending, claim(1), start(1)));
  note('finish', 'RUNNING', walk2(plainRunning, complete(1)));
  note('finish', 'RUNNING', walk2(plainRunning, fail(1)));
  note('finish', 'RUNNING', waiting);
  note('release', 'ASSIGNED', walk2(pending, claim(1), { type: 'release', agentId: 'a1', lease: 1, at }));
  note('release', 'RUNNING', walk2(plainRunning, { type: 'release', agentId: 'a1', lease: 1, at }));
  note('release', 'RUNNING', walk2(plainRunning, { type: 'cancel', at }, { type: 'release', agentId: 'a1', lease: 1, at }));
  note('expire', 'ASSIGNED', walk2(pending, claim(1), { type: 'expire', lease: 1, at }));
  note('expire', 'RUNNING', walk2(plainRunning, { type: 'expire', lease: 1, at }));
  note('expire', 'RUNNING', walk2(retrying, { type: 'expire', lease: 1, at }));
  for (const c of [scheduled, pending, walk2(pending, claim(1)), plainRunning, waiting]) note('cancel', c.state, walk2(c, { type: 'cancel', at }));
  note('due', 'SCHEDULED', walk2(scheduled, due(at + 5000)));
  note('due', 'RETRY_WAIT', walk2(waiting, due(at + 1000)));
  note('timeout', 'RUNNING', walk2(plainRunning, { type: 'timeout', lease: 1, at }));
  note('timeout', 'RUNNING', walk2(retrying, { type: 'timeout', lease: 1, at }));
  for (const [ev, row] of Object.entries(TRANSITIONS)) {
    for (const [from, targets] of Object.entries(row)) {
      for (const to of targets!) assert.ok(reached.has(`${ev}:${from}:${to}`), `no case takes ${ev} from ${from} to ${to}`);
    }
  }
});

test('a command whose runAt is ahead is SCHEDULED, and becomes PENDING only once it is due', () => {
  const s = walk(submit({ runAt: at + 5000, priority: 7 }));
  assert.equal([s.state, s.runAt, s.priority], ['SCHEDULED', at + 5000, 7]);
  const early = step(s, due(at + 4999));
  assert.is(early.kind, 'rejected');
  assert.is(step(s, claim(1)).kind, 'rejected', 'a SCHEDULED command cannot be claimed');
  const p = moved(step(s, due(at + 6000)));
  assert.equal([p.state, p.runAt], ['PENDING', at + 5000]);
  assert.is(step(p, due(at + 7000)).kind, 'rejected', 'due twice');
  // A runAt already past (or now) is PENDING at once.
  assert.is(walk(submit({ runAt: at })).state, 'PENDING');
  assert.is(walk(submit({ runAt: at - 1 })).state, 'PENDING');
});

test('cancel of a SCHEDULED or RETRY_WAIT command fails it CANCELED for good', () => {
  const waiting = walk2(walk(submit({ retry: retry3 })), claim(1), start(1), fail(1, 'boom', at + 1000));
  for (const c of [walk(submit({ runAt: at + 5000 })), waiting]) {
    const x = moved(step(c, { type: 'cancel', at }));
    assert.equal([x.state, x.error, x.nextAttemptAt], ['FAILED', CANCELED, null], c.state);
    assert.is(step(x, due(at + 10_000)).kind, 'rejected');
    assert.is(step(x, { type: 'cancel', at }).kind, 'same');
  }
});

test('a failed attempt with attempts left waits in RETRY_WAIT until its retryAt, then runs again; the last failure is final', () => {
  let c = runAttempt(walk(submit({ retry: retry3 })), 1);
  assert.is(c.executions, 1);
  c = walk2(c, fail(1, 'HTTP_STATUS_503', at + 1000));
  assert.equal([c.state, c.error, c.nextAttemptAt, c.agentId], ['RETRY_WAIT', 'HTTP_STATUS_503', at + 1000, 'a1']);
  assert.is(step(c, claim(2)).kind, 'rejected', 'not claimable while waiting');
  assert.is(step(c, due(at + 999)).kind, 'rejected', 'not before its time');
  // The agent's finish, retried, is the same transition; another outcome conflicts.
  assert.is(step(c, fail(1, 'HTTP_STATUS_503')).kind, 'same');
  assert.equal((step(c, complete(1)) as { error: string }).error, 'CONFLICT');
  c = walk2(c, due(at + 1000));
  assert.equal([c.state, c.error, c.result, c.nextAttemptAt, c.agentId], ['PENDING', null, null, null, null]);
  assert.equal((step(c, fail(1, 'HTTP_STATUS_503')) as { error: string }).error, 'STALE_LEASE', 'the old lease is gone once it is PENDING again');
  c = walk2(runAttempt(c, 2), fail(2, 'boom', at + 2000));
  assert.equal([c.state, c.executions], ['RETRY_WAIT', 2]);
  c = walk2(runAttempt(walk2(c, due(at + 2000)), 3), fail(3, 'last', at + 4000));
  assert.equal([c.state, c.error, c.executions, c.nextAttemptAt], ['FAILED', 'last', 3, null]);
});

test('a command that succeeds on a later attempt is COMPLETED with no error; its trail lists every attempt', () => {
  const table = new CommandTable();
  const evs: CommandEvent[] = [submit({ retry: retry3 }), claim(1), start(1), fail(1, 'HTTP_STATUS_500, then ; more', at + 10), due(at + 10), claim(2, 'a2'), { type: 'start', agentId: 'a2', lease: 2, at: at + 11 }, { type: 'expire', lease: 2, at: at + 12, retryAt: at + 20 }, due(at + 20), claim(3), start(3), complete(3)];
  for (const ev of evs) {
    const cur = table.get('c1');
    table.apply({ id: 'c1', from: cur ? cur.state : null, version: cur ? cur.version : 0, ev });
  }
  const c = table.get('c1')!;
  assert.equal([c.state, c.error, c.executions], ['COMPLETED', null, 3]);
  const attempts = attemptsOf(decodeTrail(c));
  assert.equal(attempts.map((a) => [a.number, a.agentId, a.outcome, a.error]), [
    [1, 'a1', 'FAILED', 'HTTP_STATUS_500, then ; more'],
    [2, 'a2', 'FAILED', AGENT_LOST],
    [3, 'a1', 'COMPLETED', null],
  ]);
  assert.equal([attempts[1]!.startedAt, attempts[1]!.finishedAt], [at + 11, at + 12]);
});

test('the attempts list leaves out a run given back unbegun (RUNNING straight to PENDING)', () => {
  const trail = [
    { event: 'submit', to: 'PENDING', at: 1 },
    { event: 'claim-start', to: 'RUNNING', at: 2, agentId: 'a1', lease: 1 },
    { event: 'release', to: 'PENDING', at: 3, agentId: 'a1', lease: 1 },
    { event: 'claim-start', to: 'RUNNING', at: 4, agentId: 'a2', lease: 2 },
    { event: 'finish', to: 'COMPLETED', at: 5, agentId: 'a2', lease: 2 },
  ] as const;
  assert.equal(attemptsOf(trail as unknown as Parameters<typeof attemptsOf>[0]).map((a) => [a.number, a.agentId, a.outcome]), [[1, 'a2', 'COMPLETED']]);
});

test('what is retried: any failure but CANCELED, and nothing once a cancel was asked for', () => {
  const running = runAttempt(walk(submit({ retry: retry3 })), 1);
  assert.is(moved(step(running, fail(1, CANCELED))).state, 'FAILED');
  for (const error of ['boom', AGENT_LOST, TIMEOUT, 'INTERRUPTED: it may have reached the remote']) assert.ok(retriesAfter(running, error), error);
  const flagged = moved(step(running, { type: 'cancel', at }));
  assert.is(moved(step(flagged, fail(1, 'boom'))).state, 'FAILED');
  assert.is(moved(step(flagged, { type: 'expire', lease: 1, at })).state, 'FAILED');
  // Expiry and timeout of a command with attempts left: RETRY_WAIT with their own error.
  const lost = moved(step(running, { type: 'expire', lease: 1, at, retryAt: at + 500 }));
  assert.equal([lost.state, lost.error, lost.nextAttemptAt], ['RETRY_WAIT', AGENT_LOST, at + 500]);
  const late = moved(step(running, { type: 'timeout', lease: 1, at, retryAt: at + 500 }));
  assert.equal([late.state, late.error], ['RETRY_WAIT', TIMEOUT]);
  assert.is(step(running, { type: 'timeout', lease: 2, at }).kind, 'rejected', 'a timeout names the lease that runs');
});

test('without retry, every failure is final: at-most-once', () => {
  const running = walk(submit(), claim(1), start(1));
  assert.is(running.retry, null);
  for (const ev of [fail(1), { type: 'expire', lease: 1, at } as const, { type: 'timeout', lease: 1, at } as const]) assert.is(moved(step(running, ev)).state, 'FAILED', ev.type);
  assert.equal([moved(step(running, { type: 'timeout', lease: 1, at })).error], [TIMEOUT]);
  // attempts: 1 is the same as no retry.
  assert.is(walk(submit({ retry: { ...retry3, attempts: 1 } })).retry, null);
});

test('backoff: exponential doubles up to maxDelay, fixed stays; equal jitter keeps half of it', () => {
  assert.equal([1, 2, 3, 4, 10].map((n) => backoffDelay(retry3, n)), [1000, 2000, 4000, 8000, 60_000]);
  assert.equal([1, 5].map((n) => backoffDelay({ ...retry3, backoff: 'fixed' }, n)), [1000, 1000]);
  assert.is(retryAt(retry3, 2, at, () => 0), at + 1000);
  assert.is(retryAt(retry3, 2, at, () => 0.999999), at + 2000);
  assert.is(backoffDelay({ ...retry3, delayMs: 1000, maxDelayMs: 1000 }, 60), 1000, 'no overflow past maxDelay');
});

// --- the property -------------------------------------------------------------

const AGENTS = ['a1', 'a2'];
function randomEvent(rng: () => number, cmd: Command, t: number): CommandEvent {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const lease = rng() < 0.8 ? cmd.attempt : cmd.attempt + pick([-1, 1, 2]);
  const agentId = cmd.agentId && rng() < 0.8 ? cmd.agentId : pick(AGENTS);
  const retryAt = rng() < 0.7 ? t + Math.floor(rng() * 50) : undefined;
  const r = rng();
  if (r < 0.18) return { type: 'claim', agentId, lease: rng() < 0.85 ? cmd.attempt + 1 : lease, at: t };
  if (r < 0.34) return { type: 'start', agentId, lease, at: t };
  if (r < 0.5) {
    const ok = rng() < 0.3;
    return { type: 'finish', agentId, lease, outcome: ok ? 'COMPLETED' : 'FAILED', result: null, error: ok ? null : pick(['boom', CANCELED, 'HTTP_STATUS_503']), at: t, ...(retryAt ? { retryAt } : {}) };
  }
  if (r < 0.58) return { type: 'release', agentId, lease, at: t };
  if (r < 0.66) return { type: 'expire', lease, at: t, ...(retryAt ? { retryAt } : {}) };
  if (r < 0.74) return { type: 'timeout', lease, at: t, ...(retryAt ? { retryAt } : {}) };
  if (r < 0.78) return { type: 'cancel', at: t };
  return { type: 'due', at: t + Math.floor(rng() * 80) - 20 };
}

for (const seed of [11, 12, 13, 14, 15]) {
  test(`property, seed ${seed}: 300 random sequences; finals never change, attempts never exceed retry.attempts, one RUNNING attempt at a time`, () => {
    const rng = mulberry32(seed);
    const reached = new Set<CommandState>();
    for (let n = 0; n < 300; n++) {
      const attempts = 1 + Math.floor(rng() * 4);
      const opts: CommandOptions = { retry: { ...retry3, attempts } };
      if (rng() < 0.3) opts.runAt = at + Math.floor(rng() * 40);
      const table = new CommandTable();
      let t = at;
      table.apply({ id: 'c1', from: null, version: 0, ev: { type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 1 }, at: t, opts } });
      let finalLine: string | undefined;
      for (let k = 0; k < 60; k++) {
        const cmd = table.get('c1')!;
        reached.add(cmd.state);
        const ev = randomEvent(rng, cmd, (t += 1 + Math.floor(rng() * 10)));
        const r = step(cmd, ev);
        if (finalLine !== undefined) {
          assert.is.not(r.kind, 'next', `final command moved by ${JSON.stringify(ev)}`);
          continue;
        }
        if (r.kind !== 'next') continue;
        table.apply({ id: 'c1', from: cmd.state, version: cmd.version, ev });
        const after = table.get('c1')!;
        assert.ok(after.executions <= attempts, `${after.executions} executions, attempts ${attempts}`);
        const tried = attemptsOf(decodeTrail(after));
        assert.is(tried.length, after.executions, 'the trail lists each execution once');
        assert.ok(tried.filter((a) => a.outcome === null).length <= (after.state === 'RUNNING' ? 1 : 0), `open attempts: ${JSON.stringify(tried)}`);
        if (after.state === 'RETRY_WAIT') assert.ok(after.nextAttemptAt! >= ev.at, 'a retry is never due before the failure');
        if (isFinal(after.state)) finalLine = JSON.stringify(after);
      }
      if (finalLine !== undefined) assert.is(JSON.stringify(table.get('c1')), finalLine);
    }
    assert.equal([...reached].sort(), ['ASSIGNED', 'COMPLETED', 'FAILED', 'PENDING', 'RETRY_WAIT', 'RUNNING', 'SCHEDULED']);
  });
}

test.run();
