// Retention (--retain, --retain-max): past either bound the oldest final
// commands leave memory, the list, the next snapshot and the idempotency keys;
// a command that is not final never does; a restart does not bring a forgotten
// command back, whether its removal is in the journal tail or in a snapshot.
// The bounds over HTTP run on the file store and on PostgreSQL
// (support/stores.ts); what a restart of the file store keeps is its own.
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore } from '../state/command-store.ts';
import { CommandOrder } from '../state/command-order.ts';
import { CommandTable } from '../state/command-table.ts';
import type { RetentionPolicy } from '../state/retention.ts';
import { call } from './support/http.ts';
import { cleanup, startServer, tempDir } from './support/processes.ts';
import { runSuites, STORES } from './support/stores.ts';

const DAY = 86_400_000;

function clock(start = 1_700_000_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

async function open(dir: string, retention?: RetentionPolicy, now?: () => number): Promise<CommandStore> {
  return CommandStore.open(dir, { noLock: true, retention, now });
}

async function submit(store: CommandStore, key?: string, ms = 1): Promise<string> {
  const r = await store.submit({ type: 'DELAY', payload: { ms }, idemKey: key, bodyHash: key && `h-${key}` });
  assert.is(r.kind, 'created');
  return r.id;
}

/** Claim (and so start) and complete one command. */
async function complete(store: CommandStore, id: string): Promise<void> {
  const [cmd] = await store.claim(`agent-${id}`, 1);
  assert.is(cmd?.id, id);
  assert.is((await store.finish(`agent-${id}`, id, 1, 'COMPLETED', { ok: true }, null)).kind, 'next');
}

function held(store: CommandStore, ids: readonly string[]): boolean[] {
  return ids.map((id) => store.get(id) !== undefined);
}

const test = suite('retention in the store [file store only]');
test.after(cleanup);

test('past --retain-max the oldest final commands go, with their keys; older commands not final stay', async () => {
  const dir = tempDir();
  const store = await open(dir, { ms: DAY, max: 3 });
  const running = await submit(store, 'running');
  const [claimed] = await store.claim('agent-r', 1);
  assert.is(claimed?.id, running);
  await store.start('agent-r', running, 1);
  const done: string[] = [];
  for (let i = 0; i < 5; i++) {
    const id = await submit(store, `k${i}`);
    await complete(store, id);
    done.push(id);
  }
  const pending = await submit(store, 'pending');
  // Five final, three kept: the two that finished first are gone.
  assert.equal(held(store, done), [false, false, true, true, true]);
  assert.is(store.get(running)?.state, 'RUNNING');
  assert.is(store.get(pending)?.state, 'PENDING');
  assert.is(store.table.size, 5);
  assert.is(store.table.finalCount, 3);
  assert.is(store.table.byIdemKey.has('k0'), false);
  assert.is(store.table.byIdemKey.get('k2'), done[2]);
  // The forgotten key is free: the same key makes a new command.
  const again = await submit(store, 'k0');
  assert.not.equal(again, done[0]);
  // The journal has it: a reopen (no snapshot yet) does not bring them back.
  await store.close();
  const reopened = await open(dir, { ms: DAY, max: 3 });
  assert.equal(held(reopened, done), [false, false, true, true, true]);
  assert.is(reopened.table.byIdemKey.get('k0'), again);
  assert.is(reopened.table.size, 6);
  // Nor does a snapshot.
  await reopened.durable.compact();
  await reopened.close();
  const fromSnapshot = await open(dir);
  assert.equal(held(fromSnapshot, done), [false, false, true, true, true]);
  assert.equal([...fromSnapshot.table.liveCommands()].map((c) => c.id).sort(), [running, pending, again].sort());
  await fromSnapshot.close();
});

test('past --retain the commands final for longer go; those final since stay', async () => {
  const t = clock();
  const store = await open(tempDir(), { ms: 60_000, max: 1000 }, t.now);
  const early = await submit(store);
  await complete(store, early);
  t.advance(30_000);
  const late = await submit(store);
  await complete(store, late);
  const pendingLong = await submit(store);
  t.advance(30_001);
  await store.forgetExpired();
  assert.equal(held(store, [early, late, pendingLong]), [false, true, true]);
  t.advance(DAY);
  await store.forgetExpired();
  assert.equal(held(store, [early, late, pendingLong]), [false, false, true], 'a pending command is never forgotten, however old');
  await store.close();
});

test('lowered bounds apply at open, also to commands the snapshot holds as bytes', async () => {
  const dir = tempDir();
  const store = await open(dir);
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) {
    const id = await submit(store, i % 2 ? `key-${i}` : undefined);
    if (i % 4 === 3) {
      ids.push(id); // left PENDING
      continue;
    }
    await store.cancel(id);
    ids.push(id);
  }
  await store.durable.compact();
  await store.close();

  const lowered = await open(dir, { ms: DAY, max: 5 });
  const finals = ids.filter((_, i) => i % 4 !== 3);
  const pending = ids.filter((_, i) => i % 4 === 3);
  assert.equal(held(lowered, finals), finals.map((_, i) => i >= finals.length - 5));
  assert.ok(held(lowered, pending).every(Boolean));
  assert.is(lowered.table.size, 5 + pending.length);
  assert.is(lowered.table.byIdemKey.has('key-1'), false);
  // The PENDING ones are still handed out, oldest first.
  assert.equal((await lowered.claim('a', 100)).map((c) => c.id), pending);
  await lowered.durable.compact();
  await lowered.close();
  const again = await open(dir);
  assert.is(again.table.size, 5 + pending.length);
  assert.equal(held(again, finals), finals.map((_, i) => i >= finals.length - 5));
  await again.close();
});

