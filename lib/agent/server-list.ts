// The servers an agent may talk to (--server URL1,URL2,...) and the one it
// talks to now. Every server in the list must serve the same store (several
// keel servers on one PostgreSQL): a lease granted by one is beaten, started
// and finished at another, so a switch changes nothing the agent holds.
//
// The agent stays with a server while it answers. When one does not (no
// answer, or an answer that is not the one expected), the caller says so with
// moveOn(server), and the list moves to the next server unless another call
// has moved it already: many calls failing at once move it one step, not one
// step each. Requests still out to the server left behind are aborted, so a
// server that hangs rather than refusing connections (SIGSTOP, a partition)
// does not hold a claim or a report for a whole request timeout.
import { setMaxListeners } from 'node:events';
import https from 'node:https';
import { KeepAlivePool, type PoolAnswer } from './keepalive-pool.ts';

/** Why a request was cut: the list moved on from its server. */
export class MovedOnError extends Error {
  constructor(from: string, to: string) {
    super(`moved on from ${from} to ${to}`);
    this.name = 'MovedOnError';
  }
}

/** One server: its URL, parsed once, and its connections. */
export class ServerEndpoint {
  readonly url: string;
  private readonly target: { protocol: string; hostname: string; port: string; path: string };
  private readonly headers: Record<string, string>;
  /** Plain-http servers (the usual case) go through the lean pool; https ones through node:https. */
  private readonly pool: KeepAlivePool | undefined;
  private readonly tlsAgent: https.Agent | undefined;

  constructor(url: string, headers: Record<string, string>, ca: Buffer | undefined) {
    const base = new URL(url);
    this.url = url;
    // Parsed once: a URL string would be parsed again for every request.
    this.target = { protocol: base.protocol, hostname: base.hostname.replace(/^\[|\]$/g, ''), port: base.port, path: base.pathname.replace(/\/+$/, '') };
    this.headers = headers;
    if (base.protocol === 'https:') this.tlsAgent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
    else this.pool = new KeepAlivePool(base, headers);
  }

  /** One POST; resolves with the status and body text, rejects on no whole answer. */
  post(route: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<PoolAnswer> {
    if (this.pool) return this.pool.post(this.target.path + route, body, timeoutMs, signal);
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const headers = { ...this.headers, 'content-length': String(Buffer.byteLength(body)) };
      const { protocol, hostname, port, path } = this.target;
      const req = https.request({ protocol, hostname, port, path: path + route, method: 'POST', headers, agent: this.tlsAgent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) fail(new Error('the connection closed before the whole answer arrived'));
        });
        res.on('end', () => {
          settle();
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      const onAbort = (): void => void req.destroy(signal!.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      function fail(err: Error): void {
        settle();
        reject(err);
      }
      req.on('error', fail);
      req.end(body);
    });
  }

  close(): void {
    this.tlsAgent?.destroy();
    this.pool?.close();
  }
}

export class ServerList {
  readonly endpoints: readonly ServerEndpoint[];
  private at = 0;
  /** Aborted when the list moves on from the current server (only kept with more than one). */
  private leaving: AbortController | undefined;
  private readonly listeners = new Set<(from: ServerEndpoint, to: ServerEndpoint, why: string) => void>();

  constructor(urls: readonly string[], headers: Record<string, string>, ca: Buffer | undefined) {
    if (urls.length === 0) throw new Error('ServerList needs at least one server URL');
    this.endpoints = urls.map((u) => new ServerEndpoint(u, headers, ca));
    if (this.endpoints.length > 1) this.leaving = leavingSignal();
  }

  get current(): ServerEndpoint {
    return this.endpoints[this.at]!;
  }

  get size(): number {
    return this.endpoints.length;
  }

  /**
   * POST to the current server. With more than one server, the request is
   * also cut when the list moves on from it (it rejects with MovedOnError).
   */
  post(at: ServerEndpoint, route: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<PoolAnswer> {
    const leaving = at === this.current ? this.leaving?.signal : undefined;
    // One server, the common case: no combined signal (its cost per request showed in profiles).
    const cut = leaving === undefined ? signal : signal === undefined ? leaving : AbortSignal.any([signal, leaving]);
    return at.post(route, body, timeoutMs, cut);
  }

  /**
   * `from` did not answer as it should (`why`): move to the next server if
   * `from` is still the current one. Returns true if this call moved the list.
   */
  moveOn(from: ServerEndpoint, why: string): boolean {
    if (this.endpoints.length === 1 || from !== this.current) return false;
    this.at = (this.at + 1) % this.endpoints.length;
    const to = this.current;
    const leaving = this.leaving!;
    this.leaving = leavingSignal();
    leaving.abort(new MovedOnError(from.url, to.url));
    for (const fn of this.listeners) fn(from, to, why);
    return true;
  }

  /** Called after every move, with the server left, the one now current, and why. */
  onMove(fn: (from: ServerEndpoint, to: ServerEndpoint, why: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    for (const e of this.endpoints) e.close();
  }
}

// Every request out to the current server listens on it: no leak, so no MaxListenersExceededWarning.
function leavingSignal(): AbortController {
  const ctl = new AbortController();
  setMaxListeners(0, ctl.signal);
  return ctl;
}
