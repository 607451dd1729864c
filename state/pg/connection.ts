// Telling a lost database from a refused statement. A connection that is
// gone (refused, reset, the server shutting down, a pool that cannot connect
// in time) makes the request a 503 with Retry-After: nothing acknowledged is
// lost, and the client retries. Anything else is a bug or a constraint and
// propagates as it is.
import { StoreUnavailableError } from '../store.ts';

const NET_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

// SQLSTATE: class 08 (connection exception), 57P01-57P03 (admin shutdown,
// crash shutdown, cannot connect now), 53300 (too many connections).
const PG_CODES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', '53300']);

export function isConnectionLost(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  if (NET_CODES.has(code) || PG_CODES.has(code) || code.startsWith('08')) return true;
  const msg = typeof e?.message === 'string' ? e.message : '';
  return /Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed|not queryable/i.test(msg);
}

/** The 503 for a request that met a lost connection. */
export function unavailable(err: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`database unreachable (${(err as Error).message}); nothing was changed unless it was acknowledged, retry shortly`);
}
