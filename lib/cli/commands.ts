// The subcommands: each one's flags, positional arguments, help text and the
// function that runs it.
import type { ParseArgsConfig } from 'node:util';
import type { ExitCode } from './errors.ts';
import { agents, get, ls } from './inspect.ts';
import type { Invocation } from './invocation.ts';
import { stats } from './stats.ts';
import { cancel, retry, submit } from './submit.ts';
import * as usage from './usage.ts';
import { events, tail, wait } from './watch.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;

export interface Subcommand {
  usage: string;
  options: Options;
  /** Names of the positional arguments, all required. */
  positionals: readonly string[];
  run(inv: Invocation): Promise<ExitCode>;
}

const str = { type: 'string' } as const;
const bool = { type: 'boolean' } as const;

/** Flags every subcommand takes. */
export const GLOBAL_OPTIONS: Options = { server: str, token: str, ca: str, json: bool, help: bool };

export const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  submit: {
    usage: usage.SUBMIT_USAGE,
    positionals: ['TYPE'],
    options: {
      ms: str, url: str, 'expect-status': str, payload: str, 'idempotency-key': str, wait: bool,
      priority: str, 'run-at': str, delay: str, timeout: str,
      attempts: str, backoff: str, 'retry-delay': str, 'max-delay': str,
    },
    run: submit,
  },
  get: { usage: usage.GET_USAGE, positionals: ['ID'], options: {}, run: get },
  wait: { usage: usage.WAIT_USAGE, positionals: ['ID'], options: { timeout: str }, run: wait },
  ls: { usage: usage.LS_USAGE, positionals: [], options: { status: str, type: str, limit: str }, run: ls },
  cancel: { usage: usage.CANCEL_USAGE, positionals: ['ID'], options: {}, run: cancel },
  retry: { usage: usage.RETRY_USAGE, positionals: ['ID'], options: { wait: bool, 'idempotency-key': str }, run: retry },
  events: { usage: usage.EVENTS_USAGE, positionals: ['ID'], options: { follow: bool }, run: events },
  tail: { usage: usage.TAIL_USAGE, positionals: [], options: { type: str, status: str, since: str }, run: tail },
  agents: { usage: usage.AGENTS_USAGE, positionals: [], options: {}, run: agents },
  stats: { usage: usage.STATS_USAGE, positionals: [], options: {}, run: stats },
};
