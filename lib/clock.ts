// Two clocks, one rule. Durations and deadlines inside one process (leases,
// heartbeats, sweeps, timeouts, tookMs) run on the monotonic clock: NTP
// corrections, a VM resume or an operator stepping the wall clock do not
// move it. Wall time (Date.now()) is only for what must cross a restart or
// be read by a person: createdAt and every journaled `at`, a DELAY's
// startedAt, lock-file mtimes.

/** Milliseconds on the monotonic clock; only differences mean anything. */
export function monotonicMs(): number {
  return performance.now();
}

/** One instant on both clocks: wall time to journal, monotonic to measure from. */
export interface Moment {
  wall: number;
  mono: number;
}

export function currentMoment(): Moment {
  return { wall: Date.now(), mono: monotonicMs() };
}

/**
 * A journaled wall time read again after a restart, placed on this process's
 * monotonic clock. Elapsed wall time is all there is to go by across a
 * restart; a wall clock stepped back since counts as none elapsed.
 */
export function momentFromWall(wall: number): Moment {
  return { wall, mono: monotonicMs() - Math.max(0, Date.now() - wall) };
}
