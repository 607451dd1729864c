// The full GC a big restart runs before serving (lib/server/after-load.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import vm from 'node:vm';
import { collectGarbage } from '../lib/server/after-load.ts';

test('collectGarbage() frees what only a WeakRef still points at', async () => {
  const ref = (() => new WeakRef({ big: new Array(10_000).fill('x') }))();
  const nextJob = (): Promise<unknown> => new Promise((resolve) => setImmediate(resolve));
  // A WeakRef's target lives at least until the job that made or read it ends.
  await nextJob();
  assert.ok(ref.deref() !== undefined, 'no GC has run yet (the check below would prove nothing)');
  await nextJob();
  assert.is(await collectGarbage(), true);
  assert.ok(ref.deref() === undefined, 'still there after a full GC');
});

test('collectGarbage() leaves gc() unexposed to later code', async () => {
  await collectGarbage();
  assert.is(vm.runInNewContext('typeof gc'), 'undefined');
  assert.is(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
});

test.run();
