// The control server: opens the command store, wires the routes, and builds
// the context shared between requests (see context.ts).
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { StoreUnavailableError } from '../../state/store.ts';
import { CommandStore } from '../../state/command-store.ts';
import { openFileBackend, type FileBackend } from './file-backend.ts';
import { openPgBackend } from './pg-backend.ts';
import { DiskFullError } from '../../state/disk-full.ts';
import * as agentRoutes from './agent-routes.ts';
import { checkAccess, tokensOf, type Role, type Tokens } from './auth.ts';
import { AgentRegistry } from './agent-registry.ts';
import * as clientRoutes from './client-routes.ts';
import * as dashboard from './dashboard-files.ts';
import { EventHub } from './event-hub.ts';
import * as streamRoutes from './stream-routes.ts';
import { discardBody, HttpError, sendJson, sendText, type RequestTarget } from './http-io.ts';
import type { Logger } from '../log.ts';
import { HttpMetrics } from './metrics.ts';
import { AGENT_ROUTES } from '../protocol.ts';
import { FinalWaiters } from './waiters.ts';
import { isFinal, isWaiting } from '../../state/command-fsm.ts';
import type { Backend, ServerConfig, ServerContext } from './context.ts';

/** The store --store names (a postgres:// URL), else the file store in --state-dir. */
async function openBackend(config: ServerConfig, log: Logger & { error: Logger }): Promise<Backend> {
  return config.store !== undefined ? openPgBackend(config, log) : openFileBackend(config, log);
}

export { SHUTDOWN_SNAPSHOT_BYTES } from './file-backend.ts';

/** A server's context when it runs on the file store (tests look into its journal). */
export type FileServerContext = ServerContext & { store: CommandStore; backend: FileBackend };

export function onFileStore(keel: KeelServer): keel is KeelServer<FileServerContext> {
  return keel.ctx.store instanceof CommandStore;
}

type Handler = (ctx: ServerContext, req: IncomingMessage, res: ServerResponse, params: string[], url: RequestTarget) => Promise<void>;
interface Route {
  method: string;
  pattern: RegExp;
  name: string;
  handler: Handler;
  open?: boolean; // no token needed
  /** Whose token it wants (auth.ts). Default: client. */
  role?: Role;
  /** The pattern captures path segments (set from it below). */
  hasParams?: boolean;
}

const ID = '([^/]+)';
const ROUTES: Route[] = [
  { method: 'POST', pattern: /^\/commands$/, name: '/commands', handler: clientRoutes.submit },
  { method: 'POST', pattern: /^\/commands\/batch$/, name: '/commands/batch', handler: clientRoutes.submitBatch },
  { method: 'GET', pattern: /^\/commands$/, name: '/commands', handler: clientRoutes.list },
  { method: 'GET', pattern: new RegExp(`^/commands/${ID}$`), name: '/commands/:id', handler: clientRoutes.getOne },
  { method: 'POST', pattern: new RegExp(`^/commands/${ID}/cancel$`), name: '/commands/:id/cancel', handler: clientRoutes.cancel },
  { method: 'POST', pattern: new RegExp(`^/commands/${ID}/retry$`), name: '/commands/:id/retry', handler: clientRoutes.retry },
  { method: 'GET', pattern: new RegExp(`^/commands/${ID}/events$`), name: '/commands/:id/events', handler: clientRoutes.events },
  { method: 'GET', pattern: /^\/agents$/, name: '/agents', handler: clientRoutes.agents },
  { method: 'GET', pattern: /^\/events$/, name: '/events', handler: streamRoutes.allEvents },
  { method: 'POST', pattern: new RegExp(`^${AGENT_ROUTES.claim}$`), name: AGENT_ROUTES.claim, handler: agentRoutes.claim, role: 'agent' },
  { method: 'POST', pattern: new RegExp(`^${AGENT_ROUTES.start}$`), name: AGENT_ROUTES.start, handler: agentRoutes.start, role: 'agent' },
  { method: 'POST', pattern: new RegExp(`^${AGENT_ROUTES.finish}$`), name: AGENT_ROUTES.finish, handler: agentRoutes.finish, role: 'agent' },
  { method: 'POST', pattern: new RegExp(`^${AGENT_ROUTES.release}$`), name: AGENT_ROUTES.release, handler: agentRoutes.release, role: 'agent' },
  { method: 'POST', pattern: new RegExp(`^${AGENT_ROUTES.heartbeat}$`), name: AGENT_ROUTES.heartbeat, handler: agentRoutes.heartbeat, role: 'agent' },
  { method: 'GET', pattern: /^\/healthz$/, name: '/healthz', handler: async (_c, _q, res) => sendJson(res, 200, { ok: true }), open: true },
  { method: 'GET', pattern: /^\/readyz$/, name: '/readyz', handler: readyz, open: true },
  { method: 'GET', pattern: /^\/metrics$/, name: '/metrics', handler: metrics },
  { method: 'GET', pattern: /^\/$/, name: '/', handler: dashboard.page, open: true },
  { method: 'GET', pattern: /^\/dashboard\/([^/]+)$/, name: '/dashboard/:file', handler: dashboard.file, open: true },
];

