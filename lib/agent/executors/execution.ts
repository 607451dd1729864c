// What running a command yields: the outcome and result the agent journals as
// `done` and reports with finish.
import type { Outcome } from '../../protocol.ts';

export interface Execution {
  outcome: Outcome;
  result: unknown;
  error: string | null;
}
