// keel processes for the end-to-end benchmarks (throughput.ts, latency.ts):
// server.ts and agent.ts as real child processes on 127.0.0.1 with temp state
// dirs. Their stdout is read for the whole run, as a log collector on a pipe
// would, so the cost of logging is part of every figure; a benchmark sees
// each line with the moment it arrived, or only the lines it asks for.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
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

/** One counter or gauge from a Prometheus text page. */
export function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

export function pct(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
