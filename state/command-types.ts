// The command domain: what a command is and which states it moves through.
// The FSM and both journals are written in these terms; lib/protocol.ts
// re-exports the ones that cross the wire.

export const COMMAND_TYPES = ['DELAY', 'HTTP_GET_JSON'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];

export interface DelayPayload {
  ms: number;
}
/** Which HTTP statuses complete the command: a class like "2xx", or a list. */
export type ExpectStatus = string | number[];
export interface HttpGetJsonPayload {
  url: string;
  /** Absent: any status completes it. Otherwise a status outside fails the attempt with HTTP_STATUS_<code>. */
  expectStatus?: ExpectStatus;
}
export type Payload = DelayPayload | HttpGetJsonPayload;

/**
 * The FSM's states (docs/design.md). SCHEDULED waits for its runAt and
 * RETRY_WAIT for its next attempt's backoff; both show as PENDING.
 */
export type CommandState = 'SCHEDULED' | 'PENDING' | 'ASSIGNED' | 'RUNNING' | 'RETRY_WAIT' | 'COMPLETED' | 'FAILED';
export const COMMAND_STATES: readonly CommandState[] = ['SCHEDULED', 'PENDING', 'ASSIGNED', 'RUNNING', 'RETRY_WAIT', 'COMPLETED', 'FAILED'];
export type Outcome = 'COMPLETED' | 'FAILED';

/** How a command is retried: `attempts` executions at most, waiting a backoff between them. */
export interface RetryPolicy {
  /** Total executions allowed, 1..100; 1 means no retry. */
  attempts: number;
  backoff: 'exponential' | 'fixed';
  /** The wait after the first failed attempt, in ms (exponential doubles it each time). */
  delayMs: number;
  /** The longest wait, in ms. */
  maxDelayMs: number;
}

/** What a submit may ask for besides type and payload; every field has a default. */
export interface CommandOptions {
  /** -100..100, higher first; default 0. */
  priority?: number;
  /** Not claimable before this (epoch ms). */
  runAt?: number;
  retry?: RetryPolicy;
  /** A limit on one attempt's execution, in ms. */
  timeoutMs?: number;
  /** The command this one re-runs (POST /commands/:id/retry). */
  retryOf?: string;
}

export const MIN_PRIORITY = -100;
export const MAX_PRIORITY = 100;
export const MAX_ATTEMPTS = 100;

// Error codes a FAILED command's `error` may hold.
export const CANCELED = 'CANCELED';
export const AGENT_LOST = 'AGENT_LOST';
export const TIMEOUT = 'TIMEOUT';
