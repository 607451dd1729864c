// One process per state directory. proper-lockfile holds `<dir>/lock` (an
// mkdir lock whose mtime the holder refreshes every two seconds); beside it,
// `lock.owner.json` says who holds it, and names the lock directory (inode and
// birth time) it was written for, so an older owner's file is never taken for
// the current holder's.
//
// Taking over from a dead holder: on this host a dead pid is known at once,
// so a restart after SIGKILL waits for nothing. Otherwise (another host, or a
// holder that died before naming itself) the lock is stale once its mtime is
// STALE_MS old. STALE_MS is long on purpose: a holder whose event loop is
// blocked (a large synchronous snapshot) must not be judged dead.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { isDiskFull } from './disk-full.ts';
import { writeFileDurably } from './fsio.ts';

const STALE_MS = 10_000;
const UPDATE_MS = 2000;

export interface LockOwner {
  pid: number;
  role: string;
  host: string;
  since: string;
  /** The lock directory this owner created: inode and birth time. */
  lock: string;
}

export class LockedError extends Error {
  readonly dir: string;
  readonly owner: LockOwner | undefined;
  constructor(dir: string, owner: LockOwner | undefined) {
    const who = owner ? `${owner.role} pid ${owner.pid} on ${owner.host}, since ${owner.since}` : 'another process';
    super(`state directory ${dir} is in use by ${who}; stop it first, or give this process its own --state-dir`);
    this.name = 'LockedError';
    this.dir = dir;
    this.owner = owner;
  }
}

/**
 * Name this process as the holder. On a full disk the previous holder's file
 * is removed to make room (its page is what the new one needs), and if even
 * that is not enough the lock is held unnamed: a start on a full disk must
 * not fail over an advisory file. Unnamed, a takeover after a SIGKILL waits
 * for the mtime to go stale instead of checking the pid.
 */
function writeOwner(ownerFile: string, text: string): void {
  try {
    writeFileDurably(ownerFile, text);
  } catch (err) {
    if (!isDiskFull(err)) throw err;
    fs.rmSync(ownerFile, { force: true });
    try {
      writeFileDurably(ownerFile, text);
    } catch (again) {
      if (!isDiskFull(again)) throw again;
    }
  }
}

export interface StateLock {
  release(): Promise<void>;
}

/**
 * Take the directory's lock. Fails at once if a live process holds it; takes
 * over at once from a dead holder on this host (see the top of this file).
 */
export async function lockStateDir(dir: string, role: string, onCompromised?: (err: Error) => void): Promise<StateLock> {
  const lockDir = path.join(dir, 'lock');
  const ownerFile = path.join(dir, 'lock.owner.json');
  const deadline = performance.now() + STALE_MS + 3000; // monotonic: how long this process keeps trying
  for (;;) {
    try {
      const release = await lockfile.lock(dir, {
        lockfilePath: lockDir,
        realpath: false,
        stale: STALE_MS,
        update: UPDATE_MS,
        retries: 0,
        onCompromised: onCompromised ?? ((err) => {
          process.stderr.write(`${JSON.stringify({ level: 'fatal', msg: 'lost the state directory lock', dir, error: err.message })}\n`);
          process.exit(1);
        }),
      });
      const owner: LockOwner = { pid: process.pid, role, host: os.hostname(), since: new Date().toISOString(), lock: identity(fs.statSync(lockDir)) };
      writeOwner(ownerFile, `${JSON.stringify(owner)}\n`);
      return { release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
      const owner = readOwner(ownerFile);
      const verdict = judge(lockDir, owner);
      if (verdict === 'gone') {
        fs.rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (verdict === 'held' || performance.now() > deadline) throw new LockedError(dir, owner);
      await new Promise((r) => setTimeout(r, 50)); // a holder between mkdir and naming itself
    }
  }
}

/** Is the lock's holder gone (take over), alive (refuse), or not yet known (wait)? */
function judge(lockDir: string, owner: LockOwner | undefined): 'gone' | 'held' | 'unknown' {
  let st: fs.Stats;
  try {
    st = fs.statSync(lockDir);
  } catch {
    return 'gone'; // released meanwhile
  }
  // Wall time: the file system stamps mtimes with it.
  if (Date.now() - st.mtimeMs > STALE_MS) return 'gone';
  if (!owner || owner.lock !== identity(st)) return 'unknown';
  if (owner.host === os.hostname() && owner.pid !== process.pid && !isAlive(owner.pid)) return 'gone';
  return 'held';
}

function identity(st: fs.Stats): string {
  return `${st.ino}@${st.birthtimeMs}`;
}

function readOwner(file: string): LockOwner | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a SIGKILLed child its parent has not reaped yet). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}
