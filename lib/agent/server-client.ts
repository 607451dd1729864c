// The agent's HTTP client to the server (lib/protocol.ts AGENT_ROUTES).
// Every call except heartbeat retries until the server answers: a down or
// restarting server is waited out with jittered backoff, and the caller sees
// only answers. Every agent call is idempotent on the server, so a retry after
// a lost response is safe.
//
// finish and release calls are coalesced per route: calls made in the same
// tick, or while a request of that route is out, go together as one batch
// request, and each caller gets the results of its own items. The server
// runs a batch through one group commit, so N commands in hand cost one
// round trip and one fsync, not N. finish calls still queued when the next
// claim goes out ride in it instead (ClaimRequest.finish), and a finish made
// with `ride` waits for that claim: at concurrency 1 a command costs one
// request, its claim, which also carries the previous command's outcome.
// Requests to an http:// server go through keepalive-pool.ts, a lean
// keep-alive client: at thousands of calls a second, fetch's per-request cost
// (web streams, AbortSignal.any) and then node:http's client machinery were
// the largest share of the agent's CPU. An https:// server (TLS ending at a
// proxy, say) is reached with node:https.
//
// Given several servers (server-list.ts), a call that gets no answer, or not
// the answer it expects, goes on to the next server at once; backoff starts
// only when every server in the list has failed it in turn.
import { Backoff, pause } from './backoff.ts';
import { MovedOnError, ServerList, type ServerEndpoint } from './server-list.ts';
import type { Logger } from '../log.ts';
import {
  AGENT_ROUTES,
  COMMAND_TYPES,
  PROTOCOL_VERSION,
  type BatchResponse,
  type CommandType,
  type ClaimResponse,
  type FinishItem,
  type HeartbeatResponse,
  type ItemResult,
  type LeaseRef,
} from '../protocol.ts';

export interface ServerClientOptions {
  /** The servers, in the order tried; all must serve one store. */
  servers: readonly string[];
  agentId: string;
  token?: string;
  /** PEM CA certificate(s) to trust for an https:// server (--ca), instead of the system's, as curl --cacert. */
  ca?: Buffer;
  log: Logger & { error: Logger };
  /** The command types this agent runs, announced with every claim. Default: all. */
  types?: readonly CommandType[];
  /** The protocol version announced with every claim. Default PROTOCOL_VERSION; tests set another. */
  protocol?: number;
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

/**
 * The server refused this agent's protocol version (a 400 on field
 * `protocol`): no retry can help, so the agent exits with the server's words.
 */
export class ProtocolMismatchError extends Error {
  constructor(agentProtocol: number, body: unknown) {
    const said = (body as { error?: unknown } | null)?.error;
    super(`the server refused this agent's protocol version ${agentProtocol}: ${typeof said === 'string' ? said : JSON.stringify(body)}`);
    this.name = 'ProtocolMismatchError';
  }
}

interface Answer {
  status: number;
  body: unknown;
}

// One batch request stays under the server's limits (lib/validate.ts allows
// 1000 items; lib/agent-routes.ts 8 MiB of body) with room to spare.
const BATCH_MAX_ITEMS = 500;
// A safety net: held calls go on their own if no request took them by then.
const RIDE_WAIT_MS = 100;
const BATCH_MAX_BYTES = 2 * 1024 * 1024;

export class ServerClient {
  readonly agentId: string;
  readonly servers: ServerList;
  private readonly log: Logger & { error: Logger };
  private readonly requestTimeoutMs: number;
  private readonly batches = new Map<string, Coalescer>();
  /** `,"protocol":N,"types":[...]`: what every claim announces, serialized once. */
  private readonly announce: string;
  private readonly protocol: number;
  /** Whether the last call got through; outages are logged once, not per retry. */
  private reachable = true;
  /** See `resuming`. */
  private unsure = true;
  /** Claim requests out now. */
  private claiming = 0;

  constructor(opts: ServerClientOptions) {
    this.agentId = opts.agentId;
    this.log = opts.log;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.protocol = opts.protocol ?? PROTOCOL_VERSION;
    this.announce = `,"protocol":${this.protocol},"types":${JSON.stringify(opts.types ?? COMMAND_TYPES)}`;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    this.servers = new ServerList(opts.servers, headers, opts.ca);
    this.servers.onMove((from, to, why) => this.log.error('server failed a call; moving to the next in the list', { from: from.url, to: to.url, error: why }));
    for (const route of [AGENT_ROUTES.finish, AGENT_ROUTES.release]) {
      this.batches.set(route, new Coalescer((items, signal) => this.sendBatch(route, items, signal)));
    }
  }

