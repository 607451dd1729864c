// Run one command by type. Executors reject only with the signal's reason;
// every other way a command can end is an Execution.
import type { CommandType, DelayPayload, HttpGetJsonPayload, Payload } from '../../protocol.ts';
import type { Moment } from '../../clock.ts';
import { runDelay } from './delay.ts';
import type { Execution } from './execution.ts';
import { runHttpGetJson, type HttpGetOptions } from './http-get-json.ts';

export type { Execution } from './execution.ts';
export type { HttpGetOptions } from './http-get-json.ts';

export async function execute(type: CommandType, payload: Payload, started: Moment, http: HttpGetOptions, signal: AbortSignal): Promise<Execution> {
  switch (type) {
    case 'DELAY':
      return { outcome: 'COMPLETED', result: await runDelay(payload as DelayPayload, started, signal), error: null };
    case 'HTTP_GET_JSON':
      return runHttpGetJson(payload as HttpGetJsonPayload, http, signal);
  }
}
