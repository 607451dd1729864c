// Which agents the server has heard from and when, and what each announced
// in its last claim (protocol version, command types). In memory: after a
// restart an agent shows up again with its next request. Online or not is
// judged on the monotonic clock (lib/clock.ts), so a step of the wall clock
// does not take every agent offline; lastSeen is shown as wall time.
import { monotonicMs } from '../clock.ts';
import { COMMAND_TYPES, type AgentView, type CommandType } from '../protocol.ts';

/** What an agent announces when it claims. */
export interface AgentCaps {
  protocol: number;
  /** undefined: it did not say, so it takes every type. */
  types: readonly CommandType[] | undefined;
}

interface Seen {
  mono: number;
  wall: number;
  caps?: AgentCaps;
}

export class AgentRegistry {
  private readonly lastSeen = new Map<string, Seen>();
  private readonly onlineWindowMs: number;

  constructor(onlineWindowMs: number) {
    this.onlineWindowMs = onlineWindowMs;
  }

  /** Heard from `agentId`; a claim passes what it announced. */
  seen(agentId: string, caps?: AgentCaps): void {
    const prev = this.lastSeen.get(agentId);
    this.lastSeen.set(agentId, { mono: monotonicMs(), wall: Date.now(), caps: caps ?? prev?.caps });
  }

  online(now = monotonicMs()): number {
    let n = 0;
    for (const t of this.lastSeen.values()) if (now - t.mono <= this.onlineWindowMs) n++;
    return n;
  }

  /**
   * The command types some online agent runs. An online agent that has not
   * claimed since the server started (busy with one long command, say) is
   * counted as running every type: it cannot be told apart from one that does.
   */
  runnableTypes(now = monotonicMs()): Set<CommandType> {
    const out = new Set<CommandType>();
    for (const t of this.lastSeen.values()) {
      if (now - t.mono > this.onlineWindowMs) continue;
      for (const type of t.caps?.types ?? COMMAND_TYPES) out.add(type);
      if (out.size === COMMAND_TYPES.length) break;
    }
    return out;
  }

  /** Every agent heard from since start, or holding commands, with what it holds. */
  list(heldBy: ReadonlyMap<string, ReadonlySet<string>>, now = monotonicMs()): AgentView[] {
    const ids = new Set([...this.lastSeen.keys(), ...[...heldBy].filter(([, s]) => s.size > 0).map(([id]) => id)]);
    return [...ids].sort().map((id): AgentView => {
      const seen = this.lastSeen.get(id);
      const caps = seen?.caps;
      return {
        id,
        status: seen !== undefined && now - seen.mono <= this.onlineWindowMs ? 'online' : 'offline',
        lastSeen: seen !== undefined ? new Date(seen.wall).toISOString() : null,
        commands: [...(heldBy.get(id) ?? [])],
        protocol: caps?.protocol ?? null,
        types: caps ? [...(caps.types ?? COMMAND_TYPES)] : null,
      };
    });
  }
}
