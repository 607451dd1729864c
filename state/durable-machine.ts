// A state machine that survives SIGKILL: its state is the last snapshot plus
// the journal records after it, replayed through the same apply() that live
// transitions use. The command store and the agent's ledger are both one.
import fs from 'node:fs';
import path from 'node:path';
import { crashPoint } from './crash-points.ts';
import { DiskFullError, isDiskFull, noSpaceLeft } from './disk-full.ts';
import { syncDir } from './fsio.ts';
import { checkDirectoryFormats, fileFormat, FORMAT } from './format.ts';
import { Journal, listSegments, segmentName } from './journal.ts';
import { lockStateDir, type StateLock } from './lock.ts';
import { openJournal, type Log } from './replay.ts';
import { installSnapshot, readSnapshot, SNAPSHOT_FILE, writeSnapshotTmp } from './snapshot.ts';

export interface Machine<R> {
  /** Written into the snapshot header, so a ledger is never read as a command table. */
  readonly name: string;
  /** Apply one record; throw (without mutating) if it does not follow the current state. */
  apply(rec: R): void;
  /** Optional, instead of apply() for the journal's records at open: the same checks, derived indexes may wait. */
  replay?(rec: R): void;
  /** Optional: the JSON a record is journaled as (default: the record itself). */
  toJournal?(rec: R): unknown;
  /** Optional: a journaled record back (default: as parsed); throws if it is not one. */
  fromJournal?(raw: unknown): R;
  /**
   * The whole state as of now, as snapshot lines (JSON text, no newline).
   * The lines may be read over many ticks while transitions go on: they must
   * still be those of this moment. done() is called when they have been read.
   */
  dump(): { lines: Iterable<string>; done(): void };
  /** Restore one line written by dump(). */
  load(line: string): void;
  /** Optional, instead of load(): restore a chunk of whole lines, each ending in a newline; may keep it. Returns the line count. */
  loadChunk?(chunk: Buffer): number;
  /** Optional: about this many lines are coming. */
  reserve?(lines: number): void;
}

export interface DurableOptions {
  /** Take a snapshot once the current journal segment passes this many bytes at most. Default 64 MiB. */
  snapshotBytes?: number;
  /** ...and not before this many (SNAPSHOT_FLOOR_BYTES; tests lower it). */
  snapshotFloorBytes?: number;
  /** Cut the journal at the first damaged record instead of refusing to open. */
  repair?: boolean;
  log?: Log;
  /** Role named in the lock owner file ("server", "agent"). Default "keel". */
  role?: string;
  /** Skip the directory lock (tests that open a directory twice on purpose). */
  noLock?: boolean;
  onLockCompromised?: (err: Error) => void;
  /**
   * While the disk is full, refuse commits with DiskFullError before applying
   * them (the server: memory never runs ahead of a disk that cannot catch
   * up), instead of queueing them until there is space (the agent, which
   * acts on a record only once it is durable anyway).
   */
  refuseWhenDiskFull?: boolean;
}

export const DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024;
/**
 * A snapshot is taken once the current journal segment holds half as many
 * bytes as the last snapshot, but not before this many, nor after
 * snapshotBytes: a restart then replays a journal about the state's own size
 * or smaller, and snapshots add at most two bytes written per journal byte
 * while the state is under twice snapshotBytes (past it, the cap bounds the
 * replay and memory at restart instead: a 240 MB state writes 3.75 bytes).
 */
export const SNAPSHOT_FLOOR_BYTES = 4 * 1024 * 1024;

export class DurableMachine<R> {
  readonly dir: string;
  readonly machine: Machine<R>;
  readonly journal: Journal;
  readonly snapshotBytes: number;
  private readonly snapshotFloorBytes: number;
  private readonly lock: StateLock | undefined;
  private readonly log: Log;
  private compacting: Promise<void> | undefined;
  /** Bytes of the last snapshot written or found at open. */
  private snapshotSize: number;
  private readonly refuseWhenDiskFull: boolean;
  snapshots = 0;
  /**
   * Set when open found files of an older format: the snapshot that rewrites
   * the directory in this release's format (see open()).
   */
  upgraded: Promise<void> | undefined;

