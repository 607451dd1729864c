// In-process keel servers for the server-*.test.ts files: startServer from
// lib/server/app.ts on a loopback port 0 with a temp state dir and a logger
// that writes to a buffer a test can await lines from. Plus the agent API
// as plain calls, raw-socket requests for what fetch will not send, and
// waitUntil for conditions that have no event to await.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createLogger } from '../../lib/log.ts';
import type { BatchResponse, ClaimResponse, CommandView, HeartbeatResponse, LeaseRef, Outcome } from '../../lib/protocol.ts';
import { onFileStore, startServer, type FileServerContext, type KeelServer } from '../../lib/server/app.ts';
import type { ServerConfig, ServerContext } from '../../lib/server/context.ts';
import { call, type Reply } from './http.ts';
import { segmentData } from './journal-files.ts';
import { tempDir, type LogLine } from './processes.ts';

export { call, type Reply } from './http.ts';
export { cleanup, tempDir } from './processes.ts';

/** Log lines captured from an in-process server, awaitable like Proc.waitFor. */
export class LogBuffer {
  readonly lines: LogLine[] = [];
  private waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];

  write(text: string): boolean {
    for (const part of text.split('\n')) {
      if (part === '') continue;
      const line = JSON.parse(part) as LogLine;
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => (w.pred(line) ? (w.resolve(line), false) : true));
    }
    return true;
  }

  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 10_000, what = 'log line'): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  /** Every line that names this command id. */
  about(id: string): LogLine[] {
    return this.lines.filter((l) => l.id === id);
  }
}

export interface TestServer<C extends ServerContext = FileServerContext> {
  keel: KeelServer<C>;
  url: string;
  port: number;
  dir: string;
  logs: LogBuffer;
  close(): Promise<void>;
}

const running = new Set<TestServer<ServerContext>>();

export async function startTestServer(overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const t = await launch(overrides);
  if (!onFileStore(t.keel)) throw new Error('startTestServer: expected the file store');
  return t as TestServer;
}

/** An in-process server on the PostgreSQL database at `url` (see support/postgres.ts). */
export function startPgTestServer(url: string, overrides: Partial<ServerConfig> = {}): Promise<TestServer<ServerContext>> {
  return launch({ ...overrides, store: url });
}

async function launch(overrides: Partial<ServerConfig>): Promise<TestServer<ServerContext>> {
  const dir = overrides.stateDir ?? tempDir('keel-server-');
  const logs = new LogBuffer();
  const log = createLogger({ role: 'server' }, logs as unknown as NodeJS.WritableStream);
  const config: ServerConfig = {
    port: 0,
    host: '127.0.0.1',
    stateDir: dir,
    leaseTimeoutMs: 15_000,
    token: undefined,
    maxPending: 100_000,
    repair: false,
    ...overrides,
  };
  const keel = await startServer(config, log);
  let closed: Promise<void> | undefined;
  const t: TestServer<ServerContext> = {
    keel,
    url: keel.url,
    port: Number(new URL(keel.url).port),
    dir,
    logs,
    close() {
      running.delete(t);
      return (closed ??= keel.close());
    },
  };
  running.add(t);
  return t;
}

/** Close every in-process server still open; call from each suite's after hook. */
export async function closeAll(): Promise<void> {
  await Promise.all([...running].map((s) => s.close()));
}

// --- client API ---------------------------------------------------------

export async function submit(url: string, body: unknown = { type: 'DELAY', payload: { ms: 10 } }, headers: Record<string, string> = {}): Promise<string> {
  const r = await call(url, 'POST', '/commands', body, headers);
  if (r.status !== 201) throw new Error(`submit answered ${r.status}: ${r.text}`);
  return r.body.commandId as string;
}

export async function getCommand(url: string, id: string, query = ''): Promise<CommandView> {
  const r = await call<CommandView>(url, 'GET', `/commands/${id}${query}`);
  if (r.status !== 200) throw new Error(`GET /commands/${id} answered ${r.status}: ${r.text}`);
  return r.body;
}

// --- agent API ----------------------------------------------------------