  /**
   * Whether an earlier claim may have been answered without us hearing it
   * (nothing heard yet since the process started, or a claim attempt went
   * unanswered): the next claim asks for `held` (ClaimRequest.resume).
   */
  get resuming(): boolean {
    return this.unsure;
  }

  /**
   * Long-poll for up to `max` commands. Rejects only if `signal` aborts.
   * finish() calls still queued ride along (ClaimRequest.finish); such a
   * claim does not wait for work, so they are answered at once. While
   * resuming, the claim asks for `held` and does not wait either.
   */
  async claim(max: number, waitMs: number, signal: AbortSignal): Promise<ClaimResponse> {
    const riders = this.batches.get(AGENT_ROUTES.finish)!.take();
    const head = (): string => `{"agentId":${JSON.stringify(this.agentId)},"max":${max}${this.announce}${this.unsure ? ',"resume":true' : ''}`;
    if (riders) {
      try {
        const answer = await this.claimUntilAnswered(() => `${head()},"waitMs":0,"finish":[${riders.items.join(',')}]}`, this.requestTimeoutMs, signal);
        if (!riders.answer(answer.finished)) riders.giveBack();
        return answer;
      } catch (err) {
        riders.giveBack();
        // A refusal may be a rider's fault: they go on their own, where it reaches only its caller.
        if (!(err instanceof RequestRejectedError)) throw err;
      }
    }
    return this.claimUntilAnswered(() => `${head()},"waitMs":${this.unsure ? 0 : waitMs}}`, waitMs + this.requestTimeoutMs, signal);
  }

  /** `body` is built per attempt: a retry after an attempt went unanswered resumes. */
  private async claimUntilAnswered(body: () => string, timeoutMs: number, signal: AbortSignal): Promise<ClaimResponse> {
    let resumed = false;
    const attempt = (n: number): string => {
      // An attempt before this one may have been answered unheard: its commands are ours now.
      if (n > 0) this.unsure = true;
      resumed = this.unsure;
      return body();
    };
    this.claiming++;
    try {
      const a = await this.untilAnswered(AGENT_ROUTES.claim, attempt, [200], timeoutMs, signal);
      if (resumed) this.unsure = false;
      return a.body as ClaimResponse;
    } catch (err) {
      // Cut off (shutdown), it may have been answered all the same.
      if (!(err instanceof RequestRejectedError)) this.unsure = true;
      throw err;
    } finally {
      this.claiming--;
    }
  }

  /**
   * Per-item answers (200: all ok; 409: some refused).
   * `ride`: unless a claim is out already, wait for the next claim and go in
   * it; the caller must then claim soon, or flushRiders().
   */
  finish(items: FinishItem[], signal?: AbortSignal, ride = false): Promise<ItemResult[]> {
    return this.batches.get(AGENT_ROUTES.finish)!.add(items, signal, ride && this.claiming === 0);
  }

  /** Send the finish calls held for a claim on their own: no claim is coming soon. */
  flushRiders(): void {
    this.batches.get(AGENT_ROUTES.finish)!.flush();
  }

  release(items: LeaseRef[], signal?: AbortSignal): Promise<ItemResult[]> {
    return this.batches.get(AGENT_ROUTES.release)!.add(items, signal);
  }

  /**
   * One attempt per server, from the current one on: undefined when none
   * answered (the next beat tries again). A lease lives in the store the
   * servers share, so any of them can renew it.
   */
  async heartbeat(leases: LeaseRef[], timeoutMs: number): Promise<HeartbeatResponse | undefined> {
    const body = JSON.stringify({ agentId: this.agentId, leases });
    for (let tries = 0; tries < this.servers.size; tries++) {
      const at = this.servers.current;
      let why: string;
      try {
        const a = await this.once(at, AGENT_ROUTES.heartbeat, body, timeoutMs);
        if (a.status === 200) return a.body as HeartbeatResponse;
        why = `HTTP ${a.status} to ${AGENT_ROUTES.heartbeat}`;
      } catch (err) {
        why = describe(err);
      }
      this.servers.moveOn(at, why);
    }
    return undefined;
  }

  /** Close idle keep-alive connections (the process is about to exit). */
  close(): void {
    this.servers.close();
  }

