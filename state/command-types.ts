// The command domain: what a command is and which states it moves through.
// The FSM and both journals are written in these terms; lib/protocol.ts
// re-exports the ones that cross the wire.

export const COMMAND_TYPES = ['DELAY', 'HTTP_GET_JSON'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];

export interface DelayPayload {
  ms: number;
}
export interface HttpGetJsonPayload {
  url: string;
}
export type Payload = DelayPayload | HttpGetJsonPayload;

/** The FSM's states (docs/design.md). */
export type CommandState = 'PENDING' | 'ASSIGNED' | 'RUNNING' | 'COMPLETED' | 'FAILED';
export type Outcome = 'COMPLETED' | 'FAILED';

// Error codes a FAILED command's `error` may hold.
export const CANCELED = 'CANCELED';
export const AGENT_LOST = 'AGENT_LOST';
