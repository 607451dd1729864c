// DELAY {ms}: wait until startedAt + ms, so a DELAY resumed after a crash
// keeps its original deadline, and report the true time taken from startedAt.
// startedAt is journaled as wall time because it must cross a restart; the
// wait and tookMs run on the monotonic clock (lib/clock.ts), from the moment
// the execution began in this process or, resumed, from where the wall clock
// says it began. A step of the wall clock neither cuts a delay short nor
// stretches it.
import { setTimeout as sleep } from 'node:timers/promises';
import type { DelayPayload, DelayResult } from '../../protocol.ts';
import { crashPoint } from '../../../state/crash-points.ts';
import { monotonicMs, type Moment } from '../../clock.ts';

/** Resolves with the result at the deadline; rejects with signal.reason if aborted first. */
export async function runDelay(payload: DelayPayload, started: Moment, signal: AbortSignal): Promise<DelayResult> {
  const t0 = started.mono;
  const deadline = t0 + payload.ms;
  const midpoint = t0 + payload.ms / 2;
  if (monotonicMs() < midpoint) {
    await waitUntil(midpoint, signal);
    crashPoint('agent:mid-delay');
  }
  await waitUntil(deadline, signal);
  return { ok: true, tookMs: Math.floor(monotonicMs() - t0) };
}

// Timers round to whole milliseconds and may fire a little before the
// target, so loop until the clock really has reached it: tookMs >= ms is a promise.
async function waitUntil(at: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  for (let left = at - monotonicMs(); left > 0; left = at - monotonicMs()) {
    await sleep(Math.ceil(left), undefined, { signal }).catch(() => signal.throwIfAborted());
  }
  signal.throwIfAborted();
}
