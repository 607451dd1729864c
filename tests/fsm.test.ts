// The command FSM against docs/design.md: every row of TRANSITIONS, and no move
// outside it; leases as fencing tokens; idempotent retries; cancel and expiry.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AGENT_LOST, CANCELED, type CommandState } from '../lib/protocol.ts';
import { COMMAND_STATES } from '../state/command-types.ts';
import { step, TRANSITIONS, type Command, type CommandEvent, type EventType, type StepResult } from '../state/command-fsm.ts';

const test = suite('fsm');

const at = 1_700_000_000_000;
const STATES = COMMAND_STATES;
const SHOWN: Record<CommandState, number> = { SCHEDULED: 0, PENDING: 0, ASSIGNED: 0, RUNNING: 1, RETRY_WAIT: 0, COMPLETED: 2, FAILED: 2 };
const retry = { attempts: 3, backoff: 'fixed', delayMs: 1000, maxDelayMs: 1000 } as const;

function moved(r: StepResult): Command {
  if (r.kind !== 'next') throw new assert.Assertion({ message: `expected a move, got ${JSON.stringify(r)}`, operator: 'step', expects: 'next', actual: r.kind });
  return r.cmd;
}

function rejected(r: StepResult, error: string, reason?: RegExp): void {
  assert.is(r.kind, 'rejected', JSON.stringify(r));
  if (r.kind !== 'rejected') return;
  assert.is(r.error, error, r.reason);
  if (reason) assert.match(r.reason, reason);
}

const submit = (id = 'c1'): CommandEvent => ({ type: 'submit', id, cmdType: 'DELAY', payload: { ms: 5 }, at });
const due = (when = at): CommandEvent => ({ type: 'due', at: when });
const timeout = (lease: number): CommandEvent => ({ type: 'timeout', lease, at });
const claimStart = (agentId: string, lease: number): CommandEvent => ({ type: 'claim-start', agentId, lease, at });
// claim and start: journals from before claim-and-start still replay through them.
const claim = (agentId: string, lease: number): CommandEvent => ({ type: 'claim', agentId, lease, at });
const start = (agentId: string, lease: number): CommandEvent => ({ type: 'start', agentId, lease, at });
const release = (agentId: string, lease: number): CommandEvent => ({ type: 'release', agentId, lease, at });
const expire = (lease: number): CommandEvent => ({ type: 'expire', lease, at });
const cancel: CommandEvent = { type: 'cancel', at };
const finish = (agentId: string, lease: number, outcome: 'COMPLETED' | 'FAILED' = 'COMPLETED', error = 'boom'): CommandEvent => ({
  type: 'finish',
  agentId,
  lease,
  outcome,
  result: outcome === 'COMPLETED' ? { ok: true, tookMs: 5 } : null,
  error: outcome === 'FAILED' ? error : null,
  at,
});

/** Run events from nothing; every one must move the command. */
function walk(...events: CommandEvent[]): Command {
  let cmd: Command | undefined;
  for (const ev of events) cmd = moved(step(cmd, ev));
  return cmd!;
}

/** A command in `state`, held by a1 under lease 1 where it is held at all. */
function inState(state: CommandState): Command {
  switch (state) {
    case 'SCHEDULED':
      return walk({ type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 5 }, at, opts: { runAt: at + 1000 } });
    case 'RETRY_WAIT':
      return walk({ type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 5 }, at, opts: { retry } }, claimStart('a1', 1), {
        type: 'finish', agentId: 'a1', lease: 1, outcome: 'FAILED', result: null, error: 'boom', at, retryAt: at + 1000,
      });
    case 'PENDING':
      return walk(submit());
    case 'ASSIGNED':
      return walk(submit(), claim('a1', 1));
    case 'RUNNING':
      return walk(submit(), claimStart('a1', 1));
    case 'COMPLETED':
      return walk(submit(), claimStart('a1', 1), finish('a1', 1));
    case 'FAILED':
      return walk(submit(), claimStart('a1', 1), finish('a1', 1, 'FAILED'));
  }
}

/** The event of `type` as the rightful holder would send it (not a retry). */
function eventFor(type: EventType, cmd: Command | undefined): CommandEvent {
  const lease = cmd?.attempt ?? 0;
  switch (type) {
    case 'submit':
      return submit();
    case 'claim-start':
      return claimStart('a1', lease + 1);
    case 'claim':
      return claim('a1', lease + 1);
    case 'start':
      return start('a1', lease);
    case 'finish':
      return finish('a1', lease);
    case 'release':
      return release('a1', lease);
    case 'expire':
      return expire(lease);
    case 'cancel':
      return cancel;
    case 'due':
      return due(at + 1000);
    case 'timeout':
      return timeout(lease);
  }
}

