// One full garbage collection once a big state directory has been read.
// Replay leaves tens of MB of garbage (parsed records, the commands each
// transition replaced) that V8 would hold until its next major GC, which a
// quiet server may not reach for a long time: at 1M commands with the
// worst-case journal tail this was the difference between ~470 and ~515 MB
// of RSS at the first request, for about 30 ms (bench/README.md).
//
// V8 sweeps the freed pages and hands them back on background threads after
// the collection: without a pause before serving, the first request still
// found up to 40 MB of them resident in about one start of three; with a
// 50 ms pause, none of 18 starts did.
//
// Node exposes gc() only under --expose-gc, which `node server.ts` is not
// started with; setting the flag at run time and taking gc() from a fresh
// context is how Jest does it for --logHeapUsage.
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';

/** Below this many commands a restart's garbage is a few MB: not worth a pause. */
export const COLLECT_AFTER_COMMANDS = 100_000;

/** How long the background threads get to return what the collection freed. */
export const RETURN_PAGES_MS = 50;

/**
 * Runs a full GC, then waits RETURN_PAGES_MS; resolves false at once if this
 * Node would not expose gc() (nothing else changes).
 */
export async function collectGarbage(): Promise<boolean> {
  let gc: unknown;
  try {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('typeof gc === "function" ? gc : undefined');
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
  if (typeof gc !== 'function') return false;
  gc();
  await sleep(RETURN_PAGES_MS);
  return true;
}
