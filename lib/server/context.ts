// What every route handler is handed: the server's configuration and the
// objects shared between requests. It lives apart from app.ts so the route
// modules can name it without importing the app that imports them.
import type { CommandStore } from '../../state/command-store.ts';
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agent-registry.ts';
import type { EventHub, RingLimits } from './event-hub.ts';
import type { LeaseClock } from './leases.ts';
import type { DueClock } from './due-clock.ts';
import type { RunDeadlines } from './run-deadlines.ts';
import type { HttpMetrics } from './metrics.ts';
import type { SseStream } from './sse.ts';
import type { RetentionPolicy } from '../../state/retention.ts';
import type { ClaimWaiters, FinalWaiters } from './waiters.ts';

export interface ServerConfig {
  port: number;
  host: string;
  stateDir: string;
  leaseTimeoutMs: number;
  /** Bearer token for client and agent routes alike, unless the role's own token is set. */
  token: string | undefined;
  /** Bearer token for the client routes; default `token`. */
  clientToken?: string | undefined;
  /** Bearer token for the agent routes (/agent/*); default `token`. */
  agentToken?: string | undefined;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer } | undefined;
  maxPending: number;
  repair: boolean;
  snapshotBytes?: number;
  /** How long and how many final commands are kept (--retain, --retain-max). Default DEFAULT_RETENTION. */
  retention?: RetentionPolicy;
  /** Cut off a client that has not sent its whole header by then. Default 10 s. */
  headersTimeoutMs?: number;
  /** Cut off a client that has not sent its whole request by then. Default 30 s. */
  requestTimeoutMs?: number;
  /** Recent transitions kept for streams to resume from. Default DEFAULT_RING (event-hub.ts). */
  eventRing?: RingLimits;
  /** Bytes an event stream may have queued for streamStallMs (8x that at any time) before it is cut off. Default 1 MiB. */
  streamBufferBytes?: number;
  /** See streamBufferBytes. Default 5 s. */
  streamStallMs?: number;
  /** A comment line on an idle event stream this often. Default 15 s. */
  streamKeepaliveMs?: number;
}

export interface ServerContext {
  config: ServerConfig;
  store: CommandStore;
  leases: LeaseClock;
  /** Promotes SCHEDULED and RETRY_WAIT commands when they fall due. */
  due: DueClock;
  /** Fails RUNNING attempts past their timeout plus one lease timeout. */
  runDeadlines: RunDeadlines;
  agents: AgentRegistry;
  claimWaiters: ClaimWaiters;
  finalWaiters: FinalWaiters;
  metrics: HttpMetrics;
  events: EventHub;
  /** The open event streams, and how many were cut off for falling behind. */
  streams: { open: Set<SseStream>; cutOff: number };
  log: Logger & { error: Logger };
  ready: boolean;
}
