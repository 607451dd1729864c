// POST /commands/batch: many commands in one group commit. What it answers,
// how per-item idempotency keys behave, that a refused batch writes nothing,
// and that a SIGKILL mid-batch never leaves an answered batch incomplete. On
// the file store and on PostgreSQL (support/stores.ts); the journal's crash
// points and its one fdatasync per batch are the file store's own.
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BatchSubmitItem } from '../lib/protocol.ts';
import {
  call,
  claim,
  cleanup,
  closeAll,
  getCommand,
  journalText,
  startTestServer,
  submit,
  UUID_RE,
  waitUntil,
  type TestServer,
} from './support/server-harness.ts';
import { startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { onDisk, runSuites, storedCommands, STORES } from './support/stores.ts';
import type { ServerContext } from '../lib/server/context.ts';

const delays = (n: number, key?: (i: number) => string): BatchSubmitItem[] =>
  Array.from({ length: n }, (_, i) => ({ type: 'DELAY', payload: { ms: i }, ...(key ? { idempotencyKey: key(i) } : {}) }));

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  // --- in-process: answers and idempotency ---------------------------------------

  const api = suite(store.label('POST /commands/batch'));
  let s: TestServer<ServerContext>;
  const lastSeq = (): number => s.keel.ctx.store.lastSeq;
  api.before(async () => {
    s = await store.startServer({ maxPending: 2000 });
  });
  api.after(async () => {
    await closeAll();
    await cleanup();
  });

  api('a claim parked on the server takes a command of the batch', async () => {
    const parked = claim(s.url, 'batch-agent', { max: 1, waitMs: 10_000 });
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the claim parked');
    const r = await call(s.url, 'POST', '/commands/batch', { commands: delays(3) });
    assert.is(r.status, 201);
    const got = await parked;
    assert.is(got.status, 200);
    assert.is(got.body.commands[0]!.id, r.body.commandIds[0], `claimed ${got.text}`);
  });

  api('201 with one id per command, in order, all stored when the answer arrives', async () => {
    const r = await call(s.url, 'POST', '/commands/batch', { commands: delays(1000) });
    assert.is(r.status, 201, r.text);
    const ids: string[] = r.body.commandIds;
    assert.is(ids.length, 1000);
    assert.is(new Set(ids).size, 1000);
    for (const id of ids) assert.match(id, UUID_RE);
    assert.ok((await onDisk(s, ids[0]!)) && (await onDisk(s, ids[999]!)), 'the batch is not in the journal file or the database');
    for (const i of [0, 1, 500, 999]) {
      const cmd = await getCommand(s.url, ids[i]!);
      assert.equal([cmd.type, cmd.payload, cmd.status], ['DELAY', { ms: i }, 'PENDING']);
    }
  });

  api('per-item idempotencyKey: a repeat answers 200 with the same ids and writes nothing', async () => {
    const commands = delays(5, (i) => `repeat-${i}`);
    const first = await call(s.url, 'POST', '/commands/batch', { commands });
    assert.is(first.status, 201);
    const seq = lastSeq();
    const again = await call(s.url, 'POST', '/commands/batch', { commands });
    assert.is(again.status, 200, again.text);
    assert.equal(again.body.commandIds, first.body.commandIds);
    assert.is(lastSeq(), seq, 'a repeated batch wrote records');
  });

  api('keys mix with new items, repeat inside one batch, and match a single submit with the same key', async () => {
    const single = await submit(s.url, { type: 'DELAY', payload: { ms: 7 } }, { 'idempotency-key': 'shared-7' });
    const r = await call(s.url, 'POST', '/commands/batch', {
      commands: [
        { type: 'DELAY', payload: { ms: 7 }, idempotencyKey: 'shared-7' },
        { type: 'DELAY', payload: { ms: 8 }, idempotencyKey: 'twice' },
        { type: 'DELAY', payload: { ms: 9 } },
        { type: 'DELAY', payload: { ms: 8 }, idempotencyKey: 'twice' },
      ],
    });
    assert.is(r.status, 201, r.text);
    const [a, b, c, d] = r.body.commandIds as string[];
    assert.is(a, single, 'the key of a single submit');
    assert.is(b, d, 'a key repeated within the batch');
    assert.ok(c !== b && c !== a);
    // And the other way round: a single submit finds a batch item's key.
    const r2 = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 8 } }, { 'idempotency-key': 'twice' });
    assert.equal([r2.status, r2.body.commandId], [200, b]);
  });

  api('a key reused with another body: 409 naming the item, and nothing of the batch written', async () => {
    await call(s.url, 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 }, idempotencyKey: 'conflict-1' }] });
    const seq = lastSeq();
    const r = await call(s.url, 'POST', '/commands/batch', {
      commands: [...delays(3), { type: 'DELAY', payload: { ms: 2 }, idempotencyKey: 'conflict-1' }],
    });
    assert.is(r.status, 409, r.text);
    assert.is(r.body.field, 'commands[3].idempotencyKey');
    assert.match(r.body.commandId, UUID_RE);
    const inBatch = await call(s.url, 'POST', '/commands/batch', {
      commands: [
        { type: 'DELAY', payload: { ms: 1 }, idempotencyKey: 'fresh' },
        { type: 'DELAY', payload: { ms: 2 }, idempotencyKey: 'fresh' },
      ],
    });
    assert.is(inBatch.status, 409, inBatch.text);
    assert.is(inBatch.body.field, 'commands[1].idempotencyKey');
    assert.is(lastSeq(), seq, 'a refused batch wrote records');
  });

  api('one bad item refuses the whole batch with a 400 naming its index and field', async () => {
    const seq = lastSeq();
    const commands: unknown[] = delays(5);
    commands[3] = { type: 'DELAY', payload: { ms: -1 } };
    const r = await call(s.url, 'POST', '/commands/batch', { commands });
    assert.is(r.status, 400);
    assert.is(r.body.field, 'commands[3].payload.ms');
    assert.match(r.body.error, /^commands\[3\]\.payload\.ms /);
    assert.is(lastSeq(), seq);
  });

  api('past --max-pending: 429 for the whole batch, nothing written', async () => {
    const seq = lastSeq();
    const pending = (await s.keel.ctx.store.counts()).byState.PENDING;
    const over = await call(s.url, 'POST', '/commands/batch', { commands: delays(2000 - pending + 1) });
    assert.is(over.status, 429, over.text);
    assert.is(over.headers.get('retry-after'), '1');
    assert.is(lastSeq(), seq);
    const fits = await call(s.url, 'POST', '/commands/batch', { commands: delays(2000 - pending) });
    assert.is(fits.status, 201, fits.text);
  });

  suites.push(api);
}

