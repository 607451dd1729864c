// What every route handler is handed: the server's configuration and the
// objects shared between requests. It lives apart from app.ts so the route
// modules can name it without importing the app that imports them.
import type { Command } from '../../state/command-fsm.ts';
import type { CommandType } from '../../state/command-types.ts';
import type { ChangeListener, Store } from '../../state/store.ts';
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agent-registry.ts';
import type { EventHub, RingLimits } from './event-hub.ts';
import type { HttpMetrics } from './metrics.ts';
import type { SseStream } from './sse.ts';
import type { FinalWaiters } from './waiters.ts';
import type { RetentionPolicy } from '../../state/retention.ts';

export interface ServerConfig {
  port: number;
  host: string;
  stateDir: string;
  /** A postgres:// URL: commands live in PostgreSQL (state/pg/), not in stateDir. */
  store?: string | undefined;
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

/** Something the server runs on a timer between start() and stop(). */
export interface Clock {
  start(): void;
  stop(): void;
}

/** Lease deadlines: extended by claims, starts and heartbeats; dropped when a command is let go. */
export interface Leases extends Clock {
  /** Resolves once the new deadline holds (at once for one kept in memory). */
  extend(id: string, lease: number): void | Promise<void>;
  drop(id: string): void;
  /** How many leases are timed here. */
  readonly size: number;
}

/** Agents' claims, parked until there is work (see waiters.ts). */
export interface ClaimParking {
  claim(agentId: string, max: number, ms: number, watch: () => AbortSignal, types?: ReadonlySet<CommandType>): Promise<Command[]>;
  readonly size: number;
}

export interface ServerContext {
  config: ServerConfig;
  store: Store;
  backend: Backend;
  leases: Leases;
  /** Promotes SCHEDULED and RETRY_WAIT commands when they fall due. */
  due: Clock & { arm(): void };
  /** Fails RUNNING attempts past their timeout plus one lease timeout. */
  runDeadlines: Clock & { started(cmd: Command): void };
  agents: AgentRegistry;
  claimWaiters: ClaimParking;
  finalWaiters: FinalWaiters;
  metrics: HttpMetrics;
  events: EventHub;
  /** The open event streams, and how many were cut off for falling behind. */
  streams: { open: Set<SseStream>; cutOff: number };
  log: Logger & { error: Logger };
  ready: boolean;
}

/** A store with the server-side parts that work with it: what app.ts wires up. */
export interface Backend {
  store: Store;
  leases: Leases;
  due: ServerContext['due'];
  runDeadlines: ServerContext['runDeadlines'];
  claimWaiters: ClaimParking;
  /** For /metrics: the file store's journal; undefined for a store without one. */
  journal(): MetricsJournal | undefined;
  /**
   * Every transition of a store several servers write, whichever made it, in
   * seq order: event streams and waiters are fed from here instead of the
   * store's onChange. Undefined: a store only this server writes.
   */
  transitions?: (fn: ChangeListener) => void;
  /** The highest seq committed to a store several servers write, which this server's feed may not have reached yet. */
  committedSeq?: () => Promise<number>;
  /** Where the server's state lives, for log lines (never a password). */
  where: Record<string, unknown>;
  /** Start the timers this store needs besides leases, due and deadlines (retention, sweeps). */
  start(): void;
  stop(): void;
  /** Run before the store closes on a clean shutdown. */
  beforeClose(): Promise<void>;
}

export type MetricsJournal = { stats: import('../../state/journal.ts').JournalStats; bytesOnDisk: number };