  /** Send pre-serialized items as one request until answered; one result per item, in order. */
  private async sendBatch(route: string, items: string[], signal: AbortSignal): Promise<ItemResult[]> {
    const body = `{"agentId":${JSON.stringify(this.agentId)},"items":[${items.join(',')}]}`;
    const a = await this.untilAnswered(route, body, [200, 409], this.requestTimeoutMs, signal);
    const results = (a.body as BatchResponse).results;
    if (!Array.isArray(results) || results.length !== items.length) {
      throw new Error(`${route} answered ${Array.isArray(results) ? results.length : 'no'} results for ${items.length} items`);
    }
    return results;
  }

  /** `body` may differ per attempt (0, 1, ...). */
  private async untilAnswered(route: string, body: string | ((attempt: number) => string), accept: number[], timeoutMs: number, signal?: AbortSignal): Promise<Answer> {
    const backoff = new Backoff();
    let misses = 0;
    for (let n = 0; ; n++) {
      signal?.throwIfAborted();
      const at = this.servers.current;
      let problem: string;
      try {
        const a = await this.once(at, route, typeof body === 'string' ? body : body(n), timeoutMs, signal);
        if (accept.includes(a.status)) {
          if (!this.reachable) this.log('server reachable again', { route });
          this.reachable = true;
          return a;
        }
        if (a.status === 400 && (a.body as { field?: unknown } | null)?.field === 'protocol') throw new ProtocolMismatchError(this.protocol, a.body);
        if (a.status === 400) throw new RequestRejectedError(route, a.body);
        problem = `HTTP ${a.status}: ${JSON.stringify(a.body).slice(0, 200)}`;
      } catch (err) {
        if (signal?.aborted || err instanceof RequestRejectedError || err instanceof ProtocolMismatchError) throw signal?.reason ?? err;
        // Another call found the server gone and moved on: straight to the next, not counted as a miss.
        if (err instanceof MovedOnError) continue;
        problem = describe(err);
      }
      this.servers.moveOn(at, `${route}: ${problem}`);
      // Backoff once every server has failed this call in turn, not between servers.
      if (++misses % this.servers.size !== 0) continue;
      if (this.reachable) this.log.error(this.servers.size > 1 ? 'no server in the list answering; retrying with backoff' : 'server unreachable; retrying with backoff', { route, error: problem });
      this.reachable = false;
      await pause(backoff.next(), signal);
    }
  }

