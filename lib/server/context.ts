// What every route handler is handed: the server's configuration and the
// objects shared between requests. It lives apart from app.ts so the route
// modules can name it without importing the app that imports them.
import type { CommandStore } from '../../state/command-store.ts';
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agent-registry.ts';
import type { LeaseClock } from './leases.ts';
import type { HttpMetrics } from './metrics.ts';
import type { ClaimWaiters, FinalWaiters } from './waiters.ts';

export interface ServerConfig {
  port: number;
  host: string;
  stateDir: string;
  leaseTimeoutMs: number;
  token: string | undefined;
  maxPending: number;
  repair: boolean;
  snapshotBytes?: number;
  /** Cut off a client that has not sent its whole header by then. Default 10 s. */
  headersTimeoutMs?: number;
  /** Cut off a client that has not sent its whole request by then. Default 30 s. */
  requestTimeoutMs?: number;
}

export interface ServerContext {
  config: ServerConfig;
  store: CommandStore;
  leases: LeaseClock;
  agents: AgentRegistry;
  claimWaiters: ClaimWaiters;
  finalWaiters: FinalWaiters;
  metrics: HttpMetrics;
  log: Logger & { error: Logger };
  ready: boolean;
}