test('a snapshot taken while commands are forgotten holds them as of its cut', async () => {
  const dir = tempDir();
  const store = await open(dir);
  for (let i = 0; i < 20; i++) await store.cancel(await submit(store));
  await store.close();
  const s2 = await open(dir, { ms: DAY, max: 1000 });
  const ids = [...Array(s2.table.order.slots).keys()].map((i) => s2.table.order.at(i)!);
  // The dump is cut now; the forget lands while it is read.
  const dump = s2.table.dump();
  s2.table.apply({ forget: ids.slice(0, 10), at: 1 });
  const lines = [...dump.lines];
  dump.done();
  assert.is(lines.length, 20);
  const after = [...s2.table.dump().lines];
  assert.is(after.length, 10);
  await s2.close();
});

test('a forget record that names a command not final does not follow, and changes nothing', () => {
  const table = new CommandTable();
  table.apply({ id: 'a', from: null, version: 0, ev: { type: 'submit', id: 'a', cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } });
  table.apply({ id: 'b', from: null, version: 0, ev: { type: 'submit', id: 'b', cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } });
  table.apply({ id: 'b', from: 'PENDING', version: 1, ev: { type: 'cancel', at: 2 } });
  assert.throws(() => table.apply({ forget: ['b', 'a'], at: 3 }), /forget of a: the command is PENDING, not final/);
  assert.throws(() => table.apply({ forget: ['nope'], at: 3 }), /forget of nope: no such command/);
  assert.is(table.size, 2);
  assert.is(table.get('b')?.state, 'FAILED');
  table.apply({ forget: ['b'], at: 3 });
  assert.is(table.get('b'), undefined);
  assert.is(table.size, 1);
});

