// The client API endpoint by endpoint, and every way a request is refused:
// what each answers, that a refusal is a 4xx JSON naming the field, and that
// nothing refused reaches the store. Each suite runs on the file store and on
// PostgreSQL (support/stores.ts); that an answer waits for fdatasync is the
// file store's own. In-process servers, loopback only.
import fs from 'node:fs';
import http from 'node:http';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  call,
  claimOne,
  cleanup,
  closeAll,
  getCommand,
  rawJson,
  rawRequest,
  finish,
  journalBytes,
  startTestServer,
  submit,
  UUID_RE,
  waitUntil,
  type TestServer,
} from './support/server-harness.ts';
import { onDisk, runSuites, stored, STORES } from './support/stores.ts';
import type { ServerContext } from '../lib/server/context.ts';

// The bad requests of the refusals suite (below, on each store).
const ID0 = '00000000-0000-4000-8000-000000000000';
// [what, method, path, body (string: sent raw), status, field]
const ROWS: Array<[string, string, string, unknown, number, string | undefined]> = [
  ['empty body', 'POST', '/commands', '', 400, 'body'],
  ['invalid JSON', 'POST', '/commands', '{"type":"DELAY",', 400, 'body'],
  ['array body', 'POST', '/commands', '[]', 400, 'body'],
  ['number body', 'POST', '/commands', '42', 400, 'body'],
  ['null body', 'POST', '/commands', 'null', 400, 'body'],
  ['deeply nested JSON', 'POST', '/commands', '['.repeat(30_000) + ']'.repeat(30_000), 400, 'body'],
  ['missing type', 'POST', '/commands', { payload: { ms: 1 } }, 400, 'type'],
  ['unknown type', 'POST', '/commands', { type: 'SHELL', payload: {} }, 400, 'type'],
  ['type in lower case', 'POST', '/commands', { type: 'delay', payload: { ms: 1 } }, 400, 'type'],
  ['type not a string', 'POST', '/commands', { type: 7, payload: { ms: 1 } }, 400, 'type'],
  ['unknown top-level field', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, owner: 1 }, 400, 'owner'],
  ['retry.attempts 0', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, retry: { attempts: 0 } }, 400, 'retry.attempts'],
  ['retry.attempts 101', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, retry: { attempts: 101 } }, 400, 'retry.attempts'],
  ['retry without attempts', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, retry: { backoff: 'fixed' } }, 400, 'retry.attempts'],
  ['unknown backoff', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, retry: { attempts: 3, backoff: 'linear' } }, 400, 'retry.backoff'],
  ['retry.delay not a duration', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, retry: { attempts: 3, delay: 'soon' } }, 400, 'retry.delay'],
  ['runAt not a time', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, runAt: 'tomorrow' }, 400, 'runAt'],
  ['runAt a number', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, runAt: 1790000000000 }, 400, 'runAt'],
  ['both runAt and delay', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, runAt: '2030-01-01T00:00:00Z', delay: '1s' }, 400, 'delay'],
  ['delay not a duration', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, delay: '-5s' }, 400, 'delay'],
  ['priority not an integer', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, priority: 1.5 }, 400, 'priority'],
  ['priority out of range', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, priority: 101 }, 400, 'priority'],
  ['timeout zero', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, timeout: '0s' }, 400, 'timeout'],
  ['expectStatus not a class', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:1/', expectStatus: '2xxx' } }, 400, 'payload.expectStatus'],
  ['expectStatus code out of range', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:1/', expectStatus: [200, 999] } }, 400, 'payload.expectStatus'],
  ['expectStatus on DELAY', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1, expectStatus: '2xx' } }, 400, 'payload.expectStatus'],
  ['__proto__ field', 'POST', '/commands', '{"type":"DELAY","payload":{"ms":1},"__proto__":{"x":1}}', 400, '__proto__'],
  ['missing payload', 'POST', '/commands', { type: 'DELAY' }, 400, 'payload'],
  ['payload not an object', 'POST', '/commands', { type: 'DELAY', payload: [5] }, 400, 'payload'],
  ['unknown payload field', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1, jitter: 2 } }, 400, 'payload.jitter'],
  ['DELAY without ms', 'POST', '/commands', { type: 'DELAY', payload: {} }, 400, 'payload.ms'],
  ['DELAY ms a string', 'POST', '/commands', { type: 'DELAY', payload: { ms: '10' } }, 400, 'payload.ms'],
  ['DELAY ms fractional', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1.5 } }, 400, 'payload.ms'],
  ['DELAY ms negative', 'POST', '/commands', { type: 'DELAY', payload: { ms: -1 } }, 400, 'payload.ms'],
  ['DELAY ms over 24h', 'POST', '/commands', { type: 'DELAY', payload: { ms: 24 * 60 * 60 * 1000 + 1 } }, 400, 'payload.ms'],
  ['DELAY ms huge', 'POST', '/commands', '{"type":"DELAY","payload":{"ms":1e400}}', 400, 'payload.ms'],
  ['DELAY with a url', 'POST', '/commands', { type: 'DELAY', payload: { url: 'http://x/' } }, 400, 'payload.url'],
  ['HTTP_GET_JSON without url', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: {} }, 400, 'payload.url'],
  ['url relative', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: '/status' } }, 400, 'payload.url'],
  ['url without scheme', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'example.com/x' } }, 400, 'payload.url'],
  ['url ftp', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'ftp://example.com/x' } }, 400, 'payload.url'],
  ['url file', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'file:///etc/passwd' } }, 400, 'payload.url'],
  ['url javascript', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'javascript:alert(1)' } }, 400, 'payload.url'],
  ['url empty', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: '' } }, 400, 'payload.url'],
  ['url not a string', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 5 } }, 400, 'payload.url'],
  ['url too long', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: `http://x/${'a'.repeat(3000)}` } }, 400, 'payload.url'],
  // agent routes
  ['claim without agentId', 'POST', '/agent/claim', {}, 400, 'agentId'],
  ['claim agentId with a slash', 'POST', '/agent/claim', { agentId: 'a/b' }, 400, 'agentId'],
  ['claim max 0', 'POST', '/agent/claim', { agentId: 'a', max: 0 }, 400, 'max'],
  ['claim waitMs negative', 'POST', '/agent/claim', { agentId: 'a', waitMs: -5 }, 400, 'waitMs'],
  ['claim waitMs over 120s', 'POST', '/agent/claim', { agentId: 'a', waitMs: 120_001 }, 400, 'waitMs'],
  ['claim unknown field', 'POST', '/agent/claim', { agentId: 'a', greedy: true }, 400, 'greedy'],
  ['start without items', 'POST', '/agent/start', { agentId: 'a' }, 400, 'items'],
  ['start with no items', 'POST', '/agent/start', { agentId: 'a', items: [] }, 400, 'items'],
  ['start item not an object', 'POST', '/agent/start', { agentId: 'a', items: [5] }, 400, 'items[0]'],
  ['start item id not an id', 'POST', '/agent/start', { agentId: 'a', items: [{ id: 'x', lease: 1 }] }, 400, 'items[0].id'],
  ['start lease 0', 'POST', '/agent/start', { agentId: 'a', items: [{ id: ID0, lease: 0 }] }, 400, 'items[0].lease'],
  ['start lease a string', 'POST', '/agent/start', { agentId: 'a', items: [{ id: ID0, lease: '1' }] }, 400, 'items[0].lease'],
  ['finish bad outcome', 'POST', '/agent/finish', { agentId: 'a', items: [{ id: ID0, lease: 1, outcome: 'DONE' }] }, 400, 'items[0].outcome'],
  ['finish error a number', 'POST', '/agent/finish', { agentId: 'a', items: [{ id: ID0, lease: 1, outcome: 'FAILED', error: 5 }] }, 400, 'items[0].error'],
  ['finish unknown item field', 'POST', '/agent/finish', { agentId: 'a', items: [{ id: ID0, lease: 1, outcome: 'FAILED', why: 1 }] }, 400, 'items[0].why'],
  ['release second item bad', 'POST', '/agent/release', { agentId: 'a', items: [{ id: ID0, lease: 1 }, { id: ID0 }] }, 400, 'items[1].lease'],
  ['heartbeat leases not an array', 'POST', '/agent/heartbeat', { agentId: 'a', leases: {} }, 400, 'leases'],
  ['heartbeat lease bad id', 'POST', '/agent/heartbeat', { agentId: 'a', leases: [{ id: 'zz', lease: 1 }] }, 400, 'leases[0].id'],
  ['agent body not JSON', 'POST', '/agent/heartbeat', 'agentId=a', 400, 'body'],
];