test('every row of TRANSITIONS moves as the table says, and nothing else moves', () => {
  let rows = 0;
  for (const type of Object.keys(TRANSITIONS) as EventType[]) {
    for (const from of ['new', ...STATES] as const) {
      const cmd = from === 'new' ? undefined : inState(from);
      const before = structuredClone(cmd);
      const r = step(cmd, eventFor(type, cmd));
      const to = TRANSITIONS[type][from];
      const where = `${type} from ${from}`;
      assert.equal(cmd, before, `${where}: step() mutated its input`);
      if (to === undefined) {
        assert.is.not(r.kind, 'next', `${where} moved, but it is not in the table`);
        continue;
      }
      rows++;
      const next = moved(r);
      assert.ok(to.includes(next.state), `${where} went to ${next.state}, not one of ${to.join(', ')}`);
      assert.is(next.version, (cmd?.version ?? 0) + 1, `${where}: version`);
      // The ways back: a failed attempt with attempts left (RUNNING -> RETRY_WAIT,
      // shown PENDING), and a command given back unbegun (release from RUNNING).
      const givenBack = type === 'release' && from === 'RUNNING';
      if (from !== 'new' && next.state !== 'RETRY_WAIT' && !givenBack) assert.ok(SHOWN[next.state] >= SHOWN[from], `${where}: shown status went backwards`);
    }
  }
  assert.is(rows, Object.values(TRANSITIONS).reduce((n, row) => n + Object.keys(row).length, 0));
});

test('finish records the outcome the agent reports', () => {
  const ok = moved(step(inState('RUNNING'), finish('a1', 1)));
  assert.equal([ok.state, ok.result, ok.error], ['COMPLETED', { ok: true, tookMs: 5 }, null]);
  const failed = moved(step(inState('RUNNING'), finish('a1', 1, 'FAILED')));
  assert.equal([failed.state, failed.error], ['FAILED', 'boom']);
});

test('events on an unknown id, and a second submit, are rejected', () => {
  for (const type of Object.keys(TRANSITIONS) as EventType[]) {
    if (type !== 'submit') rejected(step(undefined, eventFor(type, undefined)), 'NOT_FOUND');
  }
  rejected(step(inState('PENDING'), submit()), 'EXISTS');
});

test('the lease is a fencing token: it rises with every assignment, and old ones are refused', () => {
  const first = inState('ASSIGNED');
  rejected(step(inState('PENDING'), claim('a1', 2)), 'STALE_LEASE', /lease must be 1, got 2/);
  const back = moved(step(first, release('a1', 1)));
  assert.equal([back.state, back.agentId, back.attempt], ['PENDING', null, 1]);
  rejected(step(back, claim('a2', 1)), 'STALE_LEASE');
  rejected(step(back, start('a1', 1)), 'STALE_LEASE', /released or expired/);
  const second = moved(step(back, claim('a2', 2)));
  assert.equal([second.agentId, second.attempt], ['a2', 2]);
  rejected(step(second, start('a1', 1)), 'STALE_LEASE', /current lease is 2/);
  rejected(step(second, release('a1', 1)), 'STALE_LEASE');
  rejected(step(second, expire(1)), 'STALE_LEASE');
  const running = moved(step(second, start('a2', 2)));
  rejected(step(running, finish('a1', 1)), 'STALE_LEASE');
  rejected(step(running, finish('a2', 3)), 'STALE_LEASE');
});

test('claim-and-start: PENDING to RUNNING in one step, lease by lease, one execution', () => {
  rejected(step(inState('PENDING'), claimStart('a1', 2)), 'STALE_LEASE', /lease must be 1, got 2/);
  const running = moved(step(inState('PENDING'), claimStart('a1', 1)));
  assert.equal([running.state, running.agentId, running.attempt, running.executions], ['RUNNING', 'a1', 1, 1]);
  rejected(step(running, claimStart('a2', 2)), 'WRONG_STATE');
  // An agent from before claim-and-start still sends start: it finds it started.
  assert.is(step(running, start('a1', 1)).kind, 'same');
  rejected(step(running, start('a2', 1)), 'WRONG_AGENT');
});

