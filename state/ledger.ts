// The agent's ledger: what this agent has claimed, begun, finished and
// reported, journaled with fsync before each step that matters (docs/design.md,
// "Recovery: the agent"). `done` is written at once but synced only when the
// server does not take the finish in time (lib/agent/command-steps.ts).
// Settled entries (reported or dropped) leave the state, so snapshots compact
// them away.
import type { CommandType, Outcome, Payload } from './command-types.ts';
import { DurableMachine, type DurableOptions, type Machine } from './durable-machine.ts';

export type LedgerStep = 'claimed' | 'executing' | 'done';

export interface LedgerEntry {
  id: string;
  lease: number;
  type: CommandType;
  payload: Payload;
  step: LedgerStep;
  /** Set by a `claimed` record, from ledgers written before claim-and-start. */
  claimedAt?: number;
  /** The command's execution limit, as the claim said; absent: none. */
  timeoutMs?: number;
  startedAt?: number;
  outcome?: Outcome;
  result?: unknown;
  error?: string | null;
}

export type LedgerRecord =
  | { t: 'identity'; agentId: string }
  // Written before claim-and-start only: a fresh claim's first record is now `executing`.
  | { t: 'claimed'; id: string; lease: number; type: CommandType; payload: Payload; at: number; timeoutMs?: number }
  // type and payload (and timeoutMs) are absent only after a `claimed`, which holds them.
  | { t: 'executing'; id: string; lease: number; startedAt: number; type?: CommandType; payload?: Payload; timeoutMs?: number }
  | { t: 'done'; id: string; lease: number; outcome: Outcome; result: unknown; error: string | null }
  | { t: 'reported'; id: string; lease: number }
  | { t: 'dropped'; id: string; lease: number; reason: string };

/**
 * Which steps each record may follow; `null`: the id has no open entry. A
 * claimed command's first record is `executing`, written (one fdatasync for a
 * whole claim answer) before it runs: without it, nothing ran. `claimed` and
 * `dropped` come only from ledgers written before claim-and-start.
 */
export const LEDGER_STEPS: Readonly<Record<Exclude<LedgerRecord['t'], 'identity'>, { from: ReadonlyArray<LedgerStep | null>; to: LedgerStep | 'settled' }>> = {
  executing: { from: [null, 'claimed'], to: 'executing' },
  done: { from: ['executing'], to: 'done' },
  reported: { from: ['done'], to: 'settled' },
  claimed: { from: [null], to: 'claimed' },
  dropped: { from: ['claimed'], to: 'settled' },
};

type Snap = { agentId: string } | { entry: LedgerEntry };

export class LedgerState implements Machine<LedgerRecord> {
  readonly name = 'ledger';
  agentId: string | undefined;
  readonly entries = new Map<string, LedgerEntry>();

  apply(rec: LedgerRecord): void {
    if (rec.t === 'identity') {
      if (this.agentId !== undefined && this.agentId !== rec.agentId) throw new Error(`identity is already ${this.agentId}`);
      this.agentId = rec.agentId;
      return;
    }
    const cur = this.entries.get(rec.id);
    const rule = LEDGER_STEPS[rec.t];
    if (!rule.from.includes(cur?.step ?? null)) {
      throw new Error(`${rec.t} of ${rec.id} must follow ${rule.from.map((f) => f ?? 'nothing').join(' or ')}, but the entry is ${cur?.step ?? 'absent'}`);
    }
    if (cur && cur.lease !== rec.lease) throw new Error(`${rec.t} of ${rec.id} names lease ${rec.lease}, the entry holds ${cur.lease}`);
    switch (rec.t) {
      case 'claimed':
        this.entries.set(rec.id, { id: rec.id, lease: rec.lease, type: rec.type, payload: rec.payload, step: 'claimed', claimedAt: rec.at, ...(rec.timeoutMs ? { timeoutMs: rec.timeoutMs } : {}) });
        return;
      case 'executing': {
        const type = rec.type ?? cur?.type;
        const payload = rec.payload ?? cur?.payload;
        if (type === undefined || payload === undefined) throw new Error(`executing of ${rec.id} names no command type or payload`);
        const timeoutMs = rec.timeoutMs ?? cur?.timeoutMs;
        this.entries.set(rec.id, { ...cur, id: rec.id, lease: rec.lease, type, payload, step: 'executing', startedAt: rec.startedAt, ...(timeoutMs ? { timeoutMs } : {}) });
        return;
      }
      case 'done':
        this.entries.set(rec.id, { ...cur!, step: 'done', outcome: rec.outcome, result: rec.result, error: rec.error });
        return;
      case 'reported':
      case 'dropped':
        this.entries.delete(rec.id);
        return;
    }
  }

