// Every transition committed to the database, by any server, handed out once
// and in keel_events seq order: what a server's event streams and waiters are
// fed, so a stream on one server carries what agents did through another and
// its ids (the seqs) mean the same on every server.
//
// A seq is taken from a sequence before its transaction commits, so seqs
// commit out of order: 12 can be visible while 11, taken by a slower
// transaction, is not yet. A reader that moved past 12 would never see 11. So
// the feed stops at the first missing seq (a gap) until it knows the gap will
// not fill. The transaction holding a seq below a visible one took it before
// that one committed, so it was running when the read's snapshot was taken,
// or had already rolled back. Once a later snapshot's xmin reaches that
// snapshot's xmax, every transaction running then has ended: the gap was
// filled (and is read) or never will be (a rollback; retention) and is passed.
// Transaction ids are the cluster's, so a transaction held open anywhere on
// it holds the feed back; past GAP_WAIT_MS the gap is passed with a log line.
// (Every statement that takes a seq has written a row first, so its
// transaction has an id by then and shows in the snapshot.)
import type { Pool } from 'pg';
import type { Command, EventType } from '../command-fsm.ts';
import type { ChangeListener } from '../store.ts';

/** Rows read per query; a feed further behind reads again at once. */
const BATCH = 1000;
/** Read this often with no notification (one is lost with a connection). */
const POLL_MS = 1000;
/**
 * After a read, notifications that came meanwhile wait this long for the next:
 * under load that is one query per server every few transitions, not one per
 * transition. A feed that is behind (a full batch) reads on at once.
 */
const PACE_MS = 5;
/** While a gap waits for the transactions that may fill it, look this often. */
const GAP_RECHECK_MS = 20;
/** A gap is passed after this long, whatever is still running. */
const GAP_WAIT_MS = 10_000;

interface Row {
  seq: number;
  event: EventType;
  /** After the transition (its frame), or as it is now when the frame is gone; null when the command is gone too. */
  cmd: Command | null;
  xmin: string;
  xmax: string;
}

/** Gaps at or below `below` are settled once a snapshot's xmin reaches `xmax`. */
interface GapMark {
  below: number;
  xmax: bigint;
  since: number;
}

export class PgEventFeed {
  private readonly pool: Pool;
  private readonly onGapPassed: (after: number, upTo: number) => void;
  private readonly listeners = new Set<ChangeListener>();
  /** Every seq up to this one was handed out, or is known never to come. */
  private done: number;
  private settledBelow = 0;
  private readonly marks: GapMark[] = [];
  private reading = false;
  private again = false;
  private stopped = true;
  private poll: NodeJS.Timeout | undefined;
  private recheck: NodeJS.Timeout | undefined;
  /** Reads begun, and those waiting for a read begun after they asked. */
  private rounds = 0;
  private readonly caughtUp: Array<{ round: number; resolve: () => void }> = [];

  /** `after`: the last seq already accounted for (the database's last when the server opened). */
  constructor(pool: Pool, after: number, onGapPassed: (after: number, upTo: number) => void = () => {}) {
    this.pool = pool;
    this.done = after;
    this.onGapPassed = onGapPassed;
  }

  /** The last seq handed out (or passed). */
  get lastSeq(): number {
    return this.done;
  }

  /** Every transition from now on, in seq order: `cmd` as it was right after it. */
  onEvent(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start(): void {
    this.stopped = false;
    this.poll = setInterval(() => this.wake(), POLL_MS);
    this.poll.unref();
    this.wake();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.poll);
    clearTimeout(this.recheck);
    this.answer(Infinity);
  }

  /** Resolves after a read begun after the call: what committed before it is handed out (a gap allowing). */
  catchUp(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      this.caughtUp.push({ round: this.rounds + 1, resolve });
      this.wake();
    });
  }

  private answer(round: number): void {
    for (let i = this.caughtUp.length - 1; i >= 0; i--) {
      const w = this.caughtUp[i]!;
      if (w.round > round) continue;
      this.caughtUp.splice(i, 1);
      w.resolve();
    }
  }

  /** A transition committed somewhere (seq, when the notification said), or may have: read. */
  wake(seq?: number): void {
    if (this.stopped || (seq !== undefined && seq <= this.done)) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    void this.read();
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      for (;;) {
        this.again = false;
        const round = ++this.rounds;
        const full = await this.readOnce();
        this.answer(round);
        if (this.stopped || !(full || this.again)) break;
        if (!full) await new Promise((resolve) => setTimeout(resolve, PACE_MS));
      }
    } catch {
      // The database is away: the next notification or poll reads again.
      this.answer(this.rounds);
    } finally {
      this.reading = false;
    }
    clearTimeout(this.recheck);
    if (this.marks.length > 0 && !this.stopped) {
      this.recheck = setTimeout(() => this.wake(), GAP_RECHECK_MS);
      this.recheck.unref();
    }
  }

  /** One batch; resolves true when there may be more to read now. */
  private async readOnce(): Promise<boolean> {
    const { rows } = await this.pool.query<Row>(
      `SELECT e.seq::float8 AS seq, e.event, coalesce(f.cmd, c.cmd) AS cmd,
         pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, pg_snapshot_xmax(pg_current_snapshot())::text AS xmax
       FROM keel_events e
       LEFT JOIN keel_event_frames f ON f.seq = e.seq
       LEFT JOIN keel_commands c ON f.seq IS NULL AND c.id = e.command_id
       WHERE e.seq > $1 ORDER BY e.seq LIMIT $2`,
      [this.done, BATCH],
    );
    if (rows.length === 0) {
      this.marks.length = 0; // nothing above a gap: it is found again when something is
      return false;
    }
    const top = rows[rows.length - 1]!.seq;
    const xmin = BigInt(rows[0]!.xmin);
    let prev = this.done;
    const gapped = rows.some((r) => {
      const gap = r.seq !== prev + 1;
      prev = r.seq;
      return gap;
    });
    if (gapped && (this.marks.at(-1)?.below ?? -1) < top) this.marks.push({ below: top, xmax: BigInt(rows[0]!.xmax), since: performance.now() });
    while (this.marks.length > 0) {
      const m = this.marks[0]!;
      const waited = performance.now() - m.since;
      if (m.xmax > xmin && waited < GAP_WAIT_MS) break;
      if (m.xmax > xmin) this.onGapPassed(this.done, m.below);
      this.settledBelow = Math.max(this.settledBelow, m.below);
      this.marks.shift();
    }
    for (const r of rows) {
      if (r.seq !== this.done + 1 && r.seq - 1 > this.settledBelow) return false; // a gap that may still fill
      this.done = r.seq;
      if (r.cmd === null) continue; // forgotten before it was read: nothing to show
      for (const fn of this.listeners) fn(r.cmd, r.event, r.seq);
    }
    return rows.length === BATCH;
  }
}
