// A clean shutdown with more than SHUTDOWN_SNAPSHOT_BYTES of journal since the
// last snapshot writes one, so the next start reads the snapshot alone; a
// shutdown with less leaves the journal as it is.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SHUTDOWN_SNAPSHOT_BYTES } from '../lib/server/app.ts';
import { listSegments } from '../state/journal.ts';
import { SNAPSHOT_FILE } from '../state/snapshot.ts';
import { call, cleanup, closeAll, getCommand, startTestServer } from './support/server-harness.ts';

const test = suite('snapshot at shutdown');
test.after(async () => {
  await closeAll();
  await cleanup();
});

const batch = { commands: Array.from({ length: 1000 }, (_, i) => ({ type: 'DELAY', payload: { ms: i } })) };

test('past the bound: a snapshot is written at close, the journal after it is empty, and every command is back', async () => {
  const s = await startTestServer({ maxPending: 100_000 });
  const ids: string[] = [];
  while (s.keel.ctx.store.durable.journal.currentSegmentBytes < SHUTDOWN_SNAPSHOT_BYTES) {
    const r = await call(s.url, 'POST', '/commands/batch', batch);
    assert.is(r.status, 201, r.text);
    ids.push(...r.body.commandIds);
  }
  assert.not.ok(fs.existsSync(path.join(s.dir, SNAPSHOT_FILE)), 'a snapshot before the shutdown');
  await s.close();
  assert.ok(fs.existsSync(path.join(s.dir, SNAPSHOT_FILE)), 'no snapshot at shutdown');
  const segs = listSegments(s.dir);
  assert.is(segs.length, 1);
  assert.is(fs.readFileSync(segs[0]!.file, 'utf8').split('\n').filter(Boolean).length, 1, 'records after the snapshot');
  const again = await startTestServer({ stateDir: s.dir, maxPending: 100_000 });
  assert.is(again.keel.ctx.store.table.size, ids.length);
  assert.equal((await getCommand(again.url, ids[ids.length - 1]!)).payload, { ms: 999 });
  await again.close();
});

test('under the bound: no snapshot, the journal is kept', async () => {
  const s = await startTestServer();
  assert.is((await call(s.url, 'POST', '/commands/batch', { commands: batch.commands.slice(0, 10) })).status, 201);
  await s.close();
  assert.not.ok(fs.existsSync(path.join(s.dir, SNAPSHOT_FILE)));
});

test.run();
