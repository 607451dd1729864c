// Which agents the server has heard from and when. In memory: after a
// restart an agent shows up again with its next request. Online or not is
// judged on the monotonic clock (lib/clock.ts), so a step of the wall clock
// does not take every agent offline; lastSeen is shown as wall time.
import { monotonicMs } from '../clock.ts';
import type { AgentView } from '../protocol.ts';

export class AgentRegistry {
  private readonly lastSeen = new Map<string, { mono: number; wall: number }>();
  private readonly onlineWindowMs: number;

  constructor(onlineWindowMs: number) {
    this.onlineWindowMs = onlineWindowMs;
  }

  seen(agentId: string): void {
    this.lastSeen.set(agentId, { mono: monotonicMs(), wall: Date.now() });
  }

  online(now = monotonicMs()): number {
    let n = 0;
    for (const t of this.lastSeen.values()) if (now - t.mono <= this.onlineWindowMs) n++;
    return n;
  }

  /** Every agent heard from since start, or holding commands, with what it holds. */
  list(heldBy: ReadonlyMap<string, ReadonlySet<string>>, now = monotonicMs()): AgentView[] {
    const ids = new Set([...this.lastSeen.keys(), ...[...heldBy].filter(([, s]) => s.size > 0).map(([id]) => id)]);
    return [...ids].sort().map((id) => {
      const seen = this.lastSeen.get(id);
      return {
        id,
        status: seen !== undefined && now - seen.mono <= this.onlineWindowMs ? 'online' : 'offline',
        lastSeen: seen !== undefined ? new Date(seen.wall).toISOString() : null,
        commands: [...(heldBy.get(id) ?? [])],
      } as AgentView;
    });
  }
}
