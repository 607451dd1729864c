// agent.ts's command line: every flag, its default, and what a bad value says.
import { durationFlag, fileFlag, intFlag, parseFlags, secretFlag, stringFlag, UsageError, type FlagValues } from '../flags.ts';
import { UrlPolicy } from './url-policy.ts';
import { AGENT_ID_RE, COMMAND_TYPES, PROTOCOL_VERSION, type CommandType } from '../protocol.ts';

export const USAGE = `usage: node --import tsx agent.ts [flags]

  --server URL[,URL...]   control server (default http://127.0.0.1:3000); several
                          servers on one store, comma-separated: the agent moves to
                          the next when one stops answering
  --state-dir DIR         the agent's ledger (default ./data/agent)
  --id ID                 agent id (default: generated on first start, kept in the ledger)
  --concurrency N         commands run at once (default 1)
  --types T1,T2           the command types this agent runs (default all: DELAY,HTTP_GET_JSON)
  --token TOKEN           bearer token for the server (default: $KEEL_TOKEN)
  --token-file FILE       the token read from FILE: keeps it out of ps
  --ca FILE               trust only the CA certificate(s) in FILE (PEM) for an https:// server
  --http-timeout DUR      HTTP_GET_JSON time limit (default 10s)
  --allow-url RULES       HTTP_GET_JSON may fetch only these: CIDR ranges, IPs, host names
                          or patterns (*.example.com), comma-separated or repeated
  --deny-url RULES        HTTP_GET_JSON may never fetch these (same forms); link-local
                          addresses (169.254.0.0/16, fe80::/10) are denied unless allowed
  --max-body SIZE         HTTP_GET_JSON body cap, e.g. 65536, 64KiB, 1MiB (default 64KiB)
  --grace DUR             on SIGTERM/SIGINT, time to finish work in hand (default 10s)
  --repair                cut a damaged ledger journal at the first bad record
                          and start (the records from there on are dropped)
  --supervise             run the agent as a child process; restart it when it dies
  --kill-after N[polls]   SIGKILL itself N seconds after opening its ledger,
                          or before its (N+1)th claim with "Npolls"
  --random-failures[=P]   SIGKILL itself at each crash point with probability P (default 0.2)
  --seed S                makes --random-failures reproducible
  --help                  print this and exit
`;

export type KillAfter = { seconds: number } | { polls: number };

export interface AgentConfig {
  /** The servers, in the order tried (--server URL1,URL2,...): all in front of one store. */
  servers: string[];
  stateDir: string;
  id: string | undefined;
  concurrency: number;
  /** The command types it runs; the server hands it only these. */
  types: CommandType[];
  /** The protocol version it announces (hidden flag --protocol: tests of a mismatch). */
  protocol: number;
  token: string | undefined;
  /** PEM CA certificate(s) the agent trusts for an https:// server, instead of the system's. */
  ca: Buffer | undefined;
  httpTimeoutMs: number;
  /** What HTTP_GET_JSON may fetch (--allow-url, --deny-url). */
  urlPolicy: UrlPolicy;
  maxBodyBytes: number;
  graceMs: number;
  repair: boolean;
  supervise: boolean;
  killAfter: KillAfter | undefined;
  randomFailures: number | undefined;
  seed: string | undefined;
  help: boolean;
}

export const DEFAULT_RANDOM_FAILURES = 0.2;

