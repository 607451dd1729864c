// DELAY {ms}: wait until startedAt + ms, so a DELAY resumed after a crash
// keeps its original deadline, and report the true time taken from startedAt.
import { setTimeout as sleep } from 'node:timers/promises';
import type { DelayPayload, DelayResult } from '../../protocol.ts';
import { crashPoint } from '../../../state/crash-points.ts';

/** Resolves with the result at the deadline; rejects with signal.reason if aborted first. */
export async function runDelay(payload: DelayPayload, startedAt: number, signal: AbortSignal): Promise<DelayResult> {
  const deadline = startedAt + payload.ms;
  const midpoint = startedAt + payload.ms / 2;
  if (Date.now() < midpoint) {
    await waitUntil(midpoint, signal);
    crashPoint('agent:mid-delay');
  }
  await waitUntil(deadline, signal);
  return { ok: true, tookMs: Date.now() - startedAt };
}

// Timers may fire a millisecond before Date.now() reaches the target
// (they run on a monotonic clock and round), so loop until it really has:
// tookMs >= ms is a promise.
async function waitUntil(at: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  for (let left = at - Date.now(); left > 0; left = at - Date.now()) {
    await sleep(left, undefined, { signal }).catch(() => signal.throwIfAborted());
  }
  signal.throwIfAborted();
}