for (const r of ROUTES) r.hasParams = r.pattern.source.includes('(');

/** Every route with the token it wants: for tests that cover every route. */
export const ROUTE_ROLES: ReadonlyArray<{ method: string; name: string; role: Role | 'open' }> = ROUTES.map((r) => ({
  method: r.method,
  name: r.name,
  role: r.open ? 'open' : (r.role ?? 'client'),
}));

async function readyz(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  // On a full disk the server answers reads but takes no work: not ready.
  const reason = ctx.store.unavailable;
  const ready = ctx.ready && reason === undefined;
  sendJson(res, ready ? 200 : 503, reason !== undefined ? { ready, reason } : { ready });
}

async function metrics(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  sendText(res, 200, ctx.metrics.render({
    counts: await ctx.store.counts(),
    journal: ctx.backend.journal(),
    diskFull: ctx.store.unavailable === 'disk full',
    agentsOnline: ctx.agents.online(),
    runnableTypes: ctx.agents.runnableTypes(),
    leases: ctx.leases.size,
    claimsWaiting: ctx.claimWaiters.size,
    eventStreams: ctx.streams.open.size,
    eventStreamsCutOff: ctx.streams.cutOff,
    eventsHeld: ctx.events.held,
  }), 'text/plain; version=0.0.4; charset=utf-8');
}

export interface KeelServer<C extends ServerContext = ServerContext> {
  ctx: C;
  server: http.Server;
  url: string;
  close(): Promise<void>;
}

/** Recover the state directory, then listen. Throws (LockedError, CorruptionError, EADDRINUSE) on startup failure. */
export async function startServer(config: ServerConfig, log: Logger & { error: Logger }): Promise<KeelServer> {
  const backend = await openBackend(config, log);
  const { store } = backend;
  const ctx: ServerContext = {
    config,
    store,
    backend,
    leases: backend.leases,
    due: backend.due,
    runDeadlines: backend.runDeadlines,
    agents: new AgentRegistry(config.leaseTimeoutMs),
    claimWaiters: backend.claimWaiters,
    finalWaiters: new FinalWaiters(),
    metrics: new HttpMetrics(),
    events: new EventHub(store.lastSeq, config.eventRing),
    streams: { open: new Set(), cutOff: 0 },
    log,
    ready: false,
  };
  store.onChange((cmd, event, seq) => {
    log('transition', { id: cmd.id, event, state: cmd.state, agentId: cmd.agentId, lease: cmd.attempt, error: cmd.error ?? undefined });
    if (isFinal(cmd.state)) ctx.finalWaiters.wake(cmd.id);
    if (!backend.transitions) ctx.events.publish(cmd, event, seq);
    if (isWaiting(cmd.state)) ctx.due.arm();
    if (cmd.state === 'RUNNING') ctx.runDeadlines.started(cmd);
  });
  // Several servers on one database: every server's transitions, in the database's order.
  backend.transitions?.((cmd, event, seq) => {
    if (isFinal(cmd.state)) ctx.finalWaiters.wake(cmd.id);
    ctx.events.publish(cmd, event, seq);
  });
  const startClocks = (): void => {
    ctx.leases.start();
    ctx.due.start();
    ctx.runDeadlines.start();
    backend.start();
  };
  const stopClocks = (): void => {
    ctx.leases.stop();
    ctx.due.stop();
    ctx.runDeadlines.stop();
    backend.stop();
  };
  startClocks();

  const headersTimeout = config.headersTimeoutMs ?? 10_000;
  const options: http.ServerOptions = {
    headersTimeout,
    requestTimeout: config.requestTimeoutMs ?? 30_000,
    // Node checks both timeouts only every connectionsCheckingInterval
    // (default 30 s), so a half-sent request line would hang ~30 s, not 10.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(headersTimeout / 4))),
  };
  const tokens = tokensOf(config);
  const listener = (req: IncomingMessage, res: ServerResponse): void => void handle(ctx, tokens, req, res);
  // The same API over TLS; a client that stalls its handshake is cut off like one that stalls its headers.
  const server: http.Server = config.tls
    ? https.createServer({ ...options, cert: config.tls.cert, key: config.tls.key, handshakeTimeout: headersTimeout }, listener)
    : http.createServer(options, listener);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (err) => {
    stopClocks();
    await store.close();
    throw err;
  });
  ctx.ready = true;
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${config.tls ? 'https' : 'http'}://${host}:${addr.port}`;
  return {
    ctx,
    server,
    url,
    async close() {
      ctx.ready = false;
      stopClocks();
      for (const stream of [...ctx.streams.open]) stream.end();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      });
      await backend.beforeClose();
      await store.close();
    },
  };
}

