// The CLI's calls to the server, over node-fetch-native's Node build (node:http
// and node:https underneath, so --ca is an https.Agent's `ca`). Every way a
// call can go wrong ends up as a CliError with its exit code: unreachable or
// refused auth 3, a request the server calls invalid 2, any other refusal 1.
// --server takes several servers on one store (URL1,URL2): a call that gets
// no answer from one is made to the next, which the client then keeps to.
import fs from 'node:fs';
import https from 'node:https';
import { fetch } from 'node-fetch-native/node';
import { CliError, EXIT, ServerUnreachable } from './errors.ts';
import { readEvents, type SseEvent } from './sse.ts';

export interface ClientOptions {
  /** One server URL, or several on one store, comma-separated. */
  server: string;
  token: string | undefined;
  /** A PEM file of CA certificates to trust for an https server. */
  caFile: string | undefined;
}

export interface Answer<T> {
  status: number;
  body: T;
  /** The server's clock at the answer (its Date header), epoch ms. */
  serverNow: number;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  /** Statuses the caller handles; any other is an error. Default: 2xx. */
  accept?: readonly number[];
  signal?: AbortSignal;
}

/** No answer within this long means the server is as good as unreachable (streams have no limit). */
const REQUEST_TIMEOUT_MS = 30_000;

const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

// Failures where the request never left: any call may go to the next server.
// After a timeout or a reset it may have been served, so only a GET, or a
// submit with an Idempotency-Key (which the other server, on the same store,
// knows), is made again elsewhere.
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

export class KeelClient {
  /** Every server given, in order. */
  readonly servers: readonly string[];
  /** The one calls go to now: the first, until it does not answer. */
  private at = 0;
  private readonly token: string | undefined;
  private readonly agent: https.Agent | undefined;

