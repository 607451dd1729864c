// The subcommands that read: get, ls and agents.
import type { AgentView, CommandList, CommandView } from '../protocol.ts';
import { COMMAND_STATUSES, COMMAND_TYPES } from '../protocol.ts';
import { UsageError } from '../flags.ts';
import { EXIT, type ExitCode } from './errors.ts';
import { choiceList, idArg, integerValue, type Invocation } from './invocation.ts';
import { commandBlock, jsonDoc, outcomeSummary, shortDuration, table } from './output.ts';

/** The server's largest page. */
const PAGE = 1000;

export async function get(inv: Invocation): Promise<ExitCode> {
  const r = await inv.client().request<CommandView>('GET', `/commands/${idArg(inv)}`);
  inv.stdout.write(inv.json ? jsonDoc(r.body) : commandBlock(r.body));
  return EXIT.OK;
}

export async function ls(inv: Invocation): Promise<ExitCode> {
  const limit = integerValue(inv, 'limit', 1, 1_000_000) ?? 20;
  const status = choiceList(inv, 'status', COMMAND_STATUSES);
  const type = choiceList(inv, 'type', COMMAND_TYPES);
  if (status && status.length > 1) throw new UsageError('--status takes one status');
  if (type && type.length > 1) throw new UsageError('--type takes one type');
  const commands: CommandView[] = [];
  let cursor: string | null = null;
  let now = Date.now();
  do {
    const q = new URLSearchParams({ limit: String(Math.min(PAGE, limit - commands.length)) });
    if (status) q.set('status', status[0]!);
    if (type) q.set('type', type[0]!);
    if (cursor !== null) q.set('cursor', cursor);
    const r = await inv.client().request<CommandList>('GET', `/commands?${q}`);
    commands.push(...r.body.commands);
    cursor = r.body.nextCursor;
    now = r.serverNow;
  } while (cursor !== null && commands.length < limit);
  if (inv.json) {
    inv.stdout.write(jsonDoc({ commands, nextCursor: cursor }));
    return EXIT.OK;
  }
  const rows = commands.map((c) => [c.id, c.type, c.status, shortDuration(now - Date.parse(c.createdAt)), c.agentId ?? '', outcomeSummary(c, now)]);
  inv.stdout.write(table(['ID', 'TYPE', 'STATUS', 'AGE', 'AGENT', 'OUTCOME'], rows));
  return EXIT.OK;
}

export async function agents(inv: Invocation): Promise<ExitCode> {
  const r = await inv.client().request<{ agents: AgentView[] }>('GET', '/agents');
  if (inv.json) {
    inv.stdout.write(jsonDoc(r.body));
    return EXIT.OK;
  }
  const now = r.serverNow;
  const rows = r.body.agents.map((a) => [
    a.id,
    a.status,
    a.lastSeen === null ? 'not since restart' : `${shortDuration(now - Date.parse(a.lastSeen))} ago`,
    a.protocol === null || a.protocol === undefined ? '-' : String(a.protocol),
    a.types ? a.types.join(',') : '-',
    String(a.commands.length),
    a.commands.join(','),
  ]);
  inv.stdout.write(table(['ID', 'STATUS', 'LAST SEEN', 'PROTOCOL', 'TYPES', 'HOLDS', 'COMMANDS'], rows));
  return EXIT.OK;
}
