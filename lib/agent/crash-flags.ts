// --kill-after and --random-failures: the agent SIGKILLs itself for real, no
// cleanup and no flush, exactly like a power cut. With --supervise these run
// in each child, never in the supervisor.
import { createHash } from 'node:crypto';
import { setRandomCrash } from '../../state/crash-points.ts';
import { flushLogs, type Logger } from '../log.ts';
import { mulberry32 } from '../prng.ts';
import type { AgentConfig } from './config.ts';

export interface CrashFlags {
  /** Pass to the work loop: dies before the (N+1)th claim with --kill-after=Npolls. */
  beforeClaim?: (claimsSoFar: number) => void;
}

/**
 * Arm the crash flags. `run` counts the supervisor's restarts, so each child
 * of a seeded run flips different (but reproducible) coins: the same seed in
 * every child would crash each one at the same point, for ever.
 */
export function armCrashFlags(cfg: AgentConfig, run: number, log: Logger): CrashFlags {
  const flags: CrashFlags = {};
  const kill = cfg.killAfter;
  if (kill && 'seconds' in kill) {
    log('kill-after armed', { seconds: kill.seconds });
    setTimeout(() => die(log, `--kill-after=${kill.seconds}`), kill.seconds * 1000).unref();
  } else if (kill) {
    log('kill-after armed', { polls: kill.polls });
    flags.beforeClaim = (n) => {
      if (n >= kill.polls) die(log, `--kill-after=${kill.polls}polls`);
    };
  }
  if (cfg.randomFailures !== undefined && cfg.randomFailures > 0) {
    const seed = cfg.seed ?? String(Date.now());
    log('random failures armed', { p: cfg.randomFailures, seed, run });
    setRandomCrash(cfg.randomFailures, seededRandom(`${seed}:${run}`));
  }
  return flags;
}

function die(log: Logger, why: string): never {
  log('killing myself', { why, pid: process.pid });
  flushLogs();
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL is delivered asynchronously; never run past this point meanwhile.
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}

/** mulberry32 seeded from a string, so a --seed word replays the same run. */
export function seededRandom(seed: string): () => number {
  return mulberry32(createHash('sha256').update(seed).digest().readUInt32LE(0));
}
