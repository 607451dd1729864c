// Real keel processes for tests: spawn server.ts / agent.ts under tsx, read
// their JSON log lines, await a named line instead of sleeping, and make sure
// every process a test started is gone when the test file ends.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

const live = new Set<Proc>();
const dirs: string[] = [];

export function tempDir(prefix = 'keel-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export type LogLine = Record<string, unknown> & { msg?: string };

export class Proc {
  readonly child: ChildProcess;
  readonly name: string;
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];

  constructor(name: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.name = name;
    this.child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    live.add(this);
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d;
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let line: LogLine;
        try {
          line = JSON.parse(text);
        } catch {
          continue;
        }
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => (w.pred(line) ? (w.resolve(line), false) : true));
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        live.delete(this);
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The first log line (past or future) that matches; rejects if the process exits first or on timeout. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 15_000, what = 'log line'): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms\nstdout:\n${this.stdout.slice(-3000)}\nstderr:\n${this.stderr.slice(-3000)}`)), timeoutMs);
      const w = { pred, resolve: (l: LogLine) => (clearTimeout(timer), resolve(l)) };
      this.waiters.push(w);
      void this.exited.then(() => {
        if (this.waiters.includes(w)) {
          clearTimeout(timer);
          reject(new Error(`${this.name} exited before ${what}\nstdout:\n${this.stdout.slice(-3000)}\nstderr:\n${this.stderr.slice(-3000)}`));
        }
      });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, timeoutMs, `"${msg}"`);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await this.exited;
  }
}

export interface ServerHandle {
  proc: Proc;
  url: string;
  port: number;
}

/** Start server.ts on a free loopback port (or `port`) and wait until it listens. */
export async function startServer(stateDir: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}, port = 0): Promise<ServerHandle> {
  const proc = new Proc('server', ['server.ts', '--state-dir', stateDir, '--port', String(port), ...extra], env);
  const line = await proc.waitForMsg('listening');
  const url = String(line.url);
  return { proc, url, port: Number(new URL(url).port) };
}

export function startAgent(server: string, stateDir: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Proc {
  return new Proc('agent', ['agent.ts', '--server', server, '--state-dir', stateDir, ...extra], env);
}

/** Kill every process still running and remove temp dirs; call from each suite's after hook. */
export async function cleanup(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill('SIGKILL')));
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

process.on('exit', () => {
  for (const p of live) p.child.kill('SIGKILL');
});
