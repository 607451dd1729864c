// Command-line parsing shared by server.ts and agent.ts: node:util parseArgs
// plus the rule that any bad flag ends the process with exit 2, a one-line
// message and the usage text.
import fs from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parseDuration } from './duration.ts';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type FlagValues = Record<string, string | boolean | undefined>;

export function parseFlags(argv: string[], options: NonNullable<ParseArgsConfig['options']>): FlagValues {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]!);
  }
}

export function durationFlag(values: FlagValues, name: string, fallback: number): number {
  const v = values[name];
  if (v === undefined) return fallback;
  const ms = typeof v === 'string' ? parseDuration(v) : undefined;
  if (ms === undefined) throw new UsageError(`--${name} must be a duration like 250ms, 10s, 2m or bare milliseconds; got ${JSON.stringify(v)}`);
  return ms;
}

export function intFlag(values: FlagValues, name: string, fallback: number, min: number, max: number): number {
  const v = values[name];
  if (v === undefined) return fallback;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}; got ${JSON.stringify(v)}`);
  return n;
}

export function stringFlag(values: FlagValues, name: string, fallback: string): string {
  const v = values[name];
  return typeof v === 'string' ? v : fallback;
}

/** Parse with `parse`; on a UsageError print it and the usage to stderr and exit 2. */
export function parseOrExit<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n\n${usage}`);
    process.exit(2);
  }
}

/** The bytes of the file a flag names; one that cannot be read is a UsageError naming the flag and the file. */
export function fileFlag(values: FlagValues, name: string): Buffer | undefined {
  const file = values[name];
  if (typeof file !== 'string') return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(`--${name}: cannot read ${JSON.stringify(file)} (${e.code ?? e.message}); check the path and its permissions`);
  }
}

/**
 * A secret given as `--NAME S` or read from the file `--NAME-file F` (which
 * keeps it out of ps and shell history; surrounding whitespace, such as the
 * file's last newline, is dropped). Not both; an empty one is an error.
 */
export function secretFlag(values: FlagValues, name: string): string | undefined {
  const inline = values[name];
  const file = fileFlag(values, `${name}-file`);
  if (typeof inline === 'string' && file !== undefined) throw new UsageError(`give --${name} or --${name}-file, not both`);
  if (file !== undefined) {
    const text = file.toString('utf8').trim();
    if (text === '') throw new UsageError(`--${name}-file: ${JSON.stringify(values[`${name}-file`])} is empty`);
    return text;
  }
  if (typeof inline === 'string' && inline === '') throw new UsageError(`--${name} must not be empty`);
  return typeof inline === 'string' ? inline : undefined;
}