test('release of a RUNNING command: only its lease holder, back to PENDING, not an execution; the next lease is 2', () => {
  const running = inState('RUNNING');
  rejected(step(running, release('a2', 1)), 'WRONG_AGENT', /belongs to a1, not a2/);
  rejected(step(running, release('a1', 2)), 'STALE_LEASE');
  const back = moved(step(running, release('a1', 1)));
  assert.equal([back.state, back.agentId, back.attempt, back.executions], ['PENDING', null, 1, 0]);
  rejected(step(back, finish('a1', 1)), 'STALE_LEASE', /released or expired/);
  rejected(step(back, release('a1', 1)), 'STALE_LEASE');
  assert.equal(moved(step(back, claimStart('a2', 2))).attempt, 2);
  rejected(step(inState('COMPLETED'), release('a1', 1)), 'WRONG_STATE', /only a command not yet started/);
});

test('release of a RUNNING command whose cancel was requested: FAILED CANCELED, not PENDING', () => {
  const flagged = moved(step(inState('RUNNING'), cancel));
  const r = moved(step(flagged, release('a1', 1)));
  assert.equal([r.state, r.error, r.result], ['FAILED', CANCELED, { error: CANCELED }]);
});

test('a lease is good only for the agent it was given to', () => {
  rejected(step(inState('ASSIGNED'), start('a2', 1)), 'WRONG_AGENT', /belongs to a1, not a2/);
  rejected(step(inState('ASSIGNED'), release('a2', 1)), 'WRONG_AGENT');
  rejected(step(inState('RUNNING'), finish('a2', 1)), 'WRONG_AGENT');
  rejected(step(inState('ASSIGNED'), claim('a2', 1)), 'WRONG_STATE');
});

test('retries of a transition that already happened answer same and change nothing', () => {
  const cases: Array<[CommandState, CommandEvent]> = [
    ['ASSIGNED', claim('a1', 1)],
    ['RUNNING', start('a1', 1)],
    ['COMPLETED', finish('a1', 1)],
    ['FAILED', finish('a1', 1, 'FAILED')],
  ];
  for (const [state, ev] of cases) {
    const cmd = inState(state);
    const r = step(cmd, ev);
    assert.is(r.kind, 'same', `${ev.type} retried in ${state}: ${JSON.stringify(r)}`);
    if (r.kind === 'same') assert.is(r.cmd, cmd);
  }
  rejected(step(inState('COMPLETED'), finish('a1', 1, 'FAILED')), 'CONFLICT', /already COMPLETED, cannot become FAILED/);
  rejected(step(inState('FAILED'), finish('a1', 1)), 'CONFLICT');
  rejected(step(inState('COMPLETED'), start('a1', 1)), 'WRONG_STATE');
});

test('cancel in each state', () => {
  for (const state of ['PENDING', 'ASSIGNED'] as const) {
    const c = moved(step(inState(state), cancel));
    assert.equal([c.state, c.error, c.result], ['FAILED', CANCELED, { error: CANCELED }], state);
    assert.is(step(c, cancel).kind, 'same', `cancel retried after ${state}`);
  }
  const flagged = moved(step(inState('RUNNING'), cancel));
  assert.equal([flagged.state, flagged.cancelRequested, flagged.error], ['RUNNING', true, null]);
  assert.is(step(flagged, cancel).kind, 'same');
  // The agent aborts and reports FAILED CANCELED itself.
  const aborted = moved(step(flagged, finish('a1', 1, 'FAILED', CANCELED)));
  assert.equal([aborted.state, aborted.error], ['FAILED', CANCELED]);
  rejected(step(inState('COMPLETED'), cancel), 'WRONG_STATE', /already COMPLETED/);
  rejected(step(inState('FAILED'), cancel), 'WRONG_STATE', /already FAILED/);
});

test('expiry: ASSIGNED goes back to PENDING, RUNNING fails AGENT_LOST and is never handed out again', () => {
  const back = moved(step(inState('ASSIGNED'), expire(1)));
  assert.equal([back.state, back.agentId, back.attempt], ['PENDING', null, 1]);
  assert.is(moved(step(back, claim('a2', 2))).attempt, 2);

  const lost = moved(step(inState('RUNNING'), expire(1)));
  assert.equal([lost.state, lost.error, lost.result], ['FAILED', AGENT_LOST, { error: AGENT_LOST }]);
  rejected(step(lost, claim('a2', 2)), 'WRONG_STATE');
  rejected(step(lost, expire(1)), 'STALE_LEASE');
  // The agent that was presumed lost reports success too late: the record stands.
  rejected(step(lost, finish('a1', 1)), 'CONFLICT');
  rejected(step(lost, finish('a1', 1, 'FAILED')), 'CONFLICT');
  rejected(step(lost, finish('a1', 1, 'FAILED', 'HTTP timeout')), 'CONFLICT', /already FAILED \(AGENT_LOST\)/);
  rejected(step(inState('PENDING'), expire(0)), 'STALE_LEASE');
});

test.run();