const OPTIONS = {
  server: { type: 'string' },
  'state-dir': { type: 'string' },
  id: { type: 'string' },
  concurrency: { type: 'string' },
  types: { type: 'string' },
  // Hidden (not in the usage): tests announce another protocol version.
  protocol: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  ca: { type: 'string' },
  'http-timeout': { type: 'string' },
  'allow-url': { type: 'string', multiple: true },
  'deny-url': { type: 'string', multiple: true },
  'max-body': { type: 'string' },
  grace: { type: 'string' },
  repair: { type: 'boolean' },
  supervise: { type: 'boolean' },
  'kill-after': { type: 'string' },
  'random-failures': { type: 'string' },
  seed: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseAgentConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig {
  const v = parseFlags(withOptionalValues(argv), OPTIONS);
  const servers = serversFlag(stringFlag(v, 'server', 'http://127.0.0.1:3000'));
  const id = v.id as string | undefined;
  if (id !== undefined && !AGENT_ID_RE.test(id)) throw new UsageError(`--id must be 1 to 128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit; got ${JSON.stringify(id)}`);
  return {
    servers,
    stateDir: stringFlag(v, 'state-dir', './data/agent'),
    id,
    concurrency: intFlag(v, 'concurrency', 1, 1, 1024),
    types: typesFlag(v.types as string | undefined),
    protocol: intFlag(v, 'protocol', PROTOCOL_VERSION, 1, 1_000_000),
    token: secretFlag(v, 'token') ?? (env.KEEL_TOKEN || undefined),
    ca: caFlag(v, servers),
    httpTimeoutMs: positive('http-timeout', durationFlag(v, 'http-timeout', 10_000)),
    urlPolicy: new UrlPolicy(rules(v['allow-url'], 'allow-url'), rules(v['deny-url'], 'deny-url')),
    maxBodyBytes: sizeFlag(v['max-body'] as string | undefined, 64 * 1024),
    graceMs: durationFlag(v, 'grace', 10_000),
    repair: v.repair === true,
    supervise: v.supervise === true,
    killAfter: killAfterFlag(v['kill-after'] as string | undefined),
    randomFailures: probabilityFlag(v['random-failures'] as string | undefined),
    seed: v.seed as string | undefined,
    help: v.help === true,
  };
}

// parseArgs has no optional values: a bare --random-failures means the default P.
function withOptionalValues(argv: string[]): string[] {
  return argv.map((a) => (a === '--random-failures' ? `--random-failures=${DEFAULT_RANDOM_FAILURES}` : a));
}

function positive(name: string, ms: number): number {
  if (ms <= 0) throw new UsageError(`--${name} must be more than zero`);
  return ms;
}

function killAfterFlag(text: string | undefined): KillAfter | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(polls)?$/.exec(text);
  if (!m || (m[2] && !/^\d+$/.test(m[1]!))) throw new UsageError(`--kill-after must be seconds (e.g. 3) or claim cycles (e.g. 2polls); got ${JSON.stringify(text)}`);
  return m[2] ? { polls: Number(m[1]) } : { seconds: Number(m[1]) };
}

function probabilityFlag(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const p = /^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (Number.isNaN(p)) throw new UsageError(`--random-failures must be a probability from 0 to 1; got ${JSON.stringify(text)}`);
  return p;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2 };

function sizeFlag(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const m = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--max-body must be a size like 65536, 64KiB or 1MiB; got ${JSON.stringify(text)}`);
  return n;
}

function serversFlag(text: string): string[] {
  const servers = text.split(',').map((s) => s.trim());
  for (const s of servers) {
    if (!/^https?:\/\/[^/]+/.test(s)) throw new UsageError(`--server must be an http:// or https:// URL, or several separated by commas; got ${JSON.stringify(s === '' ? text : s)}`);
  }
  if (new Set(servers).size !== servers.length) throw new UsageError(`--server names the same server twice; got ${JSON.stringify(text)}`);
  return servers;
}

function caFlag(v: FlagValues, servers: string[]): Buffer | undefined {
  const ca = fileFlag(v, 'ca');
  if (ca === undefined) return undefined;
  const plain = servers.find((s) => !s.startsWith('https://'));
  if (plain !== undefined) throw new UsageError(`--ca applies to an https:// --server only; got ${JSON.stringify(plain)}`);
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`--ca: ${JSON.stringify(v.ca)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return ca;
}

function typesFlag(text: string | undefined): CommandType[] {
  if (text === undefined) return [...COMMAND_TYPES];
  const types = text.split(',').map((t) => t.trim());
  const unknown = types.filter((t) => !COMMAND_TYPES.includes(t as CommandType));
  if (types.length === 0 || unknown.length > 0 || new Set(types).size !== types.length) {
    throw new UsageError(`--types must be distinct command types separated by commas, from ${COMMAND_TYPES.join(', ')}; got ${JSON.stringify(text)}`);
  }
  return types as CommandType[];
}

// --allow-url a,b --allow-url c: one list. An empty one is a mistake, not "allow all".
function rules(values: unknown, flag: string): string[] {
  if (values === undefined) return [];
  const list = (values as string[]).flatMap((v) => v.split(',')).map((r) => r.trim()).filter((r) => r !== '');
  if (list.length === 0) throw new UsageError(`--${flag} needs at least one rule`);
  return list;
}
