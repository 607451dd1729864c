// A startup failure is a sentence naming the file and what to do, never a
// stack trace: the usual ones are a held lock, a damaged journal, a busy port.
import { CorruptionError } from '../state/journal.ts';
import { LockedError } from '../state/lock.ts';
import type { Logger } from './log.ts';

export function startupFailure(log: Logger & { error: Logger }, err: unknown, stateDir: string): never {
  const e = err as NodeJS.ErrnoException;
  let message = e.message;
  if (err instanceof LockedError) message = err.message;
  else if (err instanceof CorruptionError) message = err.message;
  else if (e.code === 'EADDRINUSE') message = `port is already in use (${e.message}); pick another with --port`;
  else if (e.code === 'EACCES' || e.code === 'EROFS') message = `cannot write state directory ${stateDir}: ${e.message}`;
  log.error('startup failed', { error: message });
  process.stderr.write(`keel: ${message}\n`);
  process.exit(1);
}
