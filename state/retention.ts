// Retention: which final commands the server forgets, so memory and disk stay
// bounded under a constant load (docs/design.md, "Retention"). Past either
// bound the oldest final commands go: beyond `max` of them, and those final
// for longer than `ms`. Never a command that is not final.
//
// Forgetting is journaled (a `forget` record, command-table.ts), so a restart
// replays it like any transition: a forgotten command never comes back.
import type { CommandTable, ForgetRecord } from './command-table.ts';

export interface RetentionPolicy {
  /** Keep a final command this long after it became final. */
  ms: number;
  /** Keep at most this many final commands. */
  max: number;
}

export const DEFAULT_RETENTION: RetentionPolicy = { ms: 7 * 24 * 3_600_000, max: 1_000_000 };

/** Ids per forget record: one record stays a line of a few hundred KiB at most. */
const IDS_PER_RECORD = 4096;

/**
 * The forget records that bring `table` within `policy` at time `now`. The
 * ids are taken off the table's retention queue: the caller must commit the
 * records in this same tick.
 */
export function recordsToForget(table: CommandTable, policy: RetentionPolicy, now: number): ForgetRecord[] {
  const out: ForgetRecord[] = [];
  let over = table.finalCount - policy.max;
  for (;;) {
    const ids = table.takeOldestFinals(Math.min(Math.max(over, 0), IDS_PER_RECORD), now - policy.ms, IDS_PER_RECORD);
    if (ids.length === 0) return out;
    out.push({ forget: ids, at: now });
    over -= ids.length;
    if (ids.length < IDS_PER_RECORD) return out;
  }
}
