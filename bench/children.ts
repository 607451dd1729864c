// keel processes for the end-to-end benchmarks (throughput.ts, latency.ts):
// server.ts and agent.ts as real child processes on 127.0.0.1 with temp state
// dirs. Their stdout is read for the whole run, as a log collector on a pipe
// would, so the cost of logging is part of every figure; a benchmark sees
// each line with the moment it arrived, or only the lines it asks for.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

export type LineFilter = (line: string, at: number) => void;

export class Child {
  readonly proc: ChildProcess;
  readonly name: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sees every stdout line (without its newline) and performance.now() when it arrived. */
  onLine: LineFilter | undefined;
  private waiters: Array<{ test: (line: string) => boolean; resolve: (line: string) => void }> = [];
  private stderr = '';

  constructor(name: string, args: string[], nodeArgs: string[] = []) {
    this.name = name;
    this.proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      const at = performance.now();
      buf += d;
      let start = 0;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n', start)) {
        const line = buf.slice(start, i);
        start = i + 1;
        this.onLine?.(line, at);
        if (this.waiters.length > 0) this.waiters = this.waiters.filter((w) => (w.test(line) ? (w.resolve(line), false) : true));
      }
      buf = buf.slice(start);
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d).slice(-4000)));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    void this.exited.then(() => {
      for (const w of this.waiters.splice(0)) w.resolve('');
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** The next line with this `msg` (parsed), or an error if the process exits first. */
  async waitForMsg(msg: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const needle = `"msg":"${msg}"`;
    let timer: NodeJS.Timeout | undefined;
    const line = await Promise.race([
      new Promise<string>((resolve) => this.waiters.push({ test: (l) => l.includes(needle), resolve })),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve(''), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (line === '') throw new Error(`${this.name}: no "${msg}" line (exit or ${timeoutMs} ms); stderr: ${this.stderr}`);
    return JSON.parse(line) as Record<string, unknown>;
  }

  /** SIGTERM (keel stops cleanly, --cpu-prof is written); SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

export async function startServer(stateDir: string, extra: string[] = [], nodeArgs: string[] = []): Promise<{ child: Child; url: string }> {
  const child = new Child('server', ['server.ts', '--state-dir', stateDir, '--port', '0', '--max-pending', '1000000000', ...extra], nodeArgs);
  const line = await child.waitForMsg('listening');
  return { child, url: String(line.url) };
}

export async function startAgent(server: string, stateDir: string, extra: string[] = [], nodeArgs: string[] = []): Promise<Child> {
  const child = new Child(`agent ${path.basename(stateDir)}`, ['agent.ts', '--server', server, '--state-dir', stateDir, ...extra], nodeArgs);
  await child.waitForMsg('agent ready');
  return child;
}

/** CPU seconds (user + system) a process has used so far; Linux only, NaN elsewhere. */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

export function request(agent: http.Agent, base: URL, method: string, p: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {};
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = http.request({ agent, host: base.hostname, port: base.port, method, path: p, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A lean keep-alive HTTP/1.1 connection for the submitters: one POST at a
 * time, the request written in one piece, only the status and the
 * content-length of the answer read. On a 2-core machine every microsecond
 * the driver spends is one keel does not get; node:http's client costs
 * several times this per request.
 */
export class PostConnection {
  private readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private pending: { resolve: (r: { status: number; text: string }) => void; reject: (e: Error) => void } | undefined;
  private readonly head: string;

  constructor(base: URL, p: string) {
    this.head = `POST ${p} HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: application/json\r\nContent-Length: `;
    this.socket = net.connect(Number(base.port), base.hostname);
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.onData(d));
    const fail = (err: Error): void => {
      const p = this.pending;
      this.pending = undefined;
      p?.reject(err);
    };
    this.socket.on('error', fail);
    this.socket.on('close', () => fail(new Error('connection closed')));
  }

  post(body: string): Promise<{ status: number; text: string }> {
    if (this.pending) throw new Error('one request at a time');
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket.write(`${this.head}${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.toString('latin1', 0, end);
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
    if (Number.isNaN(len)) throw new Error(`answer without content-length: ${head}`);
    if (this.buf.length < end + 4 + len) return;
    const text = this.buf.toString('utf8', end + 4, end + 4 + len);
    this.buf = this.buf.subarray(end + 4 + len);
    const p = this.pending;
    this.pending = undefined;
    p?.resolve({ status: Number(head.slice(9, 12)), text });
  }
}

/** One counter or gauge from a Prometheus text page. */
export function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

export function pct(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/**
 * Write back every dirty page on the machine before a timed run, so the
 * gigabytes an earlier bench wrote (and the discards of deleting them) are
 * not flushed inside this run's fdatasyncs.
 */
export function settleDisk(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

/**
 * The url a server.ts spawned with stdout piped says it listens on (its
 * `listening` log line); rejects if it exits first. Its stdout keeps flowing.
 */
export function listeningUrl(child: ChildProcess): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const m = /"msg":"listening"[^\n]*"url":"([^"]+)"/.exec(buf);
      if (m) resolve(m[1]!);
      if (buf.length > 1e6) buf = buf.slice(-1e5);
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
}
