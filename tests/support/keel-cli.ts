// The keel CLI as a user runs it: lib/cli/keel.mjs (the package's bin) in a
// child process, its stdout and stderr piped, so it sees no terminal.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './processes.ts';

export const KEEL_BIN = path.join(ROOT, 'lib/cli/keel.mjs');

export interface KeelRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

const live = new Set<ChildProcess>();
const MAX_LIFETIME_MS = 120_000;

/** A running CLI: its output so far, and its end. */
export class KeelProc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly done: Promise<KeelRun>;
  private watchers: Array<() => void> = [];

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    // No KEEL_* from the environment running the tests: each test says what it means.
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEEL_')));
    this.child = spawn(process.execPath, [KEEL_BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env } });
    live.add(this.child);
    // A CLI that hangs fails its test (code null) instead of hanging the run.
    const limit = setTimeout(() => this.child.kill('SIGKILL'), MAX_LIFETIME_MS);
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d;
      for (const w of this.watchers.splice(0)) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d));
    this.done = new Promise((resolve) => {
      this.child.on('close', (code) => {
        clearTimeout(limit);
        live.delete(this.child);
        for (const w of this.watchers.splice(0)) w();
        resolve({ code, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  /** Resolves once stdout matches; rejects if the process ends first or after timeoutMs. */
  async waitForOutput(pred: (stdout: string) => boolean, timeoutMs = 15_000, what = 'output'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.stdout)) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`keel exited before ${what}:\n${this.stdout}\n${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms:\n${this.stdout}\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.watchers.push(() => (clearTimeout(t), resolve()));
      });
    }
  }

  kill(): Promise<KeelRun> {
    this.child.kill('SIGTERM');
    return this.done;
  }
}

/** Run `keel ARGS` to its end. */
export function keel(args: string[], env: NodeJS.ProcessEnv = {}): Promise<KeelRun> {
  return new KeelProc(args, env).done;
}

/** Kill every CLI still running; call from each suite's after hook. */
export function stopKeels(): void {
  for (const c of live) c.kill('SIGKILL');
}

process.on('exit', stopKeels);
