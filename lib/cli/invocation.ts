// What one run of a subcommand is handed: its flags and arguments, the
// output mode, the client, and where to print. Plus the readers for flag
// values the subcommands share.
import { UsageError } from '../flags.ts';
import { parseDuration } from '../duration.ts';
import type { KeelClient } from './client.ts';

export interface Invocation {
  /** The subcommand's name, for messages. */
  command: string;
  values: Record<string, string | boolean | undefined>;
  /** Positional arguments after the subcommand. */
  args: string[];
  json: boolean;
  /** Made on first use, so a usage error never needs a server. */
  client(): KeelClient;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

export function stringValue(inv: Invocation, name: string): string | undefined {
  const v = inv.values[name];
  return typeof v === 'string' ? v : undefined;
}

/** An integer flag, or undefined when not given. Bounds the server checks anyway are left to it. */
export function integerValue(inv: Invocation, name: string, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = stringValue(inv, name);
  if (v === undefined) return undefined;
  const n = /^-?\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max !== Number.MAX_SAFE_INTEGER ? ` from ${min} to ${max}` : min === 0 ? ' (0 or more)' : '';
    throw new UsageError(`--${name} must be an integer${range}; got ${JSON.stringify(v)}`);
  }
  return n;
}

export function durationValue(inv: Invocation, name: string): number | undefined {
  const v = stringValue(inv, name);
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined) throw new UsageError(`--${name} must be a duration like 250ms, 10s or 2m; got ${JSON.stringify(v)}`);
  return ms;
}

/** A comma-separated flag whose every item is one of `allowed` (case-insensitive); undefined when not given. */
export function choiceList(inv: Invocation, name: string, allowed: readonly string[]): string[] | undefined {
  const v = stringValue(inv, name);
  if (v === undefined) return undefined;
  const items = v.split(',').map((s) => s.trim().toUpperCase());
  for (const item of items) {
    if (!allowed.includes(item)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}; got ${JSON.stringify(v)}`);
  }
  return items;
}

/** A positional id, percent-encoded for a path. */
export function idArg(inv: Invocation): string {
  return encodeURIComponent(inv.args[0]!);
}
