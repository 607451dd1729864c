// How long a failed attempt waits before the next one. "Equal jitter": half
// of the computed delay is kept, the other half is drawn at random, so
// retries of many commands that failed together spread out, yet none comes
// back sooner than half its delay. The draw happens once, in the server, and
// the time it gives is journaled with the failure: replay never redraws it.
import type { RetryPolicy } from './command-types.ts';

/** The delay before attempt `failed + 1`, in ms, before jitter. */
export function backoffDelay(policy: RetryPolicy, failed: number): number {
  if (policy.backoff === 'fixed') return Math.min(policy.delayMs, policy.maxDelayMs);
  const exp = policy.delayMs * 2 ** Math.min(failed - 1, 52);
  return Math.min(exp, policy.maxDelayMs);
}

/** When the next attempt is due after attempt number `failed` failed at `at`; `random` in [0, 1). */
export function retryAt(policy: RetryPolicy, failed: number, at: number, random: () => number): number {
  const d = backoffDelay(policy, Math.max(1, failed));
  return at + Math.round(d / 2 + random() * (d / 2));
}
