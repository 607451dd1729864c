// The command store on PostgreSQL: any number of keel servers on one
// database serve one queue. The FSM is still the one pure step() of
// state/command-fsm.ts: a transition loads the row, runs step() on the
// command it holds, and writes the result with
//   UPDATE ... WHERE id = $1 AND version = $2
// in the same statement as the row it appends to keel_events. Zero rows
// updated means another server moved the command first: the transition is
// tried again on what is there now, where step() answers same, next or a
// rejection as it would have on the file store.
// Claims lock PENDING rows FOR UPDATE SKIP LOCKED in claim order (priority,
// then the order they became claimable: at submission, or when they fell
// due), so servers claiming at once take different rows.
// Lease deadlines and attempt deadlines are columns on the database's clock
// (now()); every server sweeps them, and a sweep that loses the race to
// another changes nothing (the guard in the UPDATE fails).
import pg, { type Pool, type PoolClient, type PoolConfig, type Queryable, type QueryResult } from 'pg';
import { randomUUID } from 'node:crypto';
import { dueAt, step, type Command, type CommandEvent, type StepResult } from '../command-fsm.ts';
import { appendTrail, type TrailEntry } from '../command-line.ts';
import { COMMAND_STATES, COMMAND_TYPES, type CommandState, type CommandType, type Outcome } from '../command-types.ts';
import { crashPoint } from '../crash-points.ts';
import { retryAt } from '../retry-backoff.ts';
import type { RetentionPolicy } from '../retention.ts';
import {
  KEY_CONFLICT, StoreUnavailableError,
  type BatchSubmitResult, type ChangeListener, type ClaimOptions, type ListPage, type ListQuery, type Store, type StoreCounts, type SubmitInput, type SubmitResult,
} from '../store.ts';
import { isConnectionLost, unavailable } from './connection.ts';
import { PgListener } from './listener.ts';
import { migrate } from './schema.ts';

/** The channel a server NOTIFYs when a command becomes claimable; every server LISTENs. */
export const PENDING_CHANNEL = 'keel_pending';
/** Every transition, its event's seq as the payload, sent by its statement (so on commit): the event feeds read on it. */
export const CHANGES_CHANNEL = 'keel_changes';

/** How many times a transition is tried again after losing a compare-and-swap. */
const CAS_TRIES = 20;

const HELD = "('ASSIGNED', 'RUNNING')";
/** Event frames kept past the newest: a feed that falls further behind shows the command as it is now instead. */
const FRAMES_KEPT = 100_000;
const COUNTS = `SELECT state, type, sum(n)::float8 AS n FROM (
    SELECT state, type, n FROM keel_counts
    UNION ALL SELECT to_state, type, 1 FROM keel_count_deltas WHERE to_state IS NOT NULL
    UNION ALL SELECT from_state, type, -1 FROM keel_count_deltas WHERE from_state IS NOT NULL) x
  GROUP BY state, type`;
const NOW_MS = 'floor(extract(epoch from clock_timestamp()) * 1000)::float8';

export interface PgStoreOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** A lease lives this long past a claim, start or heartbeat. */
  leaseTimeoutMs: number;
  /** Final commands kept (--retain, --retain-max); undefined: all. */
  retention?: RetentionPolicy;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  random?: () => number;
}

/** What a sweep of one kind did. */
export interface SweepResult {
  moved: number;
}

/** How a write treats the lease deadline. */
type LeaseMode = 'extend' | 'keep' | 'clear';

/** A command a sweep failed (lease expired, attempt timed out): the lease and agent it had, and the command now. */
export interface Swept {
  id: string;
  lease: number;
  agentId: string | null;
  cmd: Command;
}

export class PgStore implements Store {
  readonly kind = 'postgres';
  readonly pool: Pool;
  private readonly leaseTimeoutMs: number;
  private readonly random: () => number;
  private readonly listeners = new Set<ChangeListener>();
  /** The database's last keel_events seq when this store opened, then that of each transition made here. */
  private last: number;
  private transitions = 0;
  private forgotten = 0;
  private readonly retention: RetentionPolicy | undefined;
  /** Database clock minus this process's, ms. */
  private offset = 0;
  /** The last connection failure, until a query succeeds again. */
  private lost: Error | undefined;
  private listener: PgListener | undefined;
  /** Leases a claim here just set (id -> lease): the route's extension right after needs no statement. */
  private readonly fresh = new Map<string, number>();

