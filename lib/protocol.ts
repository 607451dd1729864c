// The wire protocol: every body that crosses HTTP between client, server and
// agent. Server, agent and tests all import these; nothing redefines them.
// The command domain itself (types, states, error codes) lives in state/.
import type { CommandState, CommandType, Outcome, Payload } from '../state/command-types.ts';

export { AGENT_LOST, CANCELED, COMMAND_TYPES, TIMEOUT } from '../state/command-types.ts';
export type { CommandState, CommandType, DelayPayload, ExpectStatus, HttpGetJsonPayload, Outcome, Payload } from '../state/command-types.ts';

/**
 * What clients see: ASSIGNED shows as PENDING, and so do SCHEDULED and
 * RETRY_WAIT (with runAt, nextAttemptAt). Shown status only moves forward,
 * except that a retried command goes from RUNNING back to PENDING.
 */
export type CommandStatus = 'PENDING' | 'RUNNING' | 'COMPLETED' | 'FAILED';
export const COMMAND_STATUSES: readonly CommandStatus[] = ['PENDING', 'RUNNING', 'COMPLETED', 'FAILED'];

export interface DelayResult {
  ok: true;
  tookMs: number;
}
export interface HttpGetJsonResult {
  status: number | null;
  body: unknown;
  truncated: boolean;
  bytesReturned: number;
  error: string | null;
}

// --- client API ---------------------------------------------------------

export interface SubmitRequest {
  type: CommandType;
  payload: Payload;
  /** -100..100, default 0: higher is handed out first. */
  priority?: number;
  /** An ISO time: not claimable before then. Not with `delay`. */
  runAt?: string;
  /** A duration ("30s"): not claimable before now + delay. Not with `runAt`. */
  delay?: string;
  /** Opt into retries: the command may then run more than once (at-least-once). */
  retry?: { attempts: number; backoff?: 'exponential' | 'fixed'; delay?: string; maxDelay?: string };
  /** A limit on one attempt's execution ("30s"). */
  timeout?: string;
}
export interface SubmitResponse {
  commandId: string;
}

/** POST /commands/batch: up to 1,000 commands in one group commit. */
export interface BatchSubmitItem extends SubmitRequest {
  /** Like the Idempotency-Key header of a single submit, per item. */
  idempotencyKey?: string;
}
export interface BatchSubmitRequest {
  commands: BatchSubmitItem[];
}
export interface BatchSubmitResponse {
  /** One id per submitted command, in the order of the request. */
  commandIds: string[];
}

export interface AttemptView {
  number: number;
  agentId: string | null;
  startedAt: string;
  finishedAt: string | null;
  /** null while it runs. */
  outcome: Outcome | null;
  error: string | null;
}

export interface CommandView {
  id: string;
  type: CommandType;
  payload: Payload;
  status: CommandStatus;
  state: CommandState;
  result: unknown;
  error: string | null;
  agentId: string | null;
  /** The lease of the latest assignment (it rises with every claim, executed or not). */
  attempt: number;
  cancelRequested: boolean;
  createdAt: string;
  updatedAt: string;
  priority: number;
  /** When it was scheduled to become claimable; null: at once. */
  runAt: string | null;
  /** In RETRY_WAIT: when the next attempt becomes claimable. */
  nextAttemptAt: string | null;
  retry: { attempts: number; backoff: 'exponential' | 'fixed'; delayMs: number; maxDelayMs: number } | null;
  timeoutMs: number | null;
  retryOf: string | null;
  /** Every execution so far, oldest first. */
  attempts: AttemptView[];
}

export interface CommandList {
  commands: CommandView[];
  nextCursor: string | null;
}

export interface CommandEventView {
  seq: number;
  event: string;
  from: CommandState | null;
  to: CommandState;
  at: string;
  agentId?: string;
  lease?: number;
  error?: string;
}

export interface AgentView {
  id: string;
  status: 'online' | 'offline';
  /** null: not heard from since the server started (it holds commands from before). */
  lastSeen: string | null;
  commands: string[];
  /** What its last claim announced; null when it has not claimed since the server started. */
  protocol: number | null;
  types: CommandType[] | null;
}