async function handle(ctx: ServerContext, tokens: Tokens, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let routeName = 'unknown';
  // 'finish' comes once: on(), not once(), which wraps the listener per request.
  res.on('finish', () => ctx.metrics.count(routeName, res.statusCode));
  try {
    const url = requestUrl(req.url);
    const matching = routesFor(url.pathname);
    if (matching.length === 0) throw new HttpError(404, `no route ${url.pathname}`);
    const route = matching.find((r) => r.method === req.method);
    routeName = matching[0]!.name;
    if (!route) {
      const allow = matching.map((r) => r.method).join(', ');
      throw new HttpError(405, `${req.method} is not allowed on ${routeName}; use ${allow}`, { headers: { allow } });
    }
    if (!route.open) checkAccess(tokens, route.role ?? 'client', req, route.name);
    const params = route.hasParams ? route.pattern.exec(url.pathname)!.slice(1).map(decodeSegment) : NO_PARAMS;
    await route.handler(ctx, req, res, params, url);
  } catch (err) {
    if (err instanceof HttpError) {
      sendJson(res, err.status, err.body(), err.headers);
      discardBody(req);
      return;
    }
    if (err instanceof DiskFullError || err instanceof StoreUnavailableError) {
      // Nothing was changed: the client may simply retry once there is space (or a database).
      const secs = Math.max(1, Math.ceil(err.retryAfterMs / 1000));
      const error = err instanceof DiskFullError ? 'disk full' : 'store unavailable';
      sendJson(res, 503, { error, detail: err.message, retryAfterSeconds: secs }, { 'retry-after': String(secs) });
      return;
    }
    if (ctx.store.broken) {
      // Memory may now hold a transition the disk does not: only a restart
      // (replay from disk) gets back to a state that is true.
      ctx.log.error('journal write failed; exiting so a restart recovers from disk', { error: ctx.store.broken.message });
      process.exit(1);
    }
    ctx.log.error('request failed', { method: req.method, url: req.url, error: (err as Error).message, stack: (err as Error).stack });
    sendJson(res, 500, { error: 'internal error; see the server log' });
  }
}

const NO_PARAMS: string[] = [];

// The routes whose pattern matches a path, remembered for the paths seen
// lately: testing every pattern was a visible share of a submit's CPU.
const matchCache = new Map<string, Route[]>();
function routesFor(pathname: string): Route[] {
  let m = matchCache.get(pathname);
  if (m === undefined) {
    m = ROUTES.filter((r) => r.pattern.test(pathname));
    if (matchCache.size >= 256) matchCache.clear();
    matchCache.set(pathname, m);
  }
  return m;
}

// A plain path with no query (`/commands`) is its own pathname; parsing it as
// a URL cost a submit about as much as routing it. Anything else (a query,
// `.`, `%`, `//`) goes through URL, which normalizes it.
const PLAIN_PATH = /^\/(?!\/)[A-Za-z0-9_\-/]*$/;
const BASE = 'http://keel';
const NO_QUERY = new URLSearchParams();

// node:http passes the request target through as sent; a target that is not
// a URL (`GET http://[ HTTP/1.1`) is the client's fault, not a 500.
function requestUrl(target: string | undefined): RequestTarget {
  if (target !== undefined && PLAIN_PATH.test(target)) return { pathname: target, searchParams: NO_QUERY };
  try {
    return new URL(target ?? '/', BASE);
  } catch {
    throw new HttpError(400, 'request target is not a valid URL path', { field: 'url' });
  }
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // not valid percent-encoding: the id check refuses it with a 400
  }
}