  private readonly url: string;

  private constructor(pool: Pool, opts: PgStoreOptions, seq: number) {
    this.pool = pool;
    this.url = opts.url;
    this.leaseTimeoutMs = opts.leaseTimeoutMs;
    this.random = opts.random ?? Math.random;
    this.retention = opts.retention;
    this.last = seq;
  }

  /** Connect, migrate the schema (refusing one newer than this binary), and open. */
  static async open(opts: PgStoreOptions): Promise<PgStore> {
    // keel.counted: these sessions append their own count deltas (schema.ts, migration 4).
    // `options` (startup parameters) is passed on by node-postgres, though its types omit it.
    const config: PoolConfig & { options: string } = {
      connectionString: opts.url, max: opts.poolSize ?? 10, connectionTimeoutMillis: 5000, application_name: 'keel', options: '-c keel.counted=on',
    };
    const pool = new pg.Pool(config);
    // An idle connection that breaks is reported here; the next query notices too.
    pool.on('error', () => {});
    try {
      await migrate(pool);
      const { rows } = await pool.query<{ seq: number }>('SELECT coalesce(max(seq), 0)::float8 AS seq FROM keel_events');
      const store = new PgStore(pool, opts, rows[0]!.seq);
      await store.syncClock();
      return store;
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
  }

  /**
   * The seq of the last transition made here (the database's last when the
   * store opened, until then). Other servers' come through the event feed
   * (event-feed.ts), which starts from this at open.
   */
  get lastSeq(): number {
    return this.last;
  }

  /** Transitions this server made, as they commit; every server's, in seq order, come from the event feed. */
  onChange(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  readBarrier(): Promise<void> {
    return Promise.resolve(); // a committed transaction is durable
  }

  refuseIfUnavailable(): void {
    if (this.lost) throw unavailable(this.lost);
  }

  get unavailable(): string | undefined {
    return this.lost ? 'database unreachable' : undefined;
  }

  get broken(): Error | undefined {
    return undefined; // a failed statement leaves nothing in memory to disagree with the database
  }

  async close(): Promise<void> {
    await this.listener?.stop();
    await this.pool.end();
  }

  /**
   * Hear every server: `pending` when a command became claimable somewhere,
   * `changed` when any server committed a transition (its seq), `listening`
   * on every (re)connection (what was sent meanwhile is lost: look).
   */
  listen(hooks: { pending(): void; changed(seq: number): void; listening(): void }): void {
    const l = new PgListener(this.url, [PENDING_CHANNEL, CHANGES_CHANNEL]);
    l.on(PENDING_CHANNEL, () => hooks.pending());
    l.on(CHANGES_CHANNEL, (payload) => hooks.changed(Number(payload)));
    l.onListening(() => hooks.listening());
    this.listener = l;
    l.start();
  }

  // --- submits ---------------------------------------------------------------

  /** One statement, no transaction: the insert, its event and its notification go together or not at all. */
  async submit(input: SubmitInput): Promise<SubmitResult> {
    const hash = input.bodyHash ?? null;
    for (let i = 0; i < CAS_TRIES; i++) {
      const made = await this.insert(this.pool, input, this.clock());
      if (made) {
        crashPoint('pg:submit-committed');
        this.announce([{ ...made, event: 'submit' }]);
        return { kind: 'created', id: made.cmd.id };
      }
      // The key is taken: by the same body, that command answers.
      const { rows } = await this.q<{ id: string; hash: string | null }>("SELECT id, cmd->>'bodyHash' AS hash FROM keel_commands WHERE idem_key = $1", [input.idemKey]);
      const holder = rows[0];
      if (!holder) continue; // forgotten by retention since: try again
      if (holder.hash !== hash) return { kind: 'conflict', id: holder.id, reason: KEY_CONFLICT };
      return { kind: 'existing', id: holder.id };
    }
    throw new StoreUnavailableError(`Idempotency-Key ${input.idemKey} kept changing under ${CAS_TRIES} tries; retry`);
  }

  /** The database's clock, as estimated here (synced at open and by every sweep): for submit times. */
  private clock(): number {
    return Math.floor(Date.now() + this.offset);
  }

  /** Measure how far the database's clock is from this process's. */
  async syncClock(): Promise<void> {
    const before = Date.now();
    const { rows } = await this.q<{ now: number }>(`SELECT ${NOW_MS} AS now`);
    this.offset = rows[0]!.now - (before + Date.now()) / 2;
  }

  /** Insert a new command from `input`; undefined if its idempotency key is taken. */
  private async insert(c: Queryable, input: SubmitInput, now: number): Promise<{ cmd: Command; seq: number } | undefined> {
    const id = randomUUID();
    const ev: CommandEvent = { type: 'submit', id, cmdType: input.type, payload: input.payload, at: now };
    if (input.idemKey !== undefined) {
      ev.idemKey = input.idemKey;
      ev.bodyHash = input.bodyHash;
    }
    if (input.opts && Object.keys(input.opts).length > 0) ev.opts = input.opts;
    const s = step(undefined, ev);
    if (s.kind !== 'next') throw new Error(`submit of a fresh id was not a transition: ${s.kind}`);
    const cmd = { ...s.cmd, trail: appendTrail(s.cmd, ev) };
    const inserted = await this.run(c,
      `WITH ins AS (
         INSERT INTO keel_commands (id, state, version, type, priority, agent_id, attempt, due_at, idem_key, cmd)
         VALUES ($1, $2, $3, $4, $5, NULL, 0, $6, $7, $8) ON CONFLICT (idem_key) DO NOTHING RETURNING id)
       , ev AS (INSERT INTO keel_events (command_id, event, to_state, at) SELECT id, 'submit', $2, $9 FROM ins RETURNING seq)
       , frame AS (INSERT INTO keel_event_frames SELECT seq, $8::json FROM ev)
       , counted AS (INSERT INTO keel_count_deltas SELECT $4, NULL, $2 FROM ins)
       SELECT seq::float8 AS seq, pg_notify('${CHANGES_CHANNEL}', seq::text) FROM ev`,
      [id, cmd.state, cmd.version, cmd.type, cmd.priority, dueAt(cmd) ?? null, input.idemKey ?? null, cmd, now],
    );
    const row = inserted.rows[0] as { seq: number } | undefined;
    return row === undefined ? undefined : { cmd, seq: row.seq };
  }

  async submitMany(inputs: readonly SubmitInput[]): Promise<BatchSubmitResult> {
    const made: Array<{ cmd: Command; seq: number }> = [];
    const r = await this.tx('submit', async (c) => {
      const now = await dbNow(c);
      const ids: string[] = [];
      const keyed = new Map<string, { id: string; bodyHash: string | null }>();
      for (let i = 0; i < inputs.length; i++) {
        const input = inputs[i]!;
        const key = input.idemKey;
        const hash = input.bodyHash ?? null;
        if (key !== undefined) {
          const seen = keyed.get(key) ?? (await holderOf(c, key));
          if (seen) {
            if (seen.bodyHash !== hash) throw new Refused({ kind: 'conflict', index: i, id: seen.id, reason: KEY_CONFLICT });
            ids.push(seen.id);
            continue;
          }
        }
        const inserted = await this.insert(c, input, now);
        if (inserted === undefined) {
          // Another server committed this key since we looked: that command answers.
          const holder = (await holderOf(c, key!))!;
          if (holder.bodyHash !== hash) throw new Refused({ kind: 'conflict', index: i, id: holder.id, reason: KEY_CONFLICT });
          ids.push(holder.id);
          continue;
        }
        if (key !== undefined) keyed.set(key, { id: inserted.cmd.id, bodyHash: hash });
        made.push(inserted);
        ids.push(inserted.cmd.id);
      }
      return { kind: 'done' as const, ids, created: made.length };
    }).catch((err: unknown) => {
      if (err instanceof Refused) return err.result;
      throw err;
    });
    if (r.kind === 'conflict') return r;
    this.announce(made.map((m) => ({ ...m, event: 'submit' as const })));
    return r;
  }

  async knowsKey(key: string): Promise<boolean> {
    const { rowCount } = await this.q('SELECT 1 FROM keel_commands WHERE idem_key = $1', [key]);
    return (rowCount ?? 0) > 0;
  }

  // --- reads -----------------------------------------------------------------

  async read(id: string): Promise<Command | undefined> {
    const { rows } = await this.q<{ cmd: Command }>('SELECT cmd FROM keel_commands WHERE id = $1', [id]);
    return rows[0]?.cmd;
  }

  /** The cursor is the submission ordinal below which the next page starts. */
  async list(q: ListQuery): Promise<ListPage> {
    if (q.cursor !== undefined && !/^\d{1,18}$/.test(q.cursor)) return { badCursor: true };
    if (q.cursor !== undefined) {
      // Past every ordinal handed out: no page ever ended there (as in the file store, a 400).
      const { rows } = await this.q<{ known: boolean }>('SELECT $1::bigint <= last_value AS known FROM keel_commands_ord_seq', [q.cursor]);
      if (!rows[0]!.known) return { badCursor: true };
    }
    // ORDER BY names the column, not the text it is selected as (that would order 9 after 10).
    const { rows } = await this.q<{ cmd: Command; cursor: string }>(
      `SELECT cmd, ord::text AS cursor FROM keel_commands
       WHERE ($1::bigint IS NULL OR ord < $1) AND ($2::text[] IS NULL OR state = ANY($2)) AND ($3::text IS NULL OR type = $3)
       ORDER BY ord DESC LIMIT $4`,
      [q.cursor ?? null, q.states ? [...q.states] : null, q.type ?? null, q.limit + 1],
    );
    const more = rows.length > q.limit;
    const page = rows.slice(0, q.limit);
    return { commands: page.map((r) => r.cmd), nextCursor: more ? page[page.length - 1]!.cursor : null };
  }

  async trail(id: string): Promise<TrailEntry[] | undefined> {
    const { rows } = await this.q<{ event: TrailEntry['event']; to_state: CommandState; at: number; agent_id: string | null; lease: number | null; error: string | null }>(
      'SELECT event, to_state, at::float8 AS at, agent_id, lease, error FROM keel_events WHERE command_id = $1 ORDER BY seq',
      [id],
    );
    if (rows.length === 0) return undefined;
    return rows.map((r) => {
      const e: TrailEntry = { event: r.event, to: r.to_state, at: r.at };
      if (r.agent_id !== null) e.agentId = r.agent_id;
      if (r.lease !== null) e.lease = r.lease;
      if (r.error !== null) e.error = r.error;
      return e;
    });
  }

  async heldBy(): Promise<ReadonlyMap<string, ReadonlySet<string>>> {
    const { rows } = await this.q<{ agent_id: string; id: string }>(`SELECT agent_id, id FROM keel_commands WHERE state IN ${HELD} ORDER BY ord`);
    const held = new Map<string, Set<string>>();
    for (const { agent_id, id } of rows) {
      let s = held.get(agent_id);
      if (!s) held.set(agent_id, (s = new Set()));
      s.add(id);
    }
    return held;
  }

  /** keel_counts plus the deltas not folded into it yet (schema.ts, migration 4), in one snapshot: as cheap at a million commands as at ten. */
  async counts(): Promise<StoreCounts> {
    const { rows } = await this.q<{ state: CommandState; type: CommandType; n: number }>(COUNTS);
    const byState = Object.fromEntries(COMMAND_STATES.map((s) => [s, 0])) as Record<CommandState, number>;
    const pendingByType = Object.fromEntries(COMMAND_TYPES.map((t) => [t, 0])) as Record<CommandType, number>;
    for (const r of rows) {
      byState[r.state] += r.n;
      if (r.state === 'PENDING') pendingByType[r.type] += r.n;
    }
    return { byState, pendingByType, forgotten: this.forgotten, transitions: this.transitions };
  }

  // --- claims ----------------------------------------------------------------

  /**
   * Up to `max` PENDING commands for `agentId` in claim order, straight into
   * RUNNING (claim-and-start), locked with SKIP LOCKED so a claim running on
   * another server at the same moment takes others.
   */
  async claim(agentId: string, max: number, opts: ClaimOptions = {}): Promise<Command[]> {
    const changed: Array<{ cmd: Command; event: 'claim-start'; seq: number }> = [];
    const out = await this.tx('claim', async (c) => {
      const out: Command[] = [];
      const { rows } = await c.query<{ cmd: Command; now: number }>(
        `SELECT cmd, ${NOW_MS} AS now FROM keel_commands
         WHERE state = 'PENDING' AND ($1::text[] IS NULL OR type = ANY($1))
         ORDER BY priority DESC, coalesce(queued, ord) LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [opts.types ? [...opts.types] : null, max],
      );
      for (const { cmd, now } of rows) {
        const ev: CommandEvent = { type: 'claim-start', agentId, lease: cmd.attempt + 1, at: eventTime(cmd, now) };
        const r = step(cmd, ev);
        if (r.kind !== 'next') continue;
        const next = { ...r.cmd, trail: appendTrail(r.cmd, ev) };
        // The row is locked: the version cannot have moved.
        const seq = await this.write(c, cmd, next, ev, 'extend');
        if (seq === undefined) throw new Error(`claim of ${cmd.id} lost its locked row`);
        out.push(next);
        changed.push({ cmd: next, event: 'claim-start', seq });
        this.fresh.set(next.id, next.attempt);
      }
      return out;
    });
    this.announce(changed);
    return out;
  }

  /** A heartbeat: the lease lives another lease timeout, if it is still this agent's. */
  async extendLease(id: string, lease: number): Promise<void> {
    if (this.fresh.get(id) === lease) {
      this.fresh.delete(id); // set by the claim's own UPDATE a moment ago
      return;
    }
    await this.q(`UPDATE keel_commands SET lease_until = now() + $3 * interval '1 millisecond' WHERE id = $1 AND attempt = $2 AND state IN ${HELD}`, [id, lease, this.leaseTimeoutMs]);
  }

  // --- transitions -----------------------------------------------------------

  start(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, (_cmd, at) => ({ type: 'start', agentId, lease, at }));
  }

  finish(agentId: string, id: string, lease: number, outcome: Outcome, result: unknown, error: string | null): Promise<StepResult> {
    return this.transition(id, (cmd, at) => this.mayRetry(cmd, { type: 'finish', agentId, lease, outcome, result, error, at }));
  }

  release(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, (_cmd, at) => ({ type: 'release', agentId, lease, at }));
  }

  expire(id: string, lease: number): Promise<StepResult> {
    return this.transition(id, (cmd, at) => this.mayRetry(cmd, { type: 'expire', lease, at }));
  }

  timeout(id: string, lease: number): Promise<StepResult> {
    return this.transition(id, (cmd, at) => this.mayRetry(cmd, { type: 'timeout', lease, at }));
  }

  cancel(id: string): Promise<StepResult> {
    return this.transition(id, (_cmd, at) => ({ type: 'cancel', at }));
  }

  // --- sweeps: every server runs them; losing a race to another changes nothing

  /** Expire the leases past their deadline (database clock). */
  expireLeases(limit = 200): Promise<Swept[]> {
    return this.failPast(`state IN ${HELD}`, 'lease_until', 'expire', limit);
  }

  /** Fail TIMEOUT the attempts running past their timeout plus one lease timeout. */
  timeoutRuns(limit = 200): Promise<Swept[]> {
    return this.failPast("state = 'RUNNING'", 'run_deadline', 'timeout', limit);
  }

  /** One sweep: `type` for the commands whose `column` deadline has passed, re-checked in the UPDATE so a race lost to another server changes nothing. */
  private async failPast(states: string, column: 'lease_until' | 'run_deadline', type: 'expire' | 'timeout', limit: number): Promise<Swept[]> {
    const { rows } = await this.q<{ id: string; attempt: number; agent_id: string | null }>(
      `SELECT id, attempt, agent_id FROM keel_commands WHERE ${states} AND ${column} < now() ORDER BY ${column} LIMIT $1`, [limit]);
    const moved: Swept[] = [];
    for (const { id, attempt, agent_id: agentId } of rows) {
      const r = await this.transition(id, (cmd, at) => this.mayRetry(cmd, { type, lease: attempt, at }), `${column} < now()`);
      if (r.kind === 'next') moved.push({ id, lease: attempt, agentId, cmd: r.cmd });
    }
    return moved;
  }

  /** Move the SCHEDULED and RETRY_WAIT commands whose time has come to PENDING, in due-time order. */
  async promoteDue(limit = 1000): Promise<number> {
    const { rows } = await this.q<{ id: string }>(
      `SELECT id FROM keel_commands WHERE state IN ('SCHEDULED', 'RETRY_WAIT') AND due_at <= ${NOW_MS} ORDER BY due_at LIMIT $1`, [limit]);
    let moved = 0;
    for (const { id } of rows) {
      const r = await this.transition(id, (_cmd, at) => ({ type: 'due', at }));
      if (r.kind === 'next') moved++;
    }
    return moved;
  }

  /**
   * Forget the final commands past the retention bounds (the oldest first,
   * at most `limit` a call), their events with them. Every server runs it; two
   * at once delete each row once. Resolves with how many went.
   */
  async forgetExpired(limit = 1000): Promise<number> {
    const r = this.retention;
    if (r === undefined) return 0;
    const { byState } = await this.counts();
    const over = Math.max(0, Math.min(limit, byState.COMPLETED + byState.FAILED - r.max));
    const { rows } = await this.q<{ n: number }>(
      `WITH doomed AS (
         (SELECT id FROM keel_commands WHERE final_at IS NOT NULL ORDER BY final_at, ord LIMIT $1)
         UNION
         (SELECT id FROM keel_commands WHERE final_at IS NOT NULL AND final_at < ${NOW_MS} - $2 ORDER BY final_at LIMIT $3)),
       gone AS (DELETE FROM keel_commands c USING doomed d WHERE c.id = d.id RETURNING c.id, c.type, c.state),
       events AS (DELETE FROM keel_events e USING gone g WHERE e.command_id = g.id),
       counted AS (INSERT INTO keel_count_deltas SELECT type, state, NULL FROM gone)
       SELECT count(*)::int AS n FROM gone`,
      [over, r.ms, limit],
    );
    const n = rows[0]!.n;
    this.forgotten += n;
    return n;
  }

  /**
   * Fold the count deltas into keel_counts, in one statement (a reader sees
   * them before or after, never both). Two servers folding at once fold each
   * delta once: the second's DELETE skips the rows the first deleted.
   */
  async foldCounts(): Promise<void> {
    await this.q(`WITH d AS (DELETE FROM keel_count_deltas RETURNING type, from_state, to_state),
      s AS (SELECT state, type, sum(n) AS n FROM (
        SELECT to_state AS state, type, 1 AS n FROM d WHERE to_state IS NOT NULL
        UNION ALL SELECT from_state, type, -1 FROM d WHERE from_state IS NOT NULL) x GROUP BY state, type)
      INSERT INTO keel_counts AS c SELECT state, type, n FROM s ON CONFLICT (state, type) DO UPDATE SET n = c.n + EXCLUDED.n`);
  }

  /** Drop the event frames all but the last `keep` (every server's feed read them moments after they were written). */
  async pruneFrames(keep = FRAMES_KEPT): Promise<void> {
    await this.q('DELETE FROM keel_event_frames WHERE seq <= (SELECT max(seq) FROM keel_event_frames) - $1', [keep]);
  }

  /** The highest event seq committed (0: none). */
  async maxSeq(): Promise<number> {
    const { rows } = await this.q<{ seq: number }>('SELECT coalesce(max(seq), 0)::float8 AS seq FROM keel_events');
    return rows[0]!.seq;
  }

  /** The earliest due time of a waiting command (epoch ms), if any. */
  async nextDue(): Promise<number | undefined> {
    const { rows } = await this.q<{ at: number | null }>("SELECT min(due_at)::float8 AS at FROM keel_commands WHERE state IN ('SCHEDULED', 'RETRY_WAIT')");
    return rows[0]?.at ?? undefined;
  }

  /**
   * Run one event through the FSM against the row as it is now, and write it
   * if it moves the command. `guard` is SQL the row must still satisfy when
   * written (a sweep's reason to act).
   */
  async transition(id: string, makeEvent: (cmd: Command, at: number) => CommandEvent, guard?: string): Promise<StepResult> {
    for (let i = 0; i < CAS_TRIES; i++) {
      const { rows } = await this.q<{ cmd: Command | null; now: number; ok: boolean }>(
        `SELECT (SELECT cmd FROM keel_commands WHERE id = $1) AS cmd, ${NOW_MS} AS now, ${guard ? `EXISTS (SELECT 1 FROM keel_commands WHERE id = $1 AND ${guard})` : 'true'} AS ok`,
        [id],
      );
      const { cmd, now, ok } = rows[0]!;
      if (!cmd) return { kind: 'rejected', error: 'NOT_FOUND', reason: 'no such command' };
      if (!ok) return { kind: 'rejected', error: 'STALE_LEASE', reason: 'its deadline moved (a heartbeat, or another server acted first)' };
      const ev = makeEvent(cmd, eventTime(cmd, now));
      const r = step(cmd, ev);
      if (r.kind !== 'next') return r;
      const next = { ...r.cmd, trail: appendTrail(r.cmd, ev) };
      const seq = await this.write(this.pool, cmd, next, ev, leaseMode(cmd, next, ev), guard);
      if (seq === undefined) continue; // another server moved it first (or the guard no longer holds): look again
      crashPoint(`pg:${ev.type}-committed`);
      this.announce([{ cmd: next, event: ev.type, seq }]);
      return { kind: 'next', cmd: next };
    }
    throw new StoreUnavailableError(`command ${id} kept changing under ${CAS_TRIES} tries; retry`);
  }

  /** The compare-and-swap: undefined when the row is no longer at `cur.version` (or fails `guard`). */
  private async write(c: Queryable, cur: Command, next: Command, ev: CommandEvent, lease: LeaseMode, guard?: string): Promise<number | undefined> {
    const runDeadlineMs = next.state === 'RUNNING' && cur.state !== 'RUNNING' && next.timeoutMs !== null ? next.timeoutMs + this.leaseTimeoutMs : null;
    const agentId = 'agentId' in ev ? ev.agentId : null;
    const lease_ = 'lease' in ev ? ev.lease : null;
    const error = next.state === 'FAILED' || next.state === 'RETRY_WAIT' ? next.error : null;
    const { rows } = await this.run(c,
      `WITH u AS (
         UPDATE keel_commands SET
           state = $3, version = $4, agent_id = $5, attempt = $6, due_at = $7, cmd = $8,
           queued = CASE WHEN $3 = 'PENDING' AND state IN ('SCHEDULED', 'RETRY_WAIT') THEN nextval('keel_commands_ord_seq') ELSE queued END,
           final_at = CASE WHEN $3 IN ('COMPLETED', 'FAILED') THEN $13::bigint END,
           lease_until = CASE $9::text WHEN 'extend' THEN now() + $10 * interval '1 millisecond' WHEN 'keep' THEN lease_until END,
           run_deadline = CASE WHEN $3 <> 'RUNNING' THEN NULL WHEN $11::float8 IS NOT NULL THEN now() + $11 * interval '1 millisecond' ELSE run_deadline END
         WHERE id = $1 AND version = $2 ${guard ? `AND ${guard}` : ''} RETURNING id)
       , ev AS (INSERT INTO keel_events (command_id, event, to_state, at, agent_id, lease, error)
         SELECT id, $12, $3, $13, $14, $15, $16 FROM u RETURNING seq)
       , frame AS (INSERT INTO keel_event_frames SELECT seq, $8::json FROM ev)
       , counted AS (INSERT INTO keel_count_deltas SELECT $17, $18, $3 FROM u WHERE $18 <> $3)
       SELECT seq::float8 AS seq, pg_notify('${CHANGES_CHANNEL}', seq::text) FROM ev`,
      [cur.id, cur.version, next.state, next.version, next.agentId, next.attempt, dueAt(next) ?? null, next, lease, this.leaseTimeoutMs, runDeadlineMs,
        ev.type, ev.at, agentId, lease_, error, next.type, cur.state],
    );
    return rows.length === 0 ? undefined : (rows[0] as { seq: number }).seq;
  }

  /** A failure of a command that may be retried carries when the retry is due. */
  private mayRetry<E extends Extract<CommandEvent, { retryAt?: number }>>(cmd: Command, ev: E): E {
    if (cmd.retry && cmd.state === 'RUNNING') ev.retryAt = retryAt(cmd.retry, cmd.executions, ev.at, this.random);
    return ev;
  }

  /** Committed transitions made here: to this server's listeners; a newly claimable command to every server. */
  private announce(changes: ReadonlyArray<{ cmd: Command; event: CommandEvent['type']; seq: number }>): void {
    let pending = false;
    for (const { cmd, event, seq } of changes) {
      if (event !== 'claim-start') this.fresh.delete(cmd.id);
      this.last = Math.max(this.last, seq);
      this.transitions++;
      if (cmd.state === 'PENDING') pending = true;
      for (const fn of this.listeners) fn(cmd, event, seq);
    }
    // After the commit, so a woken claim finds the row. A NOTIFY lost with a
    // connection is made up for by the parked claims' periodic look.
    if (pending) void this.pool.query(`SELECT pg_notify('${PENDING_CHANNEL}', '')`).catch(() => {});
  }

  // --- plumbing --------------------------------------------------------------

  private q<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>> {
    return this.run<R>(this.pool, text, values);
  }

  private async run<R = Record<string, unknown>>(c: Queryable, text: string, values?: unknown[]): Promise<QueryResult<R>> {
    try {
      const r = await c.query<R>(text, values);
      this.lost = undefined;
      return r;
    } catch (err) {
      throw this.failed(err);
    }
  }

  private failed(err: unknown): unknown {
    if (err instanceof StoreUnavailableError) return err;
    if (!isConnectionLost(err)) return err;
    this.lost = err as Error;
    return unavailable(err);
  }

  /** `name` names its crash points: `pg:<name>-uncommitted` (all written, not committed) and `pg:<name>-committed` (not yet answered). */
  private async tx<T>(name: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    let c: PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw this.failed(err);
    }
    let broken: unknown;
    try {
      await this.run(c, 'BEGIN');
      const out = await fn(c);
      crashPoint(`pg:${name}-uncommitted`);
      await this.run(c, 'COMMIT');
      crashPoint(`pg:${name}-committed`);
      this.lost = undefined;
      return out;
    } catch (err) {
      broken = err;
      await c.query('ROLLBACK').catch(() => {});
      throw this.failed(err);
    } finally {
      // A connection that failed is not given back to the pool for reuse.
      c.release(broken !== undefined && isConnectionLost(broken) ? (broken as Error) : undefined);
    }
  }
}

/** Thrown inside a transaction to roll it back with an answer: a batch is all or none. */
class Refused extends Error {
  readonly result: Extract<BatchSubmitResult, { kind: 'conflict' }>;
  constructor(result: Extract<BatchSubmitResult, { kind: 'conflict' }>) {
    super(result.reason);
    this.result = result;
  }
}

function leaseMode(cur: Command, next: Command, ev: CommandEvent): LeaseMode {
  const held = next.state === 'ASSIGNED' || next.state === 'RUNNING';
  if (!held) return 'clear';
  if (ev.type === 'claim-start' || ev.type === 'claim' || (ev.type === 'start' && cur.state !== 'RUNNING')) return 'extend';
  return 'keep';
}

async function dbNow(c: Queryable): Promise<number> {
  const { rows } = await c.query<{ now: number }>(`SELECT ${NOW_MS} AS now`);
  return rows[0]!.now;
}

async function holderOf(c: Queryable, key: string): Promise<{ id: string; bodyHash: string | null } | undefined> {
  const { rows } = await c.query<{ id: string; hash: string | null }>("SELECT id, cmd->>'bodyHash' AS hash FROM keel_commands WHERE idem_key = $1", [key]);
  return rows[0] && { id: rows[0].id, bodyHash: rows[0].hash };
}

/**
 * A transition's time: the database's clock, but never before the command's
 * last change. A submit is stamped with this process's estimate of that clock
 * (clock()), which can be a few ms ahead of it, and a claim in those ms would
 * otherwise come before the submit it claims.
 */
function eventTime(cmd: Command, now: number): number {
  return Math.max(now, cmd.updatedAt);
}
