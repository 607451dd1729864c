// keel stats: how many commands are in each status (from /metrics, exact),
// the agents online, and the commands that finished in the last minute. The
// server keeps no per-minute tally, so that last figure is counted from the
// newest commands of each final status: the list is in submission order, so
// the scan stops at a page with none finished in the window and all
// submitted before it, or at SCAN_LIMIT.
import { COMMAND_STATUSES, type AgentView, type CommandList, type CommandStatus } from '../protocol.ts';
import { EXIT, type ExitCode } from './errors.ts';
import type { Invocation } from './invocation.ts';
import { jsonDoc, keyValues, table } from './output.ts';

const WINDOW_MS = 60_000;
const SCAN_LIMIT = 20_000;
const PAGE = 1000;

/** keel_commands{state="X"} N, by internal state. */
export function commandsByState(metrics: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^keel_commands\{state="([A-Z_]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

function statusOf(state: string): CommandStatus {
  return state === 'RUNNING' || state === 'COMPLETED' || state === 'FAILED' ? state : 'PENDING';
}

interface Tally {
  count: number;
  scanned: number;
  /** The scan stopped at SCAN_LIMIT: count is a lower bound. */
  capped: boolean;
}

/** Commands of `status` whose last change falls in [since, ...), and how many were looked at. */
async function finishedSince(inv: Invocation, status: CommandStatus, since: number): Promise<Tally> {
  let count = 0;
  let scanned = 0;
  let cursor: string | null = null;
  do {
    const q = new URLSearchParams({ status, limit: String(PAGE) });
    if (cursor !== null) q.set('cursor', cursor);
    const page: CommandList = (await inv.client().request<CommandList>('GET', `/commands?${q}`)).body;
    let hits = 0;
    for (const c of page.commands) if (Date.parse(c.updatedAt) >= since) hits++;
    count += hits;
    scanned += page.commands.length;
    const allOlder = page.commands.every((c) => Date.parse(c.createdAt) < since);
    cursor = hits === 0 && allOlder ? null : page.nextCursor;
  } while (cursor !== null && scanned < SCAN_LIMIT);
  return { count, scanned, capped: cursor !== null };
}

export async function stats(inv: Invocation): Promise<ExitCode> {
  const client = inv.client();
  const [metrics, agentsAnswer] = await Promise.all([client.metricsText(), client.request<{ agents: AgentView[] }>('GET', '/agents')]);
  const states = commandsByState(metrics);
  const counts: Record<string, number> = Object.fromEntries(COMMAND_STATUSES.map((s) => [s, 0]));
  for (const [state, n] of Object.entries(states)) counts[statusOf(state)]! += n;
  const since = agentsAnswer.serverNow - WINDOW_MS;
  const [completed, failed] = await Promise.all([finishedSince(inv, 'COMPLETED', since), finishedSince(inv, 'FAILED', since)]);
  const online = agentsAnswer.body.agents.filter((a) => a.status === 'online').length;
  const agents = { online, offline: agentsAnswer.body.agents.length - online };
  const lastMinute = {
    completed: completed.count,
    failed: failed.count,
    perSecond: Math.round(((completed.count + failed.count) / (WINDOW_MS / 1000)) * 100) / 100,
    scanned: completed.scanned + failed.scanned,
    /** True when a figure is a lower bound (the scan stopped at its limit). */
    capped: completed.capped || failed.capped,
  };
  if (inv.json) {
    inv.stdout.write(jsonDoc({ counts, states, agents, lastMinute }));
    return EXIT.OK;
  }
  const rows = COMMAND_STATUSES.map((s) => {
    const parts = Object.entries(states).filter(([st, n]) => statusOf(st) === s && st !== s && n > 0);
    return [s, String(counts[s]), parts.map(([st, n]) => `${st} ${n}`).join(', ')];
  });
  inv.stdout.write(table(['STATUS', 'COMMANDS', 'OF WHICH'], rows));
  inv.stdout.write('\n');
  inv.stdout.write(keyValues([
    ['agents', `${agents.online} online, ${agents.offline} offline`],
    ['last minute', `${lastMinute.capped ? 'at least ' : ''}${lastMinute.completed} completed, ${lastMinute.failed} failed (${lastMinute.perSecond}/s)`],
  ]));
  return EXIT.OK;
}