// --- the file store: one fdatasync per batch ------------------------------------------

const synced = suite('a batch is one group commit [file store only]');
synced.after(async () => {
  await closeAll();
  await cleanup();
});

synced('1000 commands, one fdatasync, in the journal file when the answer arrives', async () => {
  const s = await startTestServer();
  const stats = s.keel.ctx.store.durable.journal.stats;
  const fsyncs = stats.fsyncs;
  const r = await call(s.url, 'POST', '/commands/batch', { commands: delays(1000) });
  assert.is(r.status, 201, r.text);
  const ids: string[] = r.body.commandIds;
  assert.is(stats.fsyncs - fsyncs, 1, 'one group commit');
  const text = journalText(s.dir);
  assert.ok(text.includes(ids[0]!) && text.includes(ids[999]!), 'the batch is not in the journal file');
});

// --- real processes: SIGKILL mid-batch ----------------------------------------------

const crash = suite('SIGKILL mid-batch at a journal crash point [file store only]');
crash.after(cleanup);

for (const point of ['journal:written', 'journal:synced']) {
  crash(`killed at ${point} while writing a batch: no answer, and a resubmit completes it exactly once`, async () => {
    const dir = tempDir();
    let server: ServerHandle = await startServer(dir, [], { KEEL_CRASH_AT: point });
    const commands = delays(500, (i) => `kill-${i}`);
    const r = await call(server.url, 'POST', '/commands/batch', { commands }).catch((err: Error) => err);
    assert.instance(r, Error, 'the batch was answered although the server died writing it');
    const { signal } = await server.proc.exited;
    assert.is(signal, 'SIGKILL');
    assert.ok(server.proc.stderr.includes(`"point":"${point}"`));

    server = await startServer(dir, [], {}, server.port);
    const again = await call(server.url, 'POST', '/commands/batch', { commands });
    assert.ok(again.status === 200 || again.status === 201, again.text);
    const ids: string[] = again.body.commandIds;
    assert.is(new Set(ids).size, 500);
    for (const i of [0, 250, 499]) assert.equal((await getCommand(server.url, ids[i]!)).payload, { ms: i });
    await server.proc.kill('SIGTERM');
    const { keys, size } = await storedCommands(dir, []);
    assert.is(size, 500, 'each key holds exactly one command');
    assert.equal(commands.map((c) => keys.get(c.idempotencyKey!)), ids);
  });
}

for (const store of STORES) {
  const streamed = suite(store.label('SIGKILL while batches stream in'));
  streamed.after(cleanup);

  streamed('SIGKILL while batches stream in: every answered batch is whole after the restart, none doubled', async () => {
    const dir = tempDir();
    const args = await store.serverArgs();
    let server: ServerHandle = await startServer(dir, args);
    const answered = new Map<number, string[]>();
    const sent: BatchSubmitItem[][] = [];
    let next = 0;
    let dead = false;
    // Four clients post 200-command batches back to back; the server is killed
    // once ten have been answered, with others in flight.
    const clients = Array.from({ length: 4 }, async () => {
      while (!dead) {
        const n = next++;
        const commands = delays(200, (i) => `stream-${n}-${i}`);
        sent[n] = commands;
        const r = await call(server.url, 'POST', '/commands/batch', { commands }).catch(() => undefined);
        if (r?.status === 201) answered.set(n, r.body.commandIds);
        else if (r !== undefined) throw new Error(`batch ${n} answered ${r.status}: ${r.text}`);
        if (answered.size === 10 && !dead) {
          dead = true;
          await server.proc.kill('SIGKILL');
        }
      }
    });
    await Promise.all(clients);
    server = await startServer(dir, args, {}, server.port);
    // Answered: every id is there. Unanswered: the same keys again settle it.
    for (const [n, ids] of answered) {
      for (const i of [0, 199]) assert.is((await call(server.url, 'GET', `/commands/${ids[i]}`)).status, 200, `batch ${n} lost command ${i}`);
      const again = await call(server.url, 'POST', '/commands/batch', { commands: sent[n] });
      assert.equal([again.status, again.body.commandIds], [200, ids], `batch ${n} changed`);
    }
    for (let n = 0; n < sent.length; n++) {
      if (answered.has(n)) continue;
      const again = await call(server.url, 'POST', '/commands/batch', { commands: sent[n] });
      assert.ok(again.status === 200 || again.status === 201, again.text);
    }
    await server.proc.kill('SIGTERM');
    const { keys, size } = await storedCommands(dir, args);
    assert.is(keys.size, sent.length * 200, 'a key without its command');
    assert.is(size, sent.length * 200, 'a command stored twice');
  });

  suites.push(streamed);
}

runSuites(...suites, synced, crash);