const suites: Array<Test<any>> = [];

for (const store of STORES) {
  let s: TestServer<ServerContext>;
  const lastSeq = (): number => s.keel.ctx.store.lastSeq;

  const before = async (): Promise<void> => {
    s = await store.startServer();
  };
  const after = async (): Promise<void> => {
    await closeAll();
    await cleanup();
  };

  // --- POST /commands ---------------------------------------------------------

  const post = suite(store.label('POST /commands'));
  post.before(before);
  post.after(after);

  post('201 with a commandId, and the record is on disk when the answer arrives', async () => {
    const r = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 5 } });
    assert.is(r.status, 201);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    assert.match(r.body.commandId, UUID_RE);
    assert.ok(await onDisk(s, r.body.commandId), 'the submit is not in the journal file or the database');
  });

  post('both command types are accepted, DELAY at both ends of its range', async () => {
    for (const body of [
      { type: 'DELAY', payload: { ms: 0 } },
      { type: 'DELAY', payload: { ms: 24 * 60 * 60 * 1000 } },
      { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/x' } },
      { type: 'HTTP_GET_JSON', payload: { url: 'https://example.com/a?b=c' } },
    ]) {
      const r = await call(s.url, 'POST', '/commands', body);
      assert.is(r.status, 201, `${JSON.stringify(body)}: ${r.text}`);
      const cmd = await getCommand(s.url, r.body.commandId);
      assert.equal({ type: cmd.type, payload: cmd.payload }, body);
    }
  });

  post('plain curl is enough: a form content type (curl -d) or none at all is still read as JSON', async () => {
    for (const headers of [{ 'content-type': 'application/x-www-form-urlencoded' }, { 'content-type': 'text/plain' }]) {
      const r = await call(s.url, 'POST', '/commands', '{"type":"DELAY","payload":{"ms":3}}', headers);
      assert.is(r.status, 201, `${headers['content-type']}: ${r.text}`);
    }
    const bare = await rawRequest(s.port, 'POST /commands HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n{"type":"DELAY","payload":{"ms":3}}', 5000, { endAfterResponse: true });
    assert.is(bare.status, 201, bare.text);
  });

  post('Idempotency-Key: same key and body -> same id with 200, nothing new written', async () => {
    const body = { type: 'DELAY', payload: { ms: 7 } };
    const first = await call(s.url, 'POST', '/commands', body, { 'idempotency-key': 'order-17' });
    assert.is(first.status, 201);
    const seq = lastSeq();
    // Same body, other key order and spacing: still the same request.
    const again = await call(s.url, 'POST', '/commands', ' {"payload": {"ms": 7}, "type": "DELAY"} ', { 'idempotency-key': 'order-17' });
    assert.is(again.status, 200, again.text);
    assert.is(again.body.commandId, first.body.commandId);
    assert.is(lastSeq(), seq, 'a retried submit wrote a record');
  });

  post('Idempotency-Key: same key, different body -> 409 naming the key and the existing id', async () => {
    const first = await submit(s.url, { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': 'k-conflict' });
    const seq = lastSeq();
    const r = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 2 } }, { 'idempotency-key': 'k-conflict' });
    assert.is(r.status, 409, r.text);
    assert.is(r.body.field, 'Idempotency-Key');
    assert.is(r.body.commandId, first);
    assert.type(r.body.error, 'string');
    assert.is(lastSeq(), seq);
  });

  post('Idempotency-Key: concurrent first uses of one key create one command', async () => {
    const body = { type: 'DELAY', payload: { ms: 3 } };
    const replies = await Promise.all(Array.from({ length: 8 }, () => call(s.url, 'POST', '/commands', body, { 'idempotency-key': 'race-1' })));
    const ids = new Set(replies.map((r) => r.body.commandId));
    assert.is(ids.size, 1, 'one key made more than one command');
    assert.equal(replies.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 200, 200, 201]);
  });

  post('Idempotency-Key: a key that is not 1-256 visible ASCII characters is a 400', async () => {
    const seq = lastSeq();
    for (const key of ['has space', 'x'.repeat(257)]) {
      const r = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': key });
      assert.is(r.status, 400, key);
      assert.is(r.body.field, 'Idempotency-Key');
    }
    assert.is(lastSeq(), seq);
  });

  // --- GET /commands/:id --------------------------------------------------------

  const getOne = suite(store.label('GET /commands/:id'));
  getOne.before(before);
  getOne.after(after);

  getOne('shows every field of a new command', async () => {
    const id = await submit(s.url, { type: 'DELAY', payload: { ms: 42 } });
    const r = await call(s.url, 'GET', `/commands/${id}`);
    assert.is(r.status, 200);
    const v = r.body;
    assert.equal(Object.keys(v).sort(), [
      'agentId', 'attempt', 'attempts', 'cancelRequested', 'createdAt', 'error', 'id', 'nextAttemptAt', 'payload', 'priority', 'result',
      'retry', 'retryOf', 'runAt', 'state', 'status', 'timeoutMs', 'type', 'updatedAt',
    ]);
    assert.is(v.id, id);
    assert.is(v.type, 'DELAY');
    assert.equal(v.payload, { ms: 42 });
    assert.is(v.status, 'PENDING');
    assert.is(v.state, 'PENDING');
    assert.is(v.result, null);
    assert.is(v.error, null);
    assert.is(v.agentId, null);
    assert.is(v.attempt, 0);
    assert.is(v.createdAt, v.updatedAt);
    assert.ok(Math.abs(Date.parse(v.createdAt) - Date.now()) < 60_000, `createdAt ${v.createdAt} is not an ISO time near now`);
  });

  getOne('a claimed command shows RUNNING at once, with its agent and lease', async () => {
    const { url } = await store.startServer();
    const id = await submit(url);
    const { id: claimed, lease } = await claimOne(url, 'agent-view');
    assert.is(claimed, id);
    const v = await getCommand(url, id);
    assert.is(v.status, 'RUNNING');
    assert.is(v.state, 'RUNNING');
    assert.is(v.agentId, 'agent-view');
    assert.is(v.attempt, lease);
    assert.ok(Date.parse(v.updatedAt) >= Date.parse(v.createdAt));
  });

  getOne('unknown id: 404 JSON naming the id', async () => {
    const r = await call(s.url, 'GET', '/commands/00000000-0000-4000-8000-000000000000');
    assert.is(r.status, 404);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    assert.is(r.body.field, 'id');
    assert.match(r.body.error, /00000000-0000-4000-8000-000000000000/);
  });

  getOne('ids that are not ids name no command: 404 on every :id route', async () => {
    const notIds = ['abc', '12345', '00000000-0000-4000-8000-00000000000G', '00000000-0000-4000-8000-000000000000x', 'AAAAAAAA-0000-4000-8000-000000000000', '%E0%A4%A', '..%2F..%2Fetc', '%00'];
    for (const bad of notIds) {
      for (const [method, p] of [['GET', `/commands/${bad}`], ['GET', `/commands/${bad}/events`], ['POST', `/commands/${bad}/cancel`]] as const) {
        const r = await call(s.url, method, p);
        assert.is(r.status, 404, `${method} ${p}: ${r.text}`);
        assert.is(r.body.field, 'id', `${method} ${p}`);
      }
    }
  });

  getOne('?wait= on a command that does not finish returns its current view when the wait ends', async () => {
    const id = await submit(s.url);
    const t0 = Date.now();
    const r = await call(s.url, 'GET', `/commands/${id}?wait=150ms`);
    assert.is(r.status, 200);
    assert.is(r.body.status, 'PENDING');
    assert.ok(Date.now() - t0 >= 140, `answered after ${Date.now() - t0} ms, before the wait ended`);
  });

  getOne('?wait= on a final command answers at once; on an unknown id, 404 at once', async () => {
    const id = await submit(s.url);
    assert.is((await call(s.url, 'POST', `/commands/${id}/cancel`)).status, 200);
    const t0 = Date.now();
    const r = await call(s.url, 'GET', `/commands/${id}?wait=60s`);
    assert.is(r.body.status, 'FAILED');
    const missing = await call(s.url, 'GET', '/commands/00000000-0000-4000-8000-000000000001?wait=60s');
    assert.is(missing.status, 404);
    assert.ok(Date.now() - t0 < 30_000, 'a wait on a final or unknown command held the request');
  });

  getOne('?wait= that is not a duration of at most 5m: 400 naming wait', async () => {
    const id = await submit(s.url);
    for (const w of ['abc', '-1', '10m', '1h', '5s5', '']) {
      const r = await call(s.url, 'GET', `/commands/${id}?wait=${w}`);
      assert.is(r.status, 400, `wait=${w}: ${r.text}`);
      assert.is(r.body.field, 'wait');
    }
  });

  // --- GET /commands -------------------------------------------------------------

  const list = suite(store.label('GET /commands'));
  list.before(before);
  list.after(after);

  list('newest first; limit; the cursor walks every command exactly once, even while new ones arrive', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) ids.push(await submit(s.url, { type: 'DELAY', payload: { ms: i } }));
    const first = await call(s.url, 'GET', '/commands?limit=5');
    assert.is(first.status, 200);
    assert.equal(first.body.commands.map((c: { id: string }) => c.id), ids.slice(-5).reverse());

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: { status: number; body: { commands: Array<{ id: string }>; nextCursor: string | null } } = await call(
        s.url,
        'GET',
        `/commands?limit=5${cursor === null ? '' : `&cursor=${cursor}`}`,
      );
      assert.is(r.status, 200);
      assert.ok(r.body.commands.length <= 5);
      seen.push(...r.body.commands.map((c) => c.id));
      cursor = r.body.nextCursor;
      // Newer commands arriving mid-walk must not shift the pages.
      if (pages++ === 1) await submit(s.url);
    } while (cursor !== null);
    assert.equal(seen, [...ids].reverse());
    assert.is(pages, 5);
  });

  list('status filters by the shown status', async () => {
    const own = await store.startServer(); // an empty queue: the claim gets a
    const a = await submit(own.url);
    const b = await submit(own.url);
    const c = await submit(own.url);
    await claimOne(own.url, 'agent-list'); // a: RUNNING
    assert.is((await call(own.url, 'POST', `/commands/${c}/cancel`)).status, 200); // c: FAILED
    const ids = async (status: string): Promise<string[]> => (await call(own.url, 'GET', `/commands?status=${status}&limit=1000`)).body.commands.map((x: { id: string }) => x.id);
    assert.equal(await ids('PENDING'), [b]);
    assert.equal(await ids('RUNNING'), [a]);
    assert.equal(await ids('FAILED'), [c]);
    assert.equal(await ids('COMPLETED'), []);
  });

  list('a filtered walk with a small limit still covers every match exactly once', async () => {
    const other = await store.startServer();
    const want: string[] = [];
    for (let i = 0; i < 12; i++) {
      const id = await submit(other.url);
      if (i % 3 === 0) assert.is((await call(other.url, 'POST', `/commands/${id}/cancel`)).status, 200);
      else want.push(id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r: { body: { commands: Array<{ id: string; status: string }>; nextCursor: string | null } } = await call(
        other.url,
        'GET',
        `/commands?status=PENDING&limit=3${cursor === null ? '' : `&cursor=${cursor}`}`,
      );
      for (const c of r.body.commands) assert.is(c.status, 'PENDING');
      seen.push(...r.body.commands.map((c) => c.id));
      cursor = r.body.nextCursor;
    } while (cursor !== null);
    assert.equal(seen, want.reverse());
  });

  list('bad status, limit, cursor or parameter: 400 naming it', async () => {
    const rows: Array<[string, string]> = [
      ['status=ASSIGNED', 'status'],
      ['status=pending', 'status'],
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=2.5', 'limit'],
      ['limit=abc', 'limit'],
      ['limit=', 'limit'],
      ['limit=-1', 'limit'],
      ['cursor=abc', 'cursor'],
      ['cursor=-1', 'cursor'],
      ['cursor=99999999', 'cursor'],
      ['sort=asc', 'sort'],
    ];
    for (const [q, field] of rows) {
      const r = await call(s.url, 'GET', `/commands?${q}`);
      assert.is(r.status, 400, `${q}: ${r.text}`);
      assert.is(r.body.field, field, q);
    }
  });

  // --- cancel, events, agents: the unknown and the malformed (states: server-fsm) ---

  const misc = suite(store.label('cancel, events, agents, health, metrics'));
  misc.before(before);
  misc.after(after);

  misc('cancel and events of an unknown id: 404 JSON', async () => {
    for (const [method, p] of [['POST', '/commands/00000000-0000-4000-8000-000000000000/cancel'], ['GET', '/commands/00000000-0000-4000-8000-000000000000/events']] as const) {
      const r = await call(s.url, method, p);
      assert.is(r.status, 404, `${method} ${p}`);
      assert.is(r.body.field, 'id');
    }
  });

  misc('events of a new command: the submit alone', async () => {
    const id = await submit(s.url);
    const r = await call(s.url, 'GET', `/commands/${id}/events`);
    assert.is(r.status, 200);
    assert.is(r.body.id, id);
    assert.is(r.body.events.length, 1);
    assert.equal({ ...r.body.events[0], at: undefined }, { seq: 1, event: 'submit', from: null, to: 'PENDING', at: undefined });
  });

  misc('GET /agents: none before any agent speaks', async () => {
    const fresh = await store.startServer();
    const r = await call(fresh.url, 'GET', '/agents');
    assert.is(r.status, 200);
    assert.equal(r.body, { agents: [] });
  });

  misc('/healthz and /readyz answer 200; /readyz says 503 while the server is not ready', async () => {
    assert.equal((await call(s.url, 'GET', '/healthz')).body, { ok: true });
    const ready = await call(s.url, 'GET', '/readyz');
    assert.is(ready.status, 200);
    s.keel.ctx.ready = false;
    try {
      const r = await call(s.url, 'GET', '/readyz');
      assert.is(r.status, 503);
      assert.equal(r.body, { ready: false });
      assert.is((await call(s.url, 'GET', '/healthz')).status, 200, 'healthz only says the process is up');
    } finally {
      s.keel.ctx.ready = true;
    }
  });

  misc('/metrics: Prometheus text with every named series, and the numbers move', async () => {
    const fresh = await store.startServer();
    const id = await submit(fresh.url);
    await claimOne(fresh.url, 'agent-metrics');
    await call(fresh.url, 'GET', '/commands/nope');
    const r = await call(fresh.url, 'GET', '/metrics');
    assert.is(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const samples = new Map<string, number>();
    for (const line of r.text.trimEnd().split('\n')) {
      if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
      const m = /^([a-z_]+(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (-?[0-9.e+-]+)$/.exec(line);
      assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
      samples.set(m![1]!, Number(m![2]));
    }
    assert.is(samples.get('keel_commands{state="RUNNING"}'), 1);
    assert.is(samples.get('keel_commands{state="PENDING"}'), 0);
    for (const st of ['ASSIGNED', 'COMPLETED', 'FAILED']) assert.is(samples.get(`keel_commands{state="${st}"}`), 0, st);
    assert.is(samples.get('keel_transitions_total'), 2);
    if (store.name === 'file') {
      assert.ok(samples.get('keel_journal_fsyncs_total')! >= 2);
      assert.ok(samples.get('keel_journal_fsync_seconds_total')! > 0);
      assert.ok(samples.get('keel_journal_bytes')! >= journalBytes(fresh.dir));
    } else {
      assert.not.ok([...samples.keys()].some((k) => k.startsWith('keel_journal_')), 'a journal series without a journal');
    }
    assert.is(samples.get('keel_agents_online'), 1);
    assert.is(samples.get('keel_http_requests_total{route="/commands",code="201"}'), 1);
    assert.is(samples.get('keel_http_requests_total{route="/agent/claim",code="200"}'), 1);
    assert.is(samples.get('keel_http_requests_total{route="/commands/:id",code="404"}'), 1);
    assert.ok(id);
  });

  // --- refusals ---------------------------------------------------------------

  const refuse = suite(store.label('refusals'));
  refuse.before(before);
  refuse.after(after);
  refuse('each bad body: 400 JSON naming the field; nothing written', async () => {
    const seq = lastSeq();
    const before = await stored(s);
    for (const [what, method, p, body, status, field] of ROWS) {
      const r = await call(s.url, method, p, body);
      assert.is(r.status, status, `${what}: ${r.text}`);
      assert.type(r.body.error, 'string', `${what}: error message`);
      assert.is(r.body.field, field, `${what}: field (${r.text})`);
    }
    assert.is(lastSeq(), seq, 'a refused request made a transition');
    assert.is(await stored(s), before, 'a refused request reached the store');
  });

  refuse('body over 64 KiB: 413, declared or streamed, and the server carries on', async () => {
    const seq = lastSeq();
    const big = JSON.stringify({ type: 'DELAY', payload: { ms: 1 }, pad: 'x'.repeat(64 * 1024) });
    const declared = await call(s.url, 'POST', '/commands', big);
    assert.is(declared.status, 413, declared.text);
    assert.is(declared.body.field, 'body');
    // Chunked, no Content-Length: the limit is counted as the bytes arrive.
    const chunk = new TextEncoder().encode(' '.repeat(16 * 1024));
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"type":"DELAY","payload":{"ms":1}}'));
        for (let i = 0; i < 8; i++) c.enqueue(chunk);
        c.close();
      },
    });
    const streamed = await fetch(`${s.url}/commands`, { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
    assert.is(streamed.status, 413);
    // Just under the limit is fine.
    const under = JSON.stringify({ type: 'DELAY', payload: { ms: 1 } }).padEnd(64 * 1024, ' ');
    assert.is((await call(s.url, 'POST', '/commands', under)).status, 201);
    assert.is(lastSeq(), seq + 1);
    assert.is((await call(s.url, 'GET', '/healthz')).status, 200);
  });

  refuse('a 5 MB body sent in full before reading: the client reads its 413, and the connection serves the next request', async () => {
    const seq = lastSeq();
    const big = JSON.stringify({ type: 'DELAY', payload: { ms: 1 }, pad: 'x'.repeat(5 * 1024 * 1024) });
    // node:http writes the whole body before it looks at the answer: a server
    // that closes as soon as it has answered resets the connection under it.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const post = (body: string): Promise<{ status: number; text: string; socket: unknown }> =>
      new Promise((resolve, reject) => {
        const req = http.request(`${s.url}/commands`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, text, socket: req.socket }));
        });
        req.on('error', reject);
        req.end(body);
      });
    try {
      for (let i = 0; i < 3; i++) {
        const tooBig = await post(big);
        assert.is(tooBig.status, 413, tooBig.text);
        assert.is(JSON.parse(tooBig.text).field, 'body');
        const next = await post(JSON.stringify({ type: 'DELAY', payload: { ms: 1 } }));
        assert.is(next.status, 201, next.text);
        assert.is(next.socket, tooBig.socket, 'the connection was kept for the next request');
      }
    } finally {
      agent.destroy();
    }
    assert.is(lastSeq(), seq + 3, 'only the three small submits were written');
  });

  refuse('wrong method: 405 with Allow; unknown route: 404 JSON', async () => {
    const rows: Array<[string, string, string]> = [
      ['DELETE', '/commands', 'POST, GET'],
      ['PUT', `/commands/${ID0}`, 'GET'],
      ['GET', `/commands/${ID0}/cancel`, 'POST'],
      ['POST', `/commands/${ID0}/events`, 'GET'],
      ['POST', '/agents', 'GET'],
      ['GET', '/agent/claim', 'POST'],
      ['POST', '/healthz', 'GET'],
      ['POST', '/metrics', 'GET'],
      ['POST', '/', 'GET'], // the dashboard
    ];
    for (const [method, p, allow] of rows) {
      const r = await call(s.url, method, p);
      assert.is(r.status, 405, `${method} ${p}`);
      assert.is(r.headers.get('allow'), allow, `${method} ${p}`);
      assert.type(r.body.error, 'string');
    }
    for (const p of ['/command', '/commands/', `/commands/${ID0}/`, `/commands/${ID0}/rerun`, '/agent', '/agent/claim/x', '/COMMANDS']) {
      const r = await call(s.url, 'GET', p);
      assert.is(r.status, 404, p);
      assert.match(r.headers.get('content-type') ?? '', /application\/json/);
      assert.type(r.body.error, 'string');
    }
  });

  refuse('a request target that is not a URL: 400, not 500', async () => {
    const r = await rawRequest(s.port, 'GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n', 5000, { endAfterResponse: true });
    assert.is(r.status, 400, r.text);
    assert.is(rawJson(r).field, 'url');
  });

  refuse('a socket that sends half a request line is cut off by the header timeout', async () => {
    const quick = await store.startServer({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const half = await rawRequest(quick.port, 'GET /comm', 10_000);
    assert.ok(half.closedByServer, `still open after ${half.ms} ms`);
    assert.is(half.status, 408);
    const silent = await rawRequest(quick.port, '', 10_000);
    assert.ok(silent.closedByServer, 'a socket that sends nothing stays open');
    // Headers done, body never finished: the request timeout.
    const body = await rawRequest(quick.port, 'POST /commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"ty', 10_000);
    assert.ok(body.closedByServer, 'a half-sent body holds the socket');
    assert.is(body.status, 408);
    assert.is(quick.keel.ctx.store.lastSeq, 0);
    assert.not.ok(quick.logs.lines.some((l) => l.level === 'error'), 'a slow client was logged as a server error');
    assert.is((await call(quick.url, 'GET', '/healthz')).status, 200);
  });

  refuse('the default header timeout is configured and enforced by Node (10 s, checked at least every second)', async () => {
    // Not waited out here (that is 10 s): the server object carries the settings.
    assert.is(s.keel.server.headersTimeout, 10_000);
    assert.is(s.keel.server.requestTimeout, 30_000);
  });

  refuse('--max-pending: past it, 429 with Retry-After, and nothing written', async () => {
    const full = await store.startServer({ maxPending: 2 });
    const a = await submit(full.url, undefined, { 'idempotency-key': 'kept' });
    await submit(full.url);
    const seq = full.keel.ctx.store.lastSeq;
    const before = await stored(full);
    const r = await call(full.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } });
    assert.is(r.status, 429, r.text);
    assert.ok(Number(r.headers.get('retry-after')) >= 1, `Retry-After: ${r.headers.get('retry-after')}`);
    assert.type(r.body.error, 'string');
    assert.is(full.keel.ctx.store.lastSeq, seq);
    assert.is(await stored(full), before);
    // A retry of an accepted submit is not new work: still answered.
    const retry = await call(full.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 10 } }, { 'idempotency-key': 'kept' });
    assert.is(retry.status, 200, retry.text);
    assert.is(retry.body.commandId, a);
    // Invalid input is still a 400, not a 429.
    assert.is((await call(full.url, 'POST', '/commands', { type: 'NOPE' })).status, 400);
    // Once an agent takes one, there is room again.
    await claimOne(full.url, 'agent-drain');
    assert.is((await call(full.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } })).status, 201);
    assert.is((await call(full.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } })).status, 429);
  });

  refuse('no refusal above was a 5xx, and none was logged as a server error', async () => {
    const bad = s.logs.lines.filter((l) => l.level === 'error');
    assert.equal(bad, []);
    const metrics = (await call(s.url, 'GET', '/metrics')).text;
    assert.not.match(metrics, /code="5\d\d"/);
  });

  suites.push(post, getOne, list, misc, refuse);
}

