// Who may call what. Client routes (submit, read, cancel, /agents, /events,
// /metrics) want the client token, agent routes (/agent/*) the agent token;
// --token sets both. A role without a token is open. A token that is right
// for the other role gets 403, not 401: the caller is known, it is just not
// allowed here, and sending it again will not help. /healthz and /readyz are
// open to all.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ServerConfig } from './context.ts';
import { HttpError } from './http-io.ts';

export type Role = 'client' | 'agent';

export interface Tokens {
  client: string | undefined;
  agent: string | undefined;
}

export function tokensOf(config: ServerConfig): Tokens {
  return { client: config.clientToken ?? config.token, agent: config.agentToken ?? config.token };
}

/** Throws 401 (no or wrong token) or 403 (the other role's token) unless the request may call a `role` route. */
export function checkAccess(tokens: Tokens, role: Role, req: IncomingMessage, routeName: string): void {
  const want = tokens[role];
  if (want === undefined) return;
  const given = bearer(req);
  if (given !== undefined && same(given, want)) return;
  const other: Role = role === 'client' ? 'agent' : 'client';
  const theirs = tokens[other];
  if (given !== undefined && theirs !== undefined && same(given, theirs)) {
    throw new HttpError(403, `this is the ${other} token; ${routeName} is a ${role} route and needs the ${role} token`, { field: 'Authorization', extra: { role } });
  }
  throw new HttpError(401, `missing or wrong bearer token: send Authorization: Bearer <${role} token>`, { field: 'Authorization', headers: { 'www-authenticate': 'Bearer' } });
}

function bearer(req: IncomingMessage): string | undefined {
  const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? ''); // the scheme is case-insensitive (RFC 9110 11.1)
  return m ? m[1] : undefined;
}

// Compare digests: equal length, and no early exit on the first differing byte.
function same(given: string, token: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}
