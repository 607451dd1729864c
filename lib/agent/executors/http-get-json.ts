// HTTP_GET_JSON {url, expectStatus?}: one GET (plus up to MAX_REDIRECTS
// redirects) within a time limit and a byte cap. Any HTTP status completes the
// command, unless expectStatus names the ones that do: then any other fails
// it HTTP_STATUS_<code>. No response at all (refused, DNS, timeout,
// connection cut) fails it, and so does a host or address the agent's URL
// policy (url-policy.ts) denies, before anything is sent, on every hop.
//
// node:http rather than fetch: fetch refuses a list of "bad ports", follows or
// hides redirects on its own and decompresses bodies, and here we want every
// byte counted and every hop decided by us.
import http from 'node:http';
import https from 'node:https';
import { crashPoint } from '../../../state/crash-points.ts';
import { monotonicMs } from '../../clock.ts';
import type { ExpectStatus, HttpGetJsonPayload, HttpGetJsonResult } from '../../protocol.ts';
import type { Execution } from './execution.ts';
import { DEFAULT_URL_POLICY, type UrlPolicy } from '../url-policy.ts';

export interface HttpGetOptions {
  /** Whole-request budget (all redirects and the body included). */
  timeoutMs: number;
  /** Body bytes kept at most; past this the body is `truncated`. */
  maxBodyBytes: number;
  /** Which hosts and addresses may be fetched (url-policy.ts). Default: all but link-local. */
  urlPolicy?: UrlPolicy;
}

export const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** The result of a command that got no response: FAILED with `error` set. */
export function noResponse(error: string): Execution {
  const result: HttpGetJsonResult = { status: null, body: null, truncated: false, bytesReturned: 0, error };
  return { outcome: 'FAILED', result, error };
}

/** Rejects only with signal.reason (cancel, lease lost, shutdown); every network outcome resolves. */
export async function runHttpGetJson(payload: HttpGetJsonPayload, opts: HttpGetOptions, signal: AbortSignal): Promise<Execution> {
  signal.throwIfAborted();
  const deadline = monotonicMs() + opts.timeoutMs;
  let url: URL;
  try {
    url = new URL(payload.url);
  } catch {
    return noResponse(`BAD_URL: ${JSON.stringify(payload.url)} is not a URL`);
  }
  for (let hop = 0; ; hop++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return noResponse(`BAD_URL: only http and https are allowed, got ${url.protocol}${hop > 0 ? ' (in a redirect)' : ''}`);
    }
    const got = await getOnce(url, deadline, opts, signal);
    if (got.kind === 'none') return noResponse(hop > 0 && got.error.startsWith('URL_DENIED') ? `${got.error} (redirect ${hop}, to ${url.href})` : got.error);
    const { res } = got;
    const location = res.headers.location;
    if (REDIRECT_STATUSES.has(res.statusCode!) && location && hop < MAX_REDIRECTS) {
      res.destroy();
      try {
        url = new URL(location, url);
      } catch {
        return noResponse(`BAD_REDIRECT: ${JSON.stringify(location)} is not a URL`);
      }
      continue;
    }
    const read = await readBody(res, got.timedOut, opts.maxBodyBytes, signal);
    let error = read.error;
    if (REDIRECT_STATUSES.has(res.statusCode!) && location && error === null) error = `TOO_MANY_REDIRECTS: stopped after ${MAX_REDIRECTS}; this is the last response`;
    const result: HttpGetJsonResult = {
      status: res.statusCode!,
      body: bodyValue(read.bytes, read.complete),
      truncated: !read.complete,
      bytesReturned: read.bytes.length,
      error,
    };
    if (payload.expectStatus !== undefined && !statusExpected(res.statusCode!, payload.expectStatus)) {
      // Its own code, so a client (or a retry policy) can tell a 503 from a refused connection.
      const code = `HTTP_STATUS_${res.statusCode}`;
      return { outcome: 'FAILED', result: { ...result, error: result.error ?? code }, error: code };
    }
    return { outcome: 'COMPLETED', result, error: null };
  }
}

/** Whether `status` is one `expect` allows: a class like "2xx", or a list of codes. */
export function statusExpected(status: number, expect: ExpectStatus): boolean {
  if (typeof expect === 'string') return Math.floor(status / 100) === Number(expect[0]);
  return expect.includes(status);
}