// --- the file store: answers wait for fdatasync ---------------------------------

const synced = suite('answers wait for fdatasync [file store only]');
let s: TestServer;
synced.before(async () => {
  s = await startTestServer();
});
synced.after(async () => {
  await closeAll();
  await cleanup();
});

synced('the answer waits for fdatasync: an fsync held back holds back the 201', async () => {
  // fsio.ts calls fs.fdatasync through the module object, so wrapping it here
  // delays every journal fsync by 100 ms and records when each one returns.
  const order: string[] = [];
  const real = fs.fdatasync;
  (fs as { fdatasync: unknown }).fdatasync = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    order.push('fsync called');
    setTimeout(() => real(fd, (err) => (order.push('fsync returned'), cb(err))), 100);
  };
  try {
    const r = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 5 } });
    order.push(`answer ${r.status}`);
  } finally {
    (fs as { fdatasync: unknown }).fdatasync = real;
  }
  assert.equal(order, ['fsync called', 'fsync returned', 'answer 201']);
});

synced('a refusal waits for fdatasync too: a 409 never rests on a finish that is not on disk yet', async () => {
  const own = await startTestServer(); // an empty queue: the claim gets this command
  const id = await submit(own.url);
  const { lease } = await claimOne(own.url, 'agent-a');
  assert.is((await getCommand(own.url, id)).state, 'RUNNING');
  const order: string[] = [];
  const real = fs.fdatasync;
  (fs as { fdatasync: unknown }).fdatasync = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    setTimeout(() => real(fd, (err) => (order.push('fsync returned'), cb(err))), 100);
  };
  try {
    const finished = finish(own.url, 'agent-a', [{ id, lease, outcome: 'COMPLETED', result: { ok: true, tookMs: 5 } }]);
    await waitUntil(() => own.keel.ctx.store.get(id)!.state === 'COMPLETED', 5000, 'the finish to be applied');
    const canceled = call(own.url, 'POST', `/commands/${id}/cancel`).then((r) => (order.push(`cancel ${r.status}`), r));
    const [f, c] = await Promise.all([finished, canceled]);
    assert.is(f.status, 200);
    assert.is(c.status, 409);
  } finally {
    (fs as { fdatasync: unknown }).fdatasync = real;
  }
  assert.equal(order.slice(0, 2), ['fsync returned', 'cancel 409']);
});

runSuites(...suites, synced);