  constructor(opts: ClientOptions) {
    this.servers = opts.server.split(',').map((s) => serverUrl(s.trim(), opts.server));
    if (new Set(this.servers).size !== this.servers.length) throw new CliError(EXIT.USAGE, `--server names the same server twice; got ${JSON.stringify(opts.server)}`);
    this.token = opts.token;
    if (opts.caFile !== undefined) {
      let ca: Buffer;
      try {
        ca = fs.readFileSync(opts.caFile);
      } catch (err) {
        throw new CliError(EXIT.USAGE, `cannot read --ca ${opts.caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      this.agent = new https.Agent({ ca, keepAlive: true });
    }
  }

  /** The server calls go to now. */
  get server(): string {
    return this.servers[this.at]!;
  }

  /** One JSON request; the parsed body of an accepted answer. */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<Answer<T>> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    // The time limit covers the body too, and starts again at the next server.
    const limit = (): { signal: AbortSignal; answered(): void } => {
      const t = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
      return { signal: opts.signal ? AbortSignal.any([opts.signal, t]) : t, answered() {} };
    };
    const res = await this.send(method, path, headers, opts.body === undefined ? undefined : JSON.stringify(opts.body), limit, opts.signal);
    const text = await res.text().catch((err: unknown) => this.lost(err, opts.signal));
    const accepted = opts.accept ? opts.accept.includes(res.status) : res.status >= 200 && res.status < 300;
    if (!accepted) throw this.refusal(res.status, text);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.status, body: body as T, serverNow: serverClock(res.headers.get('date')) };
  }

  /** GET /metrics, as text. */
  async metricsText(): Promise<string> {
    const r = await this.request<string>('GET', '/metrics', { headers: { accept: 'text/plain' } });
    return String(r.body);
  }

  /**
   * An event stream: its events until the server ends it, or undefined when
   * it answered 204 (nothing more will come). A broken connection ends the
   * iteration with a CliError (exit 3), an abort with the signal's reason.
   */
  async stream(path: string, opts: { lastEventId?: string; signal?: AbortSignal } = {}): Promise<AsyncGenerator<SseEvent> | undefined> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (opts.lastEventId) headers['last-event-id'] = opts.lastEventId;
    // The answer's head must come in time; its body (the stream) has no limit.
    const limit = (): { signal: AbortSignal; answered(): void } => {
      const opening = new AbortController();
      const timer = setTimeout(() => opening.abort(), REQUEST_TIMEOUT_MS);
      return { signal: opts.signal ? AbortSignal.any([opts.signal, opening.signal]) : opening.signal, answered: () => clearTimeout(timer) };
    };
    const res = await this.send('GET', path, headers, undefined, limit, opts.signal);
    if (res.status === 204) return undefined;
    if (res.status !== 200) throw this.refusal(res.status, await res.text().catch(() => ''));
    if (!(res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      throw new CliError(EXIT.FAILED, `${this.server}${path.split('?')[0]} does not stream events; is the server older than this CLI?`);
    }
    const body = res.body as unknown as AsyncIterable<Uint8Array>;
    const lost = (err: unknown): never => this.lost(err, opts.signal);
    return (async function* () {
      try {
        yield* readEvents(body);
      } catch (err) {
        lost(err);
      }
    })();
  }

  /**
   * The fetch, at the current server, then at the next ones while a server
   * does not answer and the call may be made again (NOT_SENT_CODES). `limit`
   * makes each try's signal (the caller's, with a time limit added); only an
   * abort of `callerSignal` is the caller's own.
   */
  private async send(
    method: string, path: string, headers: Record<string, string>, body: string | undefined,
    limit: () => { signal: AbortSignal; answered(): void }, callerSignal: AbortSignal | undefined,
  ) {
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    const again = method === 'GET' || headers['idempotency-key'] !== undefined;
    // Each call walks the list from where calls go now, on its own count:
    // calls made at once (stats makes two) must not move each other along.
    const first = this.at;
    const n = this.servers.length;
    for (let tried = 1; ; tried++) {
      const i = (first + tried - 1) % n;
      const server = this.servers[i]!;
      const { signal, answered } = limit();
      // node-fetch's Node build takes an http(s).Agent; RequestInit does not know it.
      const init = { method, headers, body, signal, agent: server.startsWith('https:') ? this.agent : undefined } as RequestInit;
      try {
        const res = await fetch(server + path, init);
        this.at = i;
        return res;
      } catch (err) {
        const safe = again || NOT_SENT_CODES.has(errorCode(err) ?? '');
        const failure = this.failure(err, callerSignal, tried === n ? 'all' : safe ? 'none' : 'unsafe', server);
        if (tried === n || !safe || !(failure instanceof ServerUnreachable)) throw failure;
      } finally {
        answered();
      }
    }
  }

  /** A request that got no (whole) answer. An abort the caller asked for passes through as is. */
  private lost(err: unknown, callerSignal: AbortSignal | undefined): never {
    throw this.failure(err, callerSignal, 'none');
  }

  /** What a call that got no answer ends with; `others` says what became of the other servers in --server. */
  private failure(err: unknown, callerSignal: AbortSignal | undefined, others: 'all' | 'none' | 'unsafe', server = this.server): unknown {
    if (callerSignal?.aborted) return callerSignal.reason;
    const e = err as Error & { code?: string; type?: string; erroredSysCall?: string };
    const n = this.servers.length - 1;
    const also = n === 0 || others === 'none' ? ''
      : others === 'all' ? ` (and the other ${n} in --server did not answer either)`
      : ` (not sent to the other ${n} in --server: it may have been served; an Idempotency-Key makes it safe to resend)`;
    if (e?.name === 'AbortError' || e?.name === 'TimeoutError') {
      return new ServerUnreachable(`no answer from ${server} within ${REQUEST_TIMEOUT_MS / 1000}s${also}`);
    }
    const code = errorCode(err);
    if (code && TLS_TRUST_CODES.has(code)) {
      return new CliError(EXIT.UNREACHABLE, `${server} has a certificate this CLI does not trust (${code}); pass --ca FILE to trust a private CA`);
    }
    const reason = (e?.message ?? String(err)).replace(/^request to \S+ failed, reason: /, '');
    return new ServerUnreachable(`cannot reach the server at ${server}: ${reason}${also} (set --server or KEEL_SERVER)`);
  }

  private refusal(status: number, text: string): CliError {
    let message = text.trim().split('\n')[0]!.slice(0, 300);
    try {
      const b = JSON.parse(text) as { error?: unknown };
      if (typeof b.error === 'string') message = b.error;
    } catch {
      // not JSON: keep the first line of the text
    }
    if (status === 401 || status === 403) {
      return new CliError(EXIT.UNREACHABLE, `the server refused the token (${status}): ${message}; set --token or KEEL_TOKEN`);
    }
    if (status === 400) return new CliError(EXIT.USAGE, message || `the server answered 400`);
    return new CliError(EXIT.FAILED, message ? `${message} (${status})` : `the server answered ${status}`);
  }
}

/** One item of --server (`whole`), as the URL calls are made to. */
function serverUrl(text: string, whole: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CliError(EXIT.USAGE, `--server must be a URL like http://127.0.0.1:3000, or several separated by commas; got ${JSON.stringify(text === '' ? whole : text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(EXIT.USAGE, `--server must be an http:// or https:// URL; got ${JSON.stringify(text)}`);
  return url.href.replace(/\/+$/, '');
}

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } } | undefined;
  return e?.code ?? e?.cause?.code;
}

// The server's Date header gives its clock to the whole second. Ages and due
// times are counted on the local clock when it agrees with that second (it
// has the milliseconds); only a skewed local clock gives way to the server's,
// at the middle of its second. Taking the header as it is made "now" up to a
// second early: a command due in 59m 59.8s showed as "due in 1h".
function serverClock(date: string | null): number {
  const local = Date.now();
  const t = date === null ? NaN : Date.parse(date);
  if (!Number.isFinite(t)) return local;
  return local >= t && local < t + 1000 ? local : t + 500;
}