export interface ErrorBody {
  error: string;
  field?: string;
  reason?: string;
}

// --- agent API ------------------------------------------------------------

/** What an agent id may be: the server refuses others, the agent's --id too. */
export const AGENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/**
 * The version of the agent protocol (the /agent/* routes and their bodies).
 * An agent sends it with every claim; a server refuses a version it does not
 * speak with a 400 on field `protocol` naming both, and the agent exits.
 * Raise it when a change would make an older agent or server misbehave.
 * 2: claim-and-start. A claim's commands come back RUNNING and the agent
 * sends no start; a server that speaks only 1 would leave them ASSIGNED and
 * refuse their finish. A version-1 agent still works with this server: its
 * start is answered as a retry.
 */
export const PROTOCOL_VERSION = 2;
/** The agent protocol versions this server answers. */
export const SERVER_PROTOCOLS: readonly number[] = [1, PROTOCOL_VERSION];

export interface ClaimRequest {
  agentId: string;
  /** The agent's PROTOCOL_VERSION; absent means 1 (agents from before it was sent). */
  protocol?: number;
  /** The command types the agent runs; the server hands it only these. Absent: all. */
  types?: CommandType[];
  /**
   * How many commands the agent can take now: its free slots, which it fills
   * at once, so they come back RUNNING (claim-and-start). 0 only with `resume`.
   */
  max: number;
  /** Long-poll: wait up to this long for work when there is none. */
  waitMs: number;
  /**
   * Outcomes riding along (as in FinishRequest), recorded before the claim
   * and in the same group commit: a finish costs no request of its own. A
   * claim that carries any answers at once instead of waiting for work.
   */
  finish?: FinishItem[];
  /**
   * The agent may have lost an earlier claim's answer (it restarted, or a
   * claim went unanswered): the answer lists in `held` every command the
   * server has it holding, and the agent gives back those it never began.
   * Such a claim does not wait for work.
   */
  resume?: boolean;
}
export interface Assignment {
  id: string;
  type: CommandType;
  payload: Payload;
  lease: number;
  /** A limit on this execution: abort at startedAt + timeoutMs and report FAILED TIMEOUT. */
  timeoutMs?: number;
}
export interface ClaimResponse {
  leaseTimeoutMs: number;
  commands: Assignment[];
  /** One result per `finish` item of the request, in order; absent when it had none. */
  finished?: ItemResult[];
  /** Only for a `resume` claim: every other command the agent holds, with its lease. */
  held?: Assignment[];
}

export interface LeaseRef {
  id: string;
  lease: number;
}
export interface FinishItem extends LeaseRef {
  outcome: Outcome;
  result: unknown;
  error?: string | null;
}

export interface StartRequest {
  agentId: string;
  items: LeaseRef[];
}
export interface FinishRequest {
  agentId: string;
  items: FinishItem[];
}
export interface ReleaseRequest {
  agentId: string;
  items: LeaseRef[];
}

/** Per-item answer of start, finish and release. */
export interface ItemResult {
  id: string;
  ok: boolean;
  /** Set when ok is false: STALE_LEASE, WRONG_STATE, NOT_FOUND, CANCELED ... */
  error?: string;
  reason?: string;
}
export interface BatchResponse {
  results: ItemResult[];
}

export interface HeartbeatRequest {
  agentId: string;
  /** Every lease the agent believes it holds. */
  leases: LeaseRef[];
}
export interface HeartbeatResponse {
  leaseTimeoutMs: number;
  /** Leases the agent no longer holds: stop and drop that work. */
  revoked: Array<LeaseRef & { reason: string }>;
  /** Commands the agent holds that a client canceled: abort, report FAILED CANCELED. */
  cancel: string[];
}

/**
 * Agent routes. All POST with a JSON body. start, finish and release answer
 * 200 when every item succeeded (a retry of one that already happened counts)
 * and 409 when any item was refused; the body's `results` says which and why.
 */
export const AGENT_ROUTES = {
  claim: '/agent/claim',
  start: '/agent/start',
  finish: '/agent/finish',
  release: '/agent/release',
  heartbeat: '/agent/heartbeat',
} as const;
