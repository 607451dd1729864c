// The agent's HTTP client to the server (lib/protocol.ts AGENT_ROUTES).
// Every call except heartbeat retries until the server answers: a down or
// restarting server is waited out with jittered backoff, and the caller sees
// only answers. Every agent call is idempotent on the server, so a retry after
// a lost response is safe.
import { fetch } from 'node-fetch-native';
import { Backoff, pause } from './agent/backoff.ts';
import type { Logger } from './log.ts';
import {
  AGENT_ROUTES,
  type BatchResponse,
  type ClaimRequest,
  type ClaimResponse,
  type FinishItem,
  type HeartbeatResponse,
  type ItemResult,
  type LeaseRef,
} from './protocol.ts';

export interface ServerClientOptions {
  baseUrl: string;
  agentId: string;
  token?: string;
  log: Logger & { error: Logger };
  /** Per-request limit for everything but the claim long-poll. Default 10 s. */
  requestTimeoutMs?: number;
}

/** The server answered 400: this request is wrong, and sending it again will not help. */
export class RequestRejectedError extends Error {
  readonly route: string;
  readonly body: unknown;
  constructor(route: string, body: unknown) {
    super(`${route} rejected the request: ${JSON.stringify(body)}`);
    this.name = 'RequestRejectedError';
    this.route = route;
    this.body = body;
  }
}

interface Answer {
  status: number;
  body: unknown;
}

export class ServerClient {
  readonly agentId: string;
  private readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly log: Logger & { error: Logger };
  private readonly requestTimeoutMs: number;
  /** Whether the last call got through; outages are logged once, not per retry. */
  private reachable = true;

  constructor(opts: ServerClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.agentId = opts.agentId;
    this.log = opts.log;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.headers = { 'content-type': 'application/json' };
    if (opts.token) this.headers.authorization = `Bearer ${opts.token}`;
  }

  /** Long-poll for up to `max` commands. Rejects only if `signal` aborts. */
  async claim(max: number, waitMs: number, signal: AbortSignal): Promise<ClaimResponse> {
    const req: ClaimRequest = { agentId: this.agentId, max, waitMs };
    const a = await this.untilAnswered(AGENT_ROUTES.claim, req, [200], waitMs + this.requestTimeoutMs, signal);
    return a.body as ClaimResponse;
  }

  /** Per-item answers (200: all ok; 409: some refused). */
  start(items: LeaseRef[], signal?: AbortSignal): Promise<ItemResult[]> {
    return this.batch(AGENT_ROUTES.start, items, signal);
  }

  finish(items: FinishItem[], signal?: AbortSignal): Promise<ItemResult[]> {
    return this.batch(AGENT_ROUTES.finish, items, signal);
  }

  release(items: LeaseRef[], signal?: AbortSignal): Promise<ItemResult[]> {
    return this.batch(AGENT_ROUTES.release, items, signal);
  }

  /** One attempt: undefined when the server did not answer (the next beat tries again). */
  async heartbeat(leases: LeaseRef[], timeoutMs: number): Promise<HeartbeatResponse | undefined> {
    const a = await this.once(AGENT_ROUTES.heartbeat, { agentId: this.agentId, leases }, timeoutMs).catch(() => undefined);
    if (a?.status === 200) return a.body as HeartbeatResponse;
    return undefined;
  }

  private async batch(route: string, items: Array<LeaseRef | FinishItem>, signal?: AbortSignal): Promise<ItemResult[]> {
    const a = await this.untilAnswered(route, { agentId: this.agentId, items }, [200, 409], this.requestTimeoutMs, signal);
    return (a.body as BatchResponse).results;
  }

  private async untilAnswered(route: string, body: unknown, accept: number[], timeoutMs: number, signal?: AbortSignal): Promise<Answer> {
    const backoff = new Backoff();
    for (;;) {
      signal?.throwIfAborted();
      let problem: string;
      try {
        const a = await this.once(route, body, timeoutMs, signal);
        if (accept.includes(a.status)) {
          if (!this.reachable) this.log('server reachable again', { route });
          this.reachable = true;
          return a;
        }
        if (a.status === 400) throw new RequestRejectedError(route, a.body);
        problem = `HTTP ${a.status}: ${JSON.stringify(a.body).slice(0, 200)}`;
      } catch (err) {
        if (signal?.aborted || err instanceof RequestRejectedError) throw signal?.reason ?? err;
        problem = describe(err);
      }
      if (this.reachable) this.log.error('server unreachable; retrying with backoff', { route, error: problem });
      this.reachable = false;
      await pause(backoff.next(), signal);
    }
  }

  private async once(route: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<Answer> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const res = await fetch(this.baseUrl + route, {
      method: 'POST',
      headers: this.headers,
      body: JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`HTTP ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    return { status: res.status, body: parsed };
  }
}

// fetch hides the useful part (ECONNREFUSED ...) in err.cause.
function describe(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e.cause?.code) return `${e.cause.code}: ${e.cause.message ?? ''}`.trim();
  if (e.cause?.message) return `${e.message}: ${e.cause.message}`;
  return e.message ?? String(err);
}