test('the submission order keeps its ordinals when it drops removed ids', () => {
  const order = new CommandOrder();
  const gone = new Set<string>();
  for (let i = 0; i < 5000; i++) order.push(`c${i}`);
  for (let i = 0; i < 4000; i++) {
    if (i % 5 === 4) continue;
    gone.add(`c${i}`);
    order.noteRemoved((id) => !gone.has(id));
  }
  assert.ok(order.slots < 5000, 'removed ids were dropped');
  assert.is(order.length, 5000 - gone.size);
  assert.is(order.end, 5000);
  for (let i = 0; i < order.slots; i++) assert.is(order.at(i), `c${order.ordinalAt(i)}`);
  // indexBelow(ordinal): the newest held entry older than `ordinal`.
  assert.is(order.at(order.indexBelow(5000)), 'c4999');
  assert.is(order.at(order.indexBelow(15)), 'c14');
  assert.is(order.at(order.indexBelow(14)), 'c9');
  assert.is(order.indexBelow(4), -1);
  order.push('c5000');
  assert.is(order.ordinalAt(order.slots - 1), 5000);
});

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const overHttp = suite(store.label('retention over HTTP'));
  overHttp.after(cleanup);

  overHttp('--retain-max forgets the oldest final commands; GET says the command may have expired; the list pages past the gaps', async () => {
    const server = await startServer(tempDir(), ['--retain-max', '100', ...(await store.serverArgs())]);
    const ids: string[] = [];
    for (let b = 0; b < 3; b++) {
      const r = await call(server.url, 'POST', '/commands/batch', { commands: Array.from({ length: 1000 }, () => ({ type: 'DELAY', payload: { ms: 1 } })) });
      assert.is(r.status, 201, r.text);
      ids.push(...r.body.commandIds);
    }
    const firstPage = await call(server.url, 'GET', '/commands?limit=500');
    // Cancel two of every three, oldest first: 2,000 final, of which the 100 canceled last are kept.
    const canceled = ids.filter((_, i) => i % 3 !== 1);
    for (const id of canceled) assert.is((await call(server.url, 'POST', `/commands/${id}/cancel`)).status, 200);
    if (store.name === 'postgres') {
      // PostgreSQL keeps the count bound in its sweep (once a second, 1,000 a sweep; docs/design.md), not at each transition.
      const deadline = Date.now() + 20_000;
      while (!/^keel_commands_forgotten_total 1900$/m.test((await call(server.url, 'GET', '/metrics')).text)) {
        assert.ok(Date.now() < deadline, 'the sweep did not forget the 1,900 oldest final commands');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const gone = await call(server.url, 'GET', `/commands/${ids[0]}`);
    assert.is(gone.status, 404);
    assert.match(gone.body.error, /may have expired|has expired/);
    assert.match(gone.body.error, /--retain-max 100\b/);
    assert.is(gone.body.mayHaveExpired, true);
    assert.is((await call(server.url, 'GET', `/commands/${ids[0]}/events`)).status, 404);
    assert.is((await call(server.url, 'POST', `/commands/${ids[0]}/cancel`)).status, 404);
    const keptFinal = new Set(canceled.slice(-100));
    const kept = ids.filter((id, i) => i % 3 === 1 || keptFinal.has(id));
    const listFrom = async (cursor: string | null): Promise<string[]> => {
      const listed: string[] = [];
      while (cursor !== null) {
        const page: { status: number; text: string; body: any } = await call(server.url, 'GET', `/commands?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
        assert.is(page.status, 200, page.text);
        listed.push(...page.body.commands.map((c: { id: string }) => c.id));
        cursor = page.body.nextCursor;
      }
      return listed;
    };
    assert.equal(await listFrom(''), [...kept].reverse());
    // A cursor handed out before the removals still means the same place.
    const older = new Set(ids.slice(0, 2500));
    assert.equal(await listFrom(firstPage.body.nextCursor), [...kept].reverse().filter((id) => older.has(id)));
    const metrics = (await call(server.url, 'GET', '/metrics')).text;
    assert.match(metrics, /keel_commands\{state="FAILED"\} 100\n/);
    assert.match(metrics, /keel_commands_forgotten_total 1900\n/);
    await server.proc.kill('SIGTERM');
  });

  overHttp('--retain forgets a command once it has been final that long', async () => {
    const server = await startServer(tempDir(), ['--retain', '1s', ...(await store.serverArgs())]);
    const id = (await call(server.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } })).body.commandId;
    const keep = (await call(server.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } })).body.commandId;
    assert.is((await call(server.url, 'POST', `/commands/${id}/cancel`)).status, 200);
    // The server looks every second: it is gone within a few.
    const deadline = Date.now() + 30_000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      status = (await call(server.url, 'GET', `/commands/${id}?wait=100ms`)).status;
      if (status === 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.is(status, 404);
    assert.is((await call(server.url, 'GET', `/commands/${keep}`)).body.status, 'PENDING');
    await server.proc.kill('SIGTERM');
  });

  suites.push(overHttp);
}

runSuites(test, ...suites);
