// server.ts's command line: flags, defaults, usage.
import tls from 'node:tls';
import { durationFlag, fileFlag, intFlag, parseFlags, secretFlag, stringFlag, UsageError, type FlagValues } from '../flags.ts';
import { DEFAULT_RETENTION } from '../../state/retention.ts';
import type { ServerConfig } from './context.ts';

export const SERVER_USAGE = `usage: node --import tsx server.ts [flags]

  --port N              port to listen on (default 3000; 0 picks a free one)
  --host ADDR           address to bind (default 127.0.0.1)
  --state-dir DIR       where the journal and snapshots live (default ./data/server)
  --store URL           keep commands in PostgreSQL instead (postgres://user:pass@host:port/db,
                        or set KEEL_DATABASE_URL); several servers may share one database
  --lease-timeout D     how long a lease lives without a heartbeat (default 15s)
  --token T             require Authorization: Bearer T on client and agent routes (or set KEEL_TOKEN)
  --client-token T      the token for client routes only (overrides --token there)
  --agent-token T       the token for agent routes (/agent/*) only (overrides --token there)
  --token-file F        --token read from file F: keeps it out of ps
  --client-token-file F --client-token read from file F
  --agent-token-file F  --agent-token read from file F
  --tls-cert FILE       serve HTTPS with this certificate chain (PEM); needs --tls-key
  --tls-key FILE        the certificate's private key (PEM)
  --max-pending N       past N pending commands, POST /commands answers 429 (default 100000)
  --snapshot-bytes N    snapshot at the latest once the journal segment passes N bytes
                        (sooner: at half the last snapshot, 4 MiB at least; default 67108864)
  --retain D            keep a final command this long after it finished (default 7d)
  --retain-max N        keep at most N final commands; past either bound the oldest go (default 1000000)
  --repair              cut a damaged journal at the first bad record instead of refusing to start
  --help                print this

Durations: 250ms, 10s, 2m, 1h, 7d, or bare milliseconds.
`;

export function parseServerFlags(argv: string[], env: NodeJS.ProcessEnv): ServerConfig | 'help' {
  const v = parseFlags(argv, {
    port: { type: 'string' },
    host: { type: 'string' },
    'state-dir': { type: 'string' },
    store: { type: 'string' },
    'lease-timeout': { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
    'client-token': { type: 'string' },
    'client-token-file': { type: 'string' },
    'agent-token': { type: 'string' },
    'agent-token-file': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'max-pending': { type: 'string' },
    'snapshot-bytes': { type: 'string' },
    retain: { type: 'string' },
    'retain-max': { type: 'string' },
    repair: { type: 'boolean' },
    help: { type: 'boolean' },
    // Hidden (not in the usage): tests shorten the slow-client timeouts.
    'headers-timeout': { type: 'string' },
    'request-timeout': { type: 'string' },
  });
  if (v.help) return 'help';
  const leaseTimeoutMs = durationFlag(v, 'lease-timeout', 15_000);
  if (leaseTimeoutMs < 100) throw new UsageError('--lease-timeout must be at least 100ms');
  const headersTimeoutMs = durationFlag(v, 'headers-timeout', 10_000);
  const requestTimeoutMs = durationFlag(v, 'request-timeout', 30_000);
  if (headersTimeoutMs < 1 || requestTimeoutMs < headersTimeoutMs) throw new UsageError('--request-timeout must be at least --headers-timeout, and both above 0');
  const token = secretFlag(v, 'token') ?? (env.KEEL_TOKEN || undefined);
  const retainMs = durationFlag(v, 'retain', DEFAULT_RETENTION.ms);
  if (retainMs < 1000) throw new UsageError('--retain must be at least 1s');
  return {
    port: intFlag(v, 'port', 3000, 0, 65535),
    host: stringFlag(v, 'host', '127.0.0.1'),
    stateDir: stringFlag(v, 'state-dir', './data/server'),
    store: storeFlag(v, env),
    leaseTimeoutMs,
    token,
    clientToken: secretFlag(v, 'client-token'),
    agentToken: secretFlag(v, 'agent-token'),
    tls: tlsFlags(v),
    maxPending: intFlag(v, 'max-pending', 100_000, 1, 1e9),
    snapshotBytes: intFlag(v, 'snapshot-bytes', 64 * 1024 * 1024, 4096, 2 ** 40),
    repair: v.repair === true,
    retention: { ms: retainMs, max: intFlag(v, 'retain-max', DEFAULT_RETENTION.max, 1, 1e9) },
    headersTimeoutMs,
    requestTimeoutMs,
  };
}

/** --store or KEEL_DATABASE_URL: a postgres:// URL; absent, the file store in --state-dir. */
function storeFlag(v: FlagValues, env: NodeJS.ProcessEnv): string | undefined {
  const flag = v.store;
  const url = typeof flag === 'string' ? flag : env.KEEL_DATABASE_URL || undefined;
  if (url === undefined) return undefined;
  const from = typeof flag === 'string' ? '--store' : 'KEEL_DATABASE_URL';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${from} must be a URL like postgres://user:password@host:5432/keel`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(`${from} must be a postgres:// URL (got ${parsed.protocol}); leave it out to keep commands in --state-dir`);
  }
  return url;
}

/** --tls-cert and --tls-key: both or neither, and a key that matches the certificate. */
function tlsFlags(v: FlagValues): ServerConfig['tls'] {
  const cert = fileFlag(v, 'tls-cert');
  const key = fileFlag(v, 'tls-key');
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) throw new UsageError('--tls-cert and --tls-key go together: give both, or neither for plain HTTP');
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(`--tls-cert ${JSON.stringify(v['tls-cert'])} with --tls-key ${JSON.stringify(v['tls-key'])}: ${e.message}${e.code ? ` (${e.code})` : ''}; give a PEM certificate and the private key that matches it`);
  }
  return { cert, key };
}
