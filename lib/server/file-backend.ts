// The server on the file store: journal and snapshots in --state-dir, leases
// and deadlines timed in memory, parked claims offered commands as their
// records are queued (so a claim shares the group commit that made its command
// PENDING).
import fs from 'node:fs';
import { CommandStore } from '../../state/command-store.ts';
import { DEFAULT_RETENTION } from '../../state/retention.ts';
import type { Logger } from '../log.ts';
import { COLLECT_AFTER_COMMANDS, collectGarbage } from './after-load.ts';
import type { Backend, ServerConfig } from './context.ts';
import { DueClock } from './due-clock.ts';
import { LeaseClock } from './leases.ts';
import { RunDeadlines } from './run-deadlines.ts';
import { ClaimWaiters } from './waiters.ts';

/** How often final commands past --retain are looked for. */
const RETENTION_CHECK_MS = 1000;

/** Journal bytes since the last snapshot past which a clean shutdown writes one. */
export const SHUTDOWN_SNAPSHOT_BYTES = 1024 * 1024;

export interface FileBackend extends Backend {
  store: CommandStore;
}

export async function openFileBackend(config: ServerConfig, log: Logger & { error: Logger }): Promise<FileBackend> {
  const store = await CommandStore.open(config.stateDir, {
    repair: config.repair,
    log,
    snapshotBytes: config.snapshotBytes,
    retention: config.retention ?? DEFAULT_RETENTION,
  });
  const gcFrom = performance.now();
  const collected = store.table.size >= COLLECT_AFTER_COMMANDS && (await collectGarbage());
  const gcMs = collected ? Math.round(performance.now() - gcFrom) : undefined;
  const diskLog = (full: Error | undefined): void => {
    if (full) log.error('disk full: writes refused (503) until there is space; reads go on', { stateDir: config.stateDir, error: full.message });
    else log('disk has space again: writes resumed', { stateDir: config.stateDir });
  };
  store.durable.journal.onDiskFull(diskLog);
  if (store.diskFull) diskLog(store.diskFull);
  let retentionTimer: NodeJS.Timeout | undefined;
  const c = store.table.countByState;
  log('recovered', { stateDir: config.stateDir, commands: store.table.size, ...c, seq: store.durable.journal.lastSeq, ...(gcMs !== undefined ? { gcMs } : {}) });
  return {
    store,
    leases: new LeaseClock(store, config.leaseTimeoutMs, log),
    due: new DueClock(store, log),
    runDeadlines: new RunDeadlines(store, config.leaseTimeoutMs, log),
    claimWaiters: new ClaimWaiters(store),
    where: { stateDir: config.stateDir },
    start() {
      // The count bound is kept by every transition; the age bound needs a clock.
      retentionTimer = setInterval(() => void store.forgetExpired().catch(() => {}), RETENTION_CHECK_MS);
      retentionTimer.unref();
    },
    stop() {
      clearInterval(retentionTimer);
    },
    journal() {
      let bytesOnDisk = 0;
      for (const f of fs.readdirSync(config.stateDir)) {
        // Allocated blocks, not size: the live segment's reserved tail is a hole (state/journal.ts).
        if (f.startsWith('journal-') || f.startsWith('snapshot')) bytesOnDisk += fs.statSync(`${config.stateDir}/${f}`).blocks * 512;
      }
      return { stats: store.durable.journal.stats, bytesOnDisk };
    },
    async beforeClose() {
      // A snapshot on the way out, so the next start reads it alone instead
      // of replaying the journal written since the last one.
      if (store.durable.journal.currentSegmentBytes >= SHUTDOWN_SNAPSHOT_BYTES) {
        await store.durable.compact().catch((err: unknown) => log.error('shutdown snapshot failed', { error: String(err) }));
      }
    },
  };
}
