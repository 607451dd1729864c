// Exponential backoff with "equal jitter": half the step is fixed, half random,
// so agents that lost the server together do not come back in lockstep, yet
// none retries in a hot loop.
export interface BackoffOptions {
  /** First step. Default 100 ms. */
  baseMs?: number;
  /** Largest step. Default 3 s. */
  capMs?: number;
}

export class Backoff {
  private readonly baseMs: number;
  private readonly capMs: number;
  private attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 100;
    this.capMs = opts.capMs ?? 3000;
  }

  /** The next delay; each call doubles the step up to the cap. */
  next(): number {
    const step = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return step / 2 + Math.random() * (step / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after ms, or rejects with signal.reason if it aborts first. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
