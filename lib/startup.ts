// A startup failure is a sentence naming the file and what to do, never a
// stack trace: the usual ones are a held lock, a damaged or unknown state
// file, a busy port. The server and the agent report them the same way.
import { isDiskFull } from '../state/disk-full.ts';
import { StateError } from '../state/errors.ts';
import { LockedError } from '../state/lock.ts';
import type { Logger } from './log.ts';

/** A problem the operator must fix before the program can start. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

/** The sentence for an error met while starting, or undefined for one that is a bug. */
export function startupMessage(err: unknown, stateDir: string): string | undefined {
  if (err instanceof StartupError || err instanceof StateError || err instanceof LockedError) return err.message;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EADDRINUSE') return `port is already in use (${e.message}); pick another with --port`;
  if (e?.code === 'EACCES' || e?.code === 'EROFS') return `cannot write state directory ${stateDir}: ${e.message}`;
  // A directory that already holds a journal starts read-only on a full disk;
  // a new one cannot, since it has no journal segment to read or write yet.
  if (isDiskFull(e)) return `disk full: cannot write state directory ${stateDir} (${e.message}); a new state directory needs space for its first journal segment: free some and start again`;
  return undefined;
}

/** Log and print the failure, then exit 1. Unknown errors keep their message (the server) or stack (rethrown by the caller). */
export function startupFailure(log: Logger & { error: Logger }, err: unknown, stateDir: string): never {
  const message = startupMessage(err, stateDir) ?? (err as Error).message;
  log.error('startup failed', { error: message });
  process.stderr.write(`keel: ${message}\n`);
  process.exit(1);
}
