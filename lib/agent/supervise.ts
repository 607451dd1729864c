// --supervise: run the agent as a child process and restart it, with backoff,
// whenever it dies. The supervisor holds no state: the child opens the ledger
// and reconciles, so a restart is exactly a crash recovery.
import { spawn, type ChildProcess } from 'node:child_process';
import { monotonicMs } from '../clock.ts';
import type { Logger } from '../log.ts';
import { Backoff, pause } from './backoff.ts';

/** A child's exit code when the server refuses its protocol version: a restart cannot help. */
export const EXIT_PROTOCOL_MISMATCH = 3;

/** Set in each child: how many children ran before it (seeds --random-failures). */
export const RUN_ENV = 'KEEL_AGENT_RUN';

// A child that lived this long was healthy: its death starts backoff afresh.
const HEALTHY_MS = 10_000;

/** Run children until SIGTERM/SIGINT; resolves with the exit code for the supervisor. */
export async function supervise(childArgs: string[], log: Logger & { error: Logger }): Promise<number> {
  const backoff = new Backoff({ baseMs: 200, capMs: 5000 });
  const stop = new AbortController();
  let child: ChildProcess | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    log('supervisor stopping', { signal: sig });
    stop.abort();
    child?.kill('SIGTERM');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  for (let run = 0; !stop.signal.aborted; run++) {
    const started = monotonicMs();
    // An IPC channel the child watches: if the supervisor itself is killed,
    // the channel closes and the child stops instead of running orphaned.
    child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...childArgs], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, [RUN_ENV]: String(run) },
    });
    log('agent child started', { run, pid: child.pid });
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child!.on('exit', (code, signal) => resolve({ code, signal })),
    );
    child = undefined;
    if (stop.signal.aborted) break;
    if (code === 2) {
      log.error('agent child rejected its flags; not restarting', { code });
      return 2;
    }
    if (code === EXIT_PROTOCOL_MISMATCH) {
      log.error('the server refused the agent child\'s protocol version; not restarting', { code });
      return code;
    }
    if (monotonicMs() - started >= HEALTHY_MS) backoff.reset();
    const wait = Math.round(backoff.next());
    log.error('agent child died; restarting', { run, code, signal, restartInMs: wait });
    await pause(wait, stop.signal).catch(() => {});
  }
  log('supervisor stopped');
  return 0;
}

/** In a supervised child: stop at once if the supervisor is gone. */
export function exitWithSupervisor(log: Logger): void {
  if (!process.send) return;
  // The channel must not keep the child alive on its own.
  process.channel?.unref();
  process.on('disconnect', () => {
    log('supervisor gone; exiting');
    // The ledger is crash-safe: exiting here is no worse than a SIGKILL.
    process.exit(1);
  });
}