export function claim(url: string, agentId: string, opts: { max?: number; waitMs?: number; resume?: boolean; signal?: AbortSignal } = {}): Promise<Reply<ClaimResponse>> {
  const body: Record<string, unknown> = { agentId };
  if (opts.max !== undefined) body.max = opts.max;
  if (opts.waitMs !== undefined) body.waitMs = opts.waitMs;
  if (opts.resume !== undefined) body.resume = opts.resume;
  if (!opts.signal) return call(url, 'POST', '/agent/claim', body);
  return rawFetch(url, '/agent/claim', body, opts.signal);
}

async function rawFetch<T>(url: string, p: string, body: unknown, signal: AbortSignal): Promise<Reply<T>> {
  const res = await fetch(url + p, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as T, text, headers: res.headers };
}

/** Claim exactly one command and return its lease; fails the test otherwise. */
export async function claimOne(url: string, agentId: string): Promise<{ id: string; lease: number }> {
  const r = await claim(url, agentId);
  if (r.status !== 200 || r.body.commands.length !== 1) throw new Error(`claim answered ${r.status}: ${r.text}`);
  const c = r.body.commands[0]!;
  return { id: c.id, lease: c.lease };
}

export function start(url: string, agentId: string, items: LeaseRef[]): Promise<Reply<BatchResponse>> {
  return call(url, 'POST', '/agent/start', { agentId, items });
}

export function release(url: string, agentId: string, items: LeaseRef[]): Promise<Reply<BatchResponse>> {
  return call(url, 'POST', '/agent/release', { agentId, items });
}

export function finish(
  url: string,
  agentId: string,
  items: Array<LeaseRef & { outcome: Outcome; result?: unknown; error?: string | null }>,
): Promise<Reply<BatchResponse>> {
  return call(url, 'POST', '/agent/finish', { agentId, items });
}

export function heartbeat(url: string, agentId: string, leases: LeaseRef[]): Promise<Reply<HeartbeatResponse>> {
  return call(url, 'POST', '/agent/heartbeat', { agentId, leases });
}

// --- raw sockets ----------------------------------------------------------

export interface RawReply {
  /** Everything the server sent before it closed the socket (or we gave up). */
  text: string;
  status: number | undefined;
  /** True when the server closed the connection; false when we gave up first. */
  closedByServer: boolean;
  ms: number;
}

/**
 * Write `text` to a fresh socket and collect what comes back until the server
 * closes it or `giveUpMs` passes. For requests fetch refuses to send, and for
 * slow clients that stop halfway.
 */
export function rawRequest(port: number, text: string, giveUpMs = 5000, opts: { endAfterResponse?: boolean } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
    let got = '';
    let done = false;
    const finish = (closedByServer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
      resolve({ text: got, status: m ? Number(m[1]) : undefined, closedByServer, ms: Date.now() - t0 });
    };
    socket.on('data', (d) => {
      got += d;
      // A complete response with a body: enough for requests that keep the connection.
      if (opts.endAfterResponse) {
        const head = got.indexOf('\r\n\r\n');
        const len = /content-length: (\d+)/i.exec(got)?.[1];
        if (head >= 0 && len !== undefined && Buffer.byteLength(got) >= head + 4 + Number(len)) finish(false);
      }
    });
    socket.on('close', () => finish(true));
    socket.on('error', () => {});
    const timer = setTimeout(() => finish(false), giveUpMs);
  });
}

/** The JSON body of a raw reply. */
export function rawJson(r: RawReply): any {
  return JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4));
}

// --- misc -------------------------------------------------------------------

/** Poll `cond` every few ms until it holds; for in-memory conditions with no event to await. */
export async function waitUntil(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Total data of the state directory's journal segments (not their NUL tails): unchanged means nothing was written. */
export function journalBytes(dir: string): number {
  return fs
    .readdirSync(dir)
    .filter((f) => f.startsWith('journal-'))
    .reduce((n, f) => n + segmentData(path.join(dir, f)).length, 0);
}

/** The journal's text, every segment: for "is it on disk yet". */
export function journalText(dir: string): string {
  return fs
    .readdirSync(dir)
    .filter((f) => f.startsWith('journal-'))
    .sort()
    .map((f) => segmentData(path.join(dir, f)).toString('utf8'))
    .join('');
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
