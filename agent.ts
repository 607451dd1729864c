// keel agent: flags -> open ledger -> reconcile (resumed work keeps its slots) -> work loop.
import { setMaxListeners } from 'node:events';
import { parseOrExit } from './lib/flags.ts';
import { createLogger } from './lib/log.ts';
import { ProtocolMismatchError, ServerClient } from './lib/agent/server-client.ts';
import { parseAgentConfig, USAGE } from './lib/agent/config.ts';
import { armCrashFlags } from './lib/agent/crash-flags.ts';
import { settleIdentity } from './lib/agent/identity.ts';
import { Ledger } from './state/ledger.ts';
import { LeaseKeeper } from './lib/agent/leases.ts';
import { reconcile } from './lib/agent/reconcile.ts';
import { untilAborted } from './lib/agent/signals.ts';
import { EXIT_PROTOCOL_MISMATCH, exitWithSupervisor, RUN_ENV, supervise } from './lib/agent/supervise.ts';
import { WorkLoop } from './lib/agent/work-loop.ts';
import { startupFailure, startupMessage } from './lib/startup.ts';

const cfg = parseOrExit(USAGE, () => parseAgentConfig(process.argv.slice(2), process.env));
if (cfg.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const log = createLogger({ role: cfg.supervise ? 'supervisor' : 'agent' });
if (cfg.supervise) process.exit(await supervise(process.argv.slice(2).filter((a) => a !== '--supervise'), log));
exitWithSupervisor(log);

const stopping = new AbortController();
const halt = new AbortController();
// Every server call in flight listens on these (one per command at high
// concurrency): no leak, so no MaxListenersExceededWarning.
setMaxListeners(0, stopping.signal, halt.signal);
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    if (!stopping.signal.aborted) log('stopping: no new claims', { signal: sig, graceMs: cfg.graceMs });
    stopping.abort();
  });
}

try {
  const ledger = await Ledger.open(cfg.stateDir, { log, repair: cfg.repair });
  const diskLog = (full: Error | undefined): void => {
    if (full) log.error('ledger disk full: claiming stops; work in hand keeps its leases and waits to journal', { stateDir: cfg.stateDir, error: full.message });
    else log('ledger disk has space again: claiming resumes', { stateDir: cfg.stateDir });
  };
  ledger.durable.journal.onDiskFull(diskLog);
  if (ledger.diskFull) diskLog(ledger.diskFull);
  const crash = armCrashFlags(cfg, Number(process.env[RUN_ENV] ?? 0), log);
  const agentId = await settleIdentity(ledger, cfg.id);
  const client = new ServerClient({ servers: cfg.servers, agentId, token: cfg.token, ca: cfg.ca, types: cfg.types, protocol: cfg.protocol, log });
  const leases = new LeaseKeeper(client, log);
  const http = { timeoutMs: cfg.httpTimeoutMs, maxBodyBytes: cfg.maxBodyBytes, urlPolicy: cfg.urlPolicy };
  const ctx = { ledger, client, leases, log, http, stopping: stopping.signal, halt: halt.signal };
  const loop = new WorkLoop(ctx, { concurrency: cfg.concurrency, claimWaitMs: 10_000, beforeClaim: crash.beforeClaim });

  // Resumed work takes its slots; the first claim waits only for the reports
  // of finished work and the releases of entries that never began.
  await Promise.race([reconcile(ctx, loop), untilAborted(stopping.signal)]);
  if (!stopping.signal.aborted) {
    log('agent ready', { agentId, servers: cfg.servers, concurrency: cfg.concurrency, types: cfg.types });
    await loop.run();
  }
  await loop.drain(cfg.graceMs);
  halt.abort();
  leases.stop();
  await ledger.close();
  log('agent stopped', { agentId, ledger: ledger.durable.journal.stats });
  process.exit(0);
} catch (err) {
  if (err instanceof ProtocolMismatchError) {
    log.error('protocol mismatch; exiting', { error: err.message });
    process.stderr.write(`keel: ${err.message}\n`);
    process.exit(EXIT_PROTOCOL_MISMATCH);
  }
  if (startupMessage(err, cfg.stateDir) === undefined) throw err;
  startupFailure(log, err, cfg.stateDir);
}
