// One process per state directory. proper-lockfile holds `<dir>/lock` (an
// mkdir lock whose mtime the holder refreshes every second); beside it,
// `lock.owner.json` says who holds it, for the message a second process prints.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';

// proper-lockfile's floor: a lock whose mtime is older than this is stale.
const STALE_MS = 2000;

export interface LockOwner {
  pid: number;
  role: string;
  host: string;
  since: string;
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

export interface StateLock {
  release(): Promise<void>;
}

/**
 * Take the directory's lock. Fails at once if a live process holds it; if the
 * holder is dead (SIGKILLed), waits the ~2 s until its lock goes stale.
 */
export async function lockStateDir(dir: string, role: string, onCompromised?: (err: Error) => void): Promise<StateLock> {
  const ownerFile = path.join(dir, 'lock.owner.json');
  // A dead holder's lock goes stale STALE_MS after its last mtime, and
  // proper-lockfile first stamps that mtime up to 1 s in the future (its
  // precision probe), so a holder killed in its first second needs ~3 s.
  // Give up only well after that, so a loaded machine does not refuse a
  // restart in the name of a dead pid.
  const deadline = Date.now() + STALE_MS + 1000 + 2000;
  for (;;) {
    try {
      const release = await lockfile.lock(dir, {
        lockfilePath: path.join(dir, 'lock'),
        realpath: false,
        stale: STALE_MS,
        update: STALE_MS / 2,
        retries: 0,
        onCompromised: onCompromised ?? ((err) => {
          process.stderr.write(`${JSON.stringify({ level: 'fatal', msg: 'lost the state directory lock', dir, error: err.message })}\n`);
          process.exit(1);
        }),
      });
      const owner: LockOwner = { pid: process.pid, role, host: os.hostname(), since: new Date().toISOString() };
      await writeFileAtomic(ownerFile, `${JSON.stringify(owner)}\n`);
      return { release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
      const owner = readOwner(ownerFile);
      if ((owner && owner.pid !== process.pid && isAlive(owner.pid)) || Date.now() > deadline) {
        throw new LockedError(dir, owner);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function readOwner(file: string): LockOwner | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