  /** One POST; resolves with the status and parsed JSON body, rejects on no answer. */
  private async once(at: ServerEndpoint, route: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<Answer> {
    const { status, text } = await this.servers.post(at, route, body, timeoutMs, signal);
    try {
      return { status, body: JSON.parse(text) as unknown };
    } catch {
      throw new Error(`HTTP ${status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
  }
}

interface Call {
  items: string[];
  bytes: number;
  resolve: (results: ItemResult[]) => void;
  reject: (err: unknown) => void;
  /** Set once the caller has its answer (or gave up): later news is dropped. */
  settled: boolean;
  /** Set while the call's items are in a request. */
  batch?: { calls: Call[]; ctl: AbortController };
  /** Given back by a request it rode in: it goes in this route's own requests only. */
  grounded?: boolean;
  unlisten: () => void;
}

/** Calls taken out of a Coalescer to ride in another request (see take()). */
export interface Riders {
  /** Their items, pre-serialized, in order. */
  items: string[];
  /** Hand each call its results; false (nothing answered) unless there is one result per item. */
  answer(results: ItemResult[] | undefined): boolean;
  /** Put them back in the queue, to go in this route's own requests. */
  giveBack(): void;
}

/**
 * Coalesces calls to one route: at most one request out at a time, and every
 * call made meanwhile (or in the same tick as the first) goes in the next.
 * A caller whose signal aborts is answered with its reason at once; its items
 * leave the queue, or, already sent, the request is cut only once every
 * caller in it has gone. A batch of several callers that the server refuses
 * (400) is sent again one caller at a time, so the refusal reaches the caller
 * whose items caused it and no other.
 */
export class Coalescer {
  private readonly send: (items: string[], signal: AbortSignal) => Promise<ItemResult[]>;
  private queue: Call[] = [];
  private pumping = false;
  private holdTimer: NodeJS.Timeout | undefined;

  constructor(send: (items: string[], signal: AbortSignal) => Promise<ItemResult[]>) {
    this.send = send;
  }

  /** `hold`: wait to be taken by another request (take()) or flush(); sent anyway after RIDE_WAIT_MS. */
  add(items: readonly unknown[], signal?: AbortSignal, hold = false): Promise<ItemResult[]> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const json = items.map((it) => JSON.stringify(it));
    return new Promise((resolve, reject) => {
      const call: Call = { items: json, bytes: json.reduce((n, s) => n + s.length + 1, 0), resolve, reject, settled: false, unlisten: () => {} };
      if (signal) {
        const onAbort = (): void => this.abandon(call, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        call.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(call);
      if (!hold) this.kick();
      else if (this.holdTimer === undefined) {
        this.holdTimer = setTimeout(() => this.flush(), RIDE_WAIT_MS);
        this.holdTimer.unref();
      }
    });
  }

  /** Send what is queued, held calls included. */
  flush(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.kick();
  }

  /**
   * Take the queued calls that are not yet in a request, within one
   * request's limits, so that they ride in another request; undefined if
   * there are none. The taker must answer() them or giveBack() them.
   */
  take(): Riders | undefined {
    const calls: Call[] = [];
    let bytes = 0;
    let count = 0;
    this.queue = this.queue.filter((c) => {
      if (c.grounded || count + c.items.length > BATCH_MAX_ITEMS || bytes + c.bytes > BATCH_MAX_BYTES) return true;
      calls.push(c);
      count += c.items.length;
      bytes += c.bytes;
      return false;
    });
    if (calls.length === 0) return undefined;
    return {
      items: calls.flatMap((c) => c.items),
      answer: (results) => {
        if (!Array.isArray(results) || results.length !== count) return false;
        let at = 0;
        for (const c of calls) {
          this.answer(c, () => c.resolve(results.slice(at, at + c.items.length)));
          at += c.items.length;
        }
        return true;
      },
      giveBack: () => {
        const back = calls.filter((c) => !c.settled);
        for (const c of back) c.grounded = true;
        this.queue.unshift(...back);
        this.kick();
      },
    };
  }

  /** Start sending the queue unless that is under way. */
  private kick(): void {
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = true;
    // Let the rest of this tick's calls join the first request.
    process.nextTick(() => void this.pump());
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const calls: Call[] = [];
      let items = 0;
      let bytes = 0;
      while (this.queue.length > 0) {
        const c = this.queue[0]!;
        if (calls.length > 0 && (items + c.items.length > BATCH_MAX_ITEMS || bytes + c.bytes > BATCH_MAX_BYTES)) break;
        this.queue.shift();
        calls.push(c);
        items += c.items.length;
        bytes += c.bytes;
      }
      await this.run(calls);
    }
    this.pumping = false;
  }

  private async run(calls: Call[]): Promise<void> {
    const batch = { calls, ctl: new AbortController() };
    for (const c of calls) c.batch = batch;
    try {
      const results = await this.send(calls.flatMap((c) => c.items), batch.ctl.signal);
      let at = 0;
      for (const c of calls) {
        this.answer(c, () => c.resolve(results.slice(at, at + c.items.length)));
        at += c.items.length;
      }
    } catch (err) {
      if (err instanceof RequestRejectedError && calls.length > 1) {
        for (const c of calls) if (!c.settled) await this.run([c]);
        return;
      }
      for (const c of calls) this.answer(c, () => c.reject(err));
    }
  }

  private answer(c: Call, settle: () => void): void {
    if (c.settled) return;
    c.settled = true;
    c.unlisten();
    settle();
  }

  private abandon(c: Call, reason: unknown): void {
    this.answer(c, () => c.reject(reason));
    const i = this.queue.indexOf(c);
    if (i >= 0) this.queue.splice(i, 1);
    if (c.batch && c.batch.calls.every((x) => x.settled)) c.batch.ctl.abort(reason);
  }
}

// node:http errors carry the useful part in code (ECONNREFUSED ...).
function describe(err: unknown): string {
  const e = err as Error & { code?: string };
  const text = e.code && !e.message?.includes(e.code) ? `${e.code}: ${e.message}` : (e.message ?? String(err));
  return e.code && UNTRUSTED_CERT.has(e.code) ? `${text}; if the server's certificate comes from a private CA, pass --ca FILE with that CA` : text;
}

// How node:tls says it could not check the server's certificate against the CAs it trusts.
const UNTRUSTED_CERT = new Set(['SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);
