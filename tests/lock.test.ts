// One process per state directory: a second one is refused at once with a
// message naming the directory and the holder; a SIGKILLed holder's lock is
// taken over at once, its pid being dead (the times are printed).
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore } from '../state/command-store.ts';
import { LockedError } from '../state/lock.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';

const test = suite('lock');
test.after(cleanup);

async function holder(dir: string): Promise<Proc> {
  const p = new Proc('lock holder', ['tests/fixtures/hold-lock.ts', dir]);
  await p.waitForMsg('locked');
  return p;
}

test('a second process is refused at once, told the directory and the holder', async () => {
  const dir = tempDir();
  const child = await holder(dir);
  const t0 = performance.now();
  const err = await CommandStore.open(dir).then(
    (s) => s.close(),
    (e: unknown) => e,
  );
  const ms = performance.now() - t0;
  assert.instance(err, LockedError);
  const locked = err as LockedError;
  assert.is(locked.dir, dir);
  assert.is(locked.owner?.pid, child.pid);
  assert.is(locked.owner?.role, 'server');
  assert.ok(locked.message.includes(`state directory ${dir} is in use by server pid ${child.pid}`), locked.message);
  assert.ok(ms < 2000, `refusal took ${ms.toFixed(0)} ms`);
  await child.kill();
});

/** Kill the holder, then time how long a new process waits for the lock. */
async function takeOver(dir: string, child: Proc, when: string): Promise<CommandStore> {
  await child.kill('SIGKILL');
  const t0 = performance.now();
  const store = await CommandStore.open(dir, { role: 'agent' });
  const ms = performance.now() - t0;
  console.log(`lock taken over ${ms.toFixed(0)} ms after a SIGKILL ${when}`);
  assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
  return store;
}

test('after the holder is SIGKILLed, a new holder gets the lock within seconds', async () => {
  const dir = tempDir();
  const child = await holder(dir);
  // proper-lockfile refreshes the lock's mtime every second; wait for one
  // refresh so this measures a holder that has been up for a while.
  const lockDir = path.join(dir, 'lock');
  const first = fs.statSync(lockDir).mtimeMs;
  while (fs.statSync(lockDir).mtimeMs === first) await new Promise((r) => setTimeout(r, 50));
  const store = await takeOver(dir, child, 'of a holder that has refreshed its lock');

  // The new holder is the one named now: a third process is refused with its pid.
  const third = new Proc('third', ['tests/fixtures/hold-lock.ts', dir]);
  const { code } = await third.exited;
  assert.is.not(code, 0);
  assert.match(third.stderr, `state directory ${dir} is in use by agent pid ${process.pid}`);
  await store.close();
});

test('a holder SIGKILLed right after it took the lock is taken over too', async () => {
  const dir = tempDir();
  const store = await takeOver(dir, await holder(dir), 'right after locking');
  await store.close();
});

test('a cleanly released directory is taken at once', async () => {
  const dir = tempDir();
  const first = await CommandStore.open(dir);
  await first.close();
  const t0 = performance.now();
  const second = await CommandStore.open(dir);
  assert.ok(performance.now() - t0 < 2000, 'a released lock made the next holder wait');
  await second.close();
});

test.run();
