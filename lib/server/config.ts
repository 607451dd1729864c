// server.ts's command line: flags, defaults, usage.
import { durationFlag, intFlag, parseFlags, stringFlag, UsageError } from '../flags.ts';
import type { ServerConfig } from './context.ts';

export const SERVER_USAGE = `usage: node --import tsx server.ts [flags]

  --port N              port to listen on (default 3000; 0 picks a free one)
  --host ADDR           address to bind (default 127.0.0.1)
  --state-dir DIR       where the journal and snapshots live (default ./data/server)
  --lease-timeout D     how long a lease lives without a heartbeat (default 15s)
  --token T             require Authorization: Bearer T (or set KEEL_TOKEN)
  --max-pending N       past N pending commands, POST /commands answers 429 (default 100000)
  --snapshot-bytes N    snapshot once the journal segment passes N bytes (default 67108864)
  --repair              cut a damaged journal at the first bad record instead of refusing to start
  --help                print this

Durations: 250ms, 10s, 2m, or bare milliseconds.
`;

export function parseServerFlags(argv: string[], env: NodeJS.ProcessEnv): ServerConfig | 'help' {
  const v = parseFlags(argv, {
    port: { type: 'string' },
    host: { type: 'string' },
    'state-dir': { type: 'string' },
    'lease-timeout': { type: 'string' },
    token: { type: 'string' },
    'max-pending': { type: 'string' },
    'snapshot-bytes': { type: 'string' },
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
  const token = stringFlag(v, 'token', env.KEEL_TOKEN ?? '') || undefined;
  return {
    port: intFlag(v, 'port', 3000, 0, 65535),
    host: stringFlag(v, 'host', '127.0.0.1'),
    stateDir: stringFlag(v, 'state-dir', './data/server'),
    leaseTimeoutMs,
    token,
    maxPending: intFlag(v, 'max-pending', 100_000, 1, 1e9),
    snapshotBytes: intFlag(v, 'snapshot-bytes', 64 * 1024 * 1024, 4096, 2 ** 40),
    repair: v.repair === true,
    headersTimeoutMs,
    requestTimeoutMs,
  };
}
