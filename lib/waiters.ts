// Long-poll bookkeeping. ClaimWaiters: agents waiting for work, woken one per
// command that becomes PENDING. FinalWaiters: clients waiting on one command
// to reach COMPLETED or FAILED.

export class ClaimWaiters {
  private queue: Array<() => void> = [];

  /** Resolves when woken, when `ms` pass, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.queue = this.queue.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      this.queue.push(done);
    });
  }

  wakeOne(): void {
    this.queue[0]?.();
  }

  get size(): number {
    return this.queue.length;
  }
}

export class FinalWaiters {
  private readonly byId = new Map<string, Set<() => void>>();

  wait(id: string, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.byId.get(id);
      if (!set) this.byId.set(id, (set = new Set()));
      const s = set;
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        s.delete(done);
        if (s.size === 0) this.byId.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      s.add(done);
    });
  }

  wake(id: string): void {
    for (const w of [...(this.byId.get(id) ?? [])]) w();
  }
}