  private constructor(dir: string, machine: Machine<R>, journal: Journal, lock: StateLock | undefined, opts: DurableOptions) {
    this.dir = dir;
    this.machine = machine;
    this.journal = journal;
    this.lock = lock;
    this.log = opts.log ?? (() => {});
    this.snapshotBytes = opts.snapshotBytes ?? DEFAULT_SNAPSHOT_BYTES;
    this.snapshotFloorBytes = opts.snapshotFloorBytes ?? SNAPSHOT_FLOOR_BYTES;
    this.refuseWhenDiskFull = opts.refuseWhenDiskFull ?? false;
    this.snapshotSize = fs.statSync(path.join(dir, SNAPSHOT_FILE), { throwIfNoEntry: false })?.size ?? 0;
  }

  /** Journal bytes past which commit() starts a snapshot (see SNAPSHOT_FLOOR_BYTES). */
  get compactAt(): number {
    return Math.min(this.snapshotBytes, Math.max(this.snapshotFloorBytes, this.snapshotSize / 2));
  }

  static async open<R>(dir: string, machine: Machine<R>, opts: DurableOptions = {}): Promise<DurableMachine<R>> {
    fs.mkdirSync(dir, { recursive: true });
    const lock = opts.noLock ? undefined : await lockStateDir(dir, opts.role ?? 'keel', opts.onLockCompromised);
    try {
      // Every header first: a directory holding a file of a newer format is
      // refused before anything in it is read or changed.
      const oldest = checkDirectoryFormats(dir, SNAPSHOT_FILE, listSegments(dir).map((s) => s.file));
      const afterSeq = readSnapshot(dir, machine);
      const journal = openJournal(dir, {
        afterSeq,
        repair: opts.repair,
        log: opts.log,
        onRecord: onRecord(machine),
      });
      // Upgrade in place: records of this release go to a segment of this
      // format, and a snapshot written now replaces every older file.
      const current = path.join(dir, segmentName(journal.currentSegmentFirstSeq));
      if ((fileFormat(current, 'journal') ?? FORMAT) < FORMAT) journal.startNewSegment();
      // Started on a full disk: read-only from the first request, not from the first failed write.
      if (noSpaceLeft(dir)) journal.markDiskFull(Object.assign(new Error(`ENOSPC: no space left on device (${dir})`), { code: 'ENOSPC' }));
      const durable = new DurableMachine(dir, machine, journal, lock, opts);
      if (oldest < FORMAT) {
        durable.log('upgrading state directory', { fromFormat: oldest, toFormat: FORMAT });
        durable.upgraded = durable.compact();
        durable.upgraded.catch((err: unknown) => durable.log('upgrade snapshot failed', { error: String(err) }));
      }
      return durable;
    } catch (err) {
      await lock?.release().catch(() => {});
      throw err;
    }
  }

  /**
   * Apply records to the in-memory state now and resolve once they are on
   * disk. Callers acknowledge a transition only after this resolves; readers
   * that must not see unacknowledged state await sync() first.
   * If a record does not follow, the ones before it are already applied, so
   * they are journaled anyway (memory must never hold what replay would not)
   * and the promise rejects with that record's error once they are durable.
   */
  commit(recs: readonly R[]): Promise<void> {
    return this.applyAndAppend(recs, (applied) => this.journal.append(this.journalForm(applied)));
  }

  /**
   * As commit(), but the records get no fdatasync of their own: the promise
   * resolves once they are written to the file (a SIGKILL keeps them, an OS
   * crash may not), or are queued on a full disk, and the next fdatasync,
   * anyone's or sync()'s, makes them durable (Journal.appendUnsynced).
   */
  commitUnsynced(recs: readonly R[]): Promise<'written' | 'queued'> {
    return this.applyAndAppend(recs, (applied) => this.journal.appendUnsynced(this.journalForm(applied)));
  }