type Got = { kind: 'response'; res: http.IncomingMessage; timedOut: AbortSignal } | { kind: 'none'; error: string };

/** Send the GET; resolve at the response head or with the reason there is none. */
function getOnce(url: URL, deadline: number, opts: HttpGetOptions, signal: AbortSignal): Promise<Got> {
  return new Promise((resolve, reject) => {
    const timedOut = AbortSignal.timeout(Math.max(1, Math.ceil(deadline - monotonicMs())));
    const both = AbortSignal.any([signal, timedOut]);
    const get = url.protocol === 'https:' ? https.get : http.get;
    // Judged before anything is sent: the name (or IP literal) here, every
    // address the name resolves to in the policy's lookup, on each hop.
    const policy = opts.urlPolicy ?? DEFAULT_URL_POLICY;
    const denied = policy.checkHost(url.hostname);
    if (denied) return resolve({ kind: 'none', error: `URL_DENIED: ${denied}` });
    // identity: the byte cap and bytesReturned count what the remote sent.
    const agent = agentsOf(policy)[url.protocol === 'https:' ? 'https' : 'http'];
    const req = get(url, { signal: both, agent, lookup: policy.lookup, headers: { accept: 'application/json', 'accept-encoding': 'identity' } }, (res) => {
      // The request reached the remote and an answer is in hand, not yet handled.
      crashPoint('agent:mid-http');
      resolve({ kind: 'response', res, timedOut });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (signal.aborted) return reject(signal.reason);
      if (timedOut.aborted) return resolve({ kind: 'none', error: `TIMEOUT: no response within ${opts.timeoutMs} ms` });
      resolve({ kind: 'none', error: `${err.code ?? 'REQUEST_FAILED'}: ${err.message}` });
    });
  });
}

// Keep-alive pools per policy: a pooled connection was opened to an address
// this same policy checked, and a socket stays at its address, so reusing it
// skips nothing. (One shared with other policies, or node's global pool,
// could hold a connection the policy never judged.)
const pools = new WeakMap<UrlPolicy, { http: http.Agent; https: https.Agent }>();
function agentsOf(policy: UrlPolicy): { http: http.Agent; https: https.Agent } {
  let a = pools.get(policy);
  if (!a) pools.set(policy, (a = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) }));
  return a;
}

interface BodyRead {
  bytes: Buffer;
  /** The whole body arrived and fit under the cap. */
  complete: boolean;
  error: string | null;
}

function readBody(res: http.IncomingMessage, timedOut: AbortSignal, maxBytes: number, signal: AbortSignal): Promise<BodyRead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    const finish = (complete: boolean, error: string | null): void => {
      res.removeAllListeners('data');
      res.destroy();
      resolve({ bytes: Buffer.concat(chunks, kept), complete, error });
    };
    res.on('data', (chunk: Buffer) => {
      const room = maxBytes - kept;
      if (chunk.length > room) {
        chunks.push(chunk.subarray(0, room));
        kept += room;
        return finish(false, null);
      }
      chunks.push(chunk);
      kept += chunk.length;
    });
    res.on('end', () => finish(true, null));
    // The request's signal (caller abort or deadline) destroys the response
    // with an AbortError; a cut connection gives ECONNRESET or "aborted".
    res.on('error', (err: NodeJS.ErrnoException) => {
      if (signal.aborted) return reject(signal.reason);
      if (timedOut.aborted) return finish(false, 'TIMEOUT: the body did not arrive in time');
      finish(false, `INTERRUPTED: ${err.code ?? err.message}`);
    });
    // A response cut without an 'error' still closes: treat as interrupted.
    res.on('close', () => {
      if (!res.complete) {
        if (signal.aborted) return reject(signal.reason);
        finish(false, timedOut.aborted ? 'TIMEOUT: the body did not arrive in time' : 'INTERRUPTED: the connection closed mid-body');
      }
    });
  });
}

/** Parsed JSON when the whole body was read and parses; else the text read, or null if none. */
function bodyValue(bytes: Buffer, complete: boolean): unknown {
  const text = bytes.toString('utf8');
  if (complete) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON: fall through to the text
    }
  }
  return text.length > 0 ? text : null;
}
