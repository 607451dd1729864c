// Which agents the server has heard from and when. In memory: after a
// restart an agent shows up again with its next request.
import type { AgentView } from '../protocol.ts';

export class AgentRegistry {
  private readonly lastSeen = new Map<string, number>();
  private readonly onlineWindowMs: number;

  constructor(onlineWindowMs: number) {
    this.onlineWindowMs = onlineWindowMs;
  }

  seen(agentId: string): void {
    this.lastSeen.set(agentId, Date.now());
  }

  online(now = Date.now()): number {
    let n = 0;
    for (const t of this.lastSeen.values()) if (now - t <= this.onlineWindowMs) n++;
    return n;
  }

  /** Every agent heard from since start, or holding commands, with what it holds. */
  list(heldBy: ReadonlyMap<string, ReadonlySet<string>>, now = Date.now()): AgentView[] {
    const ids = new Set([...this.lastSeen.keys(), ...[...heldBy].filter(([, s]) => s.size > 0).map(([id]) => id)]);
    return [...ids].sort().map((id) => {
      const seen = this.lastSeen.get(id);
      return {
        id,
        status: seen !== undefined && now - seen <= this.onlineWindowMs ? 'online' : 'offline',
        lastSeen: seen !== undefined ? new Date(seen).toISOString() : null,
        commands: [...(heldBy.get(id) ?? [])],
      } as AgentView;
    });
  }
}