  private journalForm(recs: readonly R[]): readonly unknown[] {
    const to = this.machine.toJournal;
    return to === undefined ? recs : recs.map((r) => to.call(this.machine, r));
  }

  private applyAndAppend<T>(recs: readonly R[], append: (applied: readonly R[]) => Promise<T>): Promise<T> {
    const full = this.journal.diskFull;
    if (full && this.refuseWhenDiskFull) return Promise.reject(new DiskFullError(this.dir, full));
    let applied = 0;
    let refused: { err: unknown } | undefined;
    try {
      for (const r of recs) {
        this.machine.apply(r);
        applied++;
      }
    } catch (err) {
      refused = { err };
    }
    if (refused && applied === 0) return Promise.reject(refused.err);
    const done = append(refused ? recs.slice(0, applied) : recs);
    if (this.compacting === undefined && !full && this.journal.currentSegmentBytes >= this.compactAt) void this.compact();
    return refused ? done.then(() => Promise.reject(refused.err)) : done;
  }

  sync(): Promise<void> {
    return this.journal.sync();
  }

  /**
   * Snapshot the state as of the last appended record, then drop the journal
   * segments it covers. Each step leaves a directory that reopens to the same
   * state: see the crash points. Waits for a compaction already under way,
   * since both would write and rename the same snapshot.jsonl.tmp.
   */
  async compact(): Promise<void> {
    while (this.compacting) await this.compacting.catch(() => {});
    this.compacting = this.compactNow().finally(() => (this.compacting = undefined));
    return this.compacting;
  }

  private async compactNow(): Promise<void> {
    // The cut, the dump and the rotation are taken in one tick: the snapshot
    // is exactly the state after record `seq`, and later records go to the
    // new segment. Then the file is written in the background.
    const seq = this.journal.lastSeq;
    const dump = this.machine.dump();
    // rotate() first flushes every record up to seq: the snapshot never
    // covers a record that is not durable in the journal too.
    const rotated = this.journal.rotate();
    rotated.catch(() => {}); // awaited below, unless the snapshot is given up
    try {
      this.snapshotSize = await writeSnapshotTmp(this.dir, this.machine.name, seq, dump.lines);
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      // The journal still holds everything; the next segment to grow past
      // the bound tries again. Only the tmp file is given up.
      fs.rmSync(path.join(this.dir, `${SNAPSHOT_FILE}.tmp`), { force: true });
      this.log('snapshot postponed: disk full', { seq, error: err.message });
      return;
    } finally {
      dump.done();
    }
    await rotated;
    crashPoint('snapshot:rotated');
    installSnapshot(this.dir);
    const old = listSegments(this.dir).filter((s) => s.firstSeq <= seq);
    for (const s of old) {
      fs.unlinkSync(s.file);
      crashPoint('snapshot:segment-deleted');
    }
    syncDir(this.dir);
    this.snapshots++;
    this.log('snapshot written', { seq, segmentsRemoved: old.length });
  }

  async close(): Promise<void> {
    await this.compacting?.catch(() => {});
    // On a full disk what is queued cannot be written: close() rejects it.
    if (!this.journal.diskFull) await this.journal.sync().catch(() => {});
    this.journal.close();
    await this.lock?.release().catch(() => {});
  }
}

/** What open hands each journal record to: fromJournal, then replay (or apply). */
function onRecord<R>(machine: Machine<R>): (raw: unknown) => void {
  const take = machine.replay ? (rec: R): void => machine.replay!(rec) : (rec: R): void => machine.apply(rec);
  const from = machine.fromJournal;
  return from === undefined ? (raw) => take(raw as R) : (raw) => take(from.call(machine, raw));
}