  dump(): { lines: Iterable<string>; done(): void } {
    // Small: copied out now, which is all a consistent dump needs.
    const snaps: Snap[] = this.agentId !== undefined ? [{ agentId: this.agentId }] : [];
    for (const entry of this.entries.values()) snaps.push({ entry });
    return { lines: snaps.map((s) => JSON.stringify(s)), done() {} };
  }

  load(line: string): void {
    const s = JSON.parse(line) as Snap;
    if ('agentId' in s) this.agentId = s.agentId;
    else this.entries.set(s.entry.id, s.entry);
  }
}

export const DEFAULT_LEDGER_SNAPSHOT_BYTES = 1024 * 1024;

/**
 * Records that settle an entry start no fsync of their own: they ride with
 * the next flush (state/journal.ts, deferrable). Nothing the agent does
 * depends on them being on disk: if a crash loses one, the next start finds
 * the entry `done` and reports it again (idempotent), or `claimed` and gives
 * it back, which the server refuses for what was dropped. write() still
 * resolves only once they are durable.
 */
const SETTLING: ReadonlySet<LedgerRecord['t']> = new Set(['reported', 'dropped']);

export class Ledger {
  readonly state: LedgerState;
  readonly durable: DurableMachine<LedgerRecord>;

  private constructor(state: LedgerState, durable: DurableMachine<LedgerRecord>) {
    this.state = state;
    this.durable = durable;
  }

  static async open(dir: string, opts: DurableOptions = {}): Promise<Ledger> {
    const state = new LedgerState();
    const durable = await DurableMachine.open(dir, state, { role: 'agent', snapshotBytes: DEFAULT_LEDGER_SNAPSHOT_BYTES, ...opts });
    durable.journal.deferrable = (rec) => SETTLING.has((rec as LedgerRecord).t);
    // The last run may have been killed with a `done` written and not yet
    // synced: the page cache kept it, a power cut would not. Its result is
    // this run's to keep now, so it is made durable before anything acts on it.
    durable.journal.distrustTail();
    if (!durable.journal.diskFull) await durable.sync();
    return new Ledger(state, durable);
  }

  get agentId(): string | undefined {
    return this.state.agentId;
  }

  get(id: string): LedgerEntry | undefined {
    return this.state.entries.get(id);
  }

  /** Entries not yet settled, oldest claim first: what reconciliation walks. */
  open(): LedgerEntry[] {
    return [...this.state.entries.values()];
  }

  /** The ENOSPC holding ledger writes back, while the disk is full: writes wait for space. */
  get diskFull(): Error | undefined {
    return this.durable.journal.diskFull;
  }

  /** Resolves once the ledger's disk has space (at once if it has). */
  whenSpace(): Promise<void> {
    return this.durable.journal.whenSpace();
  }

  /**
   * Journal records; resolves once they are fsynced (settling ones ride with
   * the next flush). On a full disk they wait, queued in order, until there is space.
   */
  write(...recs: LedgerRecord[]): Promise<void> {
    return this.durable.commit(recs);
  }

  /**
   * Journal records without an fdatasync of their own: resolves `written`
   * once they are in the file (a SIGKILL keeps them; an OS crash may not),
   * or `queued` at once if the disk is full (they are written when space
   * returns). The next fsync of the ledger covers them: any write()'s, or sync().
   */
  writeUnsynced(...recs: LedgerRecord[]): Promise<'written' | 'queued'> {
    return this.durable.commitUnsynced(recs);
  }

  /** Resolves once every record written so far is durable; an fdatasync only if one is not. */
  sync(): Promise<void> {
    return this.durable.sync();
  }

  close(): Promise<void> {
    return this.durable.close();
  }
}
