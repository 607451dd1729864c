// The two executors, called directly against a local target server on
// 127.0.0.1: what each kind of answer (or no answer) turns into.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpGetJsonResult } from '../lib/protocol.ts';
import { runDelay } from '../lib/agent/executors/delay.ts';
import { momentFromWall } from '../lib/clock.ts';
import { MAX_REDIRECTS, runHttpGetJson, type HttpGetOptions } from '../lib/agent/executors/http-get-json.ts';
import { BIG_BYTES, refusedPort, startTarget, type Target } from './fixtures/agent-target.ts';

const opts: HttpGetOptions = { timeoutMs: 2000, maxBodyBytes: 64 * 1024 };
const live = () => new AbortController().signal;

// --- DELAY ------------------------------------------------------------------

const delay = suite('DELAY');

delay('waits ms and reports tookMs measured from startedAt', async () => {
  const startedAt = Date.now();
  const r = await runDelay({ ms: 120 }, momentFromWall(startedAt), live());
  assert.ok(r.ok);
  assert.ok(r.tookMs >= 120, `tookMs ${r.tookMs}`);
  assert.ok(Date.now() - startedAt >= 120);
});

delay('a resumed DELAY keeps its original deadline', async () => {
  const startedAt = Date.now() - 400; // began before a "crash"
  const t0 = Date.now();
  const r = await runDelay({ ms: 500 }, momentFromWall(startedAt), live());
  const waited = Date.now() - t0;
  assert.ok(r.tookMs >= 500, `tookMs ${r.tookMs}`);
  assert.ok(waited < 400, `waited ${waited} ms; only ~100 ms were left`);
});

delay('a DELAY past its deadline returns at once with the true tookMs', async () => {
  const r = await runDelay({ ms: 100 }, momentFromWall(Date.now() - 5000), live());
  assert.ok(r.tookMs >= 5000);
});

delay('abort rejects with the signal reason', async () => {
  const ctl = new AbortController();
  const reason = new Error('canceled by test');
  const p = runDelay({ ms: 10_000 }, momentFromWall(Date.now()), ctl.signal);
  setImmediate(() => ctl.abort(reason));
  try {
    await p;
    assert.unreachable('should have rejected');
  } catch (err) {
    assert.is(err, reason);
  }
});

delay.run();

// --- HTTP_GET_JSON -------------------------------------------------------------

const http = suite('HTTP_GET_JSON');
let target: Target;

http.before(async () => {
  target = await startTarget();
});
http.after(async () => {
  await target.close();
});

const get = (path: string, o: HttpGetOptions = opts, signal = live()) => runHttpGetJson({ url: target.url + path }, o, signal);
const resultOf = (e: { result: unknown }) => e.result as HttpGetJsonResult;

http('JSON body is parsed', async () => {
  const e = await get('/json');
  assert.is(e.outcome, 'COMPLETED');
  assert.equal(resultOf(e), { status: 200, body: { hello: 'world', n: 42 }, truncated: false, bytesReturned: JSON.stringify({ hello: 'world', n: 42 }).length, error: null });
});

http('a body past the cap is truncated to a string snippet', async () => {
  const e = await get('/big', { ...opts, maxBodyBytes: 1000 });
  const r = resultOf(e);
  assert.is(e.outcome, 'COMPLETED');
  assert.is(r.status, 200);
  assert.ok(r.truncated);
  assert.is(r.bytesReturned, 1000);
  assert.type(r.body, 'string');
  assert.ok((r.body as string).startsWith('{"blob":"xxx'));
});

http('a big body under the cap is read whole', async () => {
  const e = await get('/big', { ...opts, maxBodyBytes: 1024 * 1024 });
  const r = resultOf(e);
  assert.not.ok(r.truncated);
  assert.is(r.bytesReturned, BIG_BYTES + '{"blob":""}'.length);
  assert.is((r.body as { blob: string }).blob.length, BIG_BYTES);
});

http('non-JSON body completes with the text', async () => {
  const e = await get('/text');
  assert.is(e.outcome, 'COMPLETED');
  assert.equal(resultOf(e), { status: 200, body: 'plain words, not JSON', truncated: false, bytesReturned: 21, error: null });
});

http('empty body: body null', async () => {
  const r = resultOf(await get('/empty'));
  assert.is(r.status, 204);
  assert.is(r.body, null);
});

http('404 completes the command with its status and body', async () => {
  const e = await get('/missing');
  assert.is(e.outcome, 'COMPLETED');
  assert.is(e.error, null);
  assert.equal(resultOf(e).status, 404);
  assert.equal(resultOf(e).body, { error: 'not here' });
});

http('refused port fails with the error set', async () => {
  const port = await refusedPort();
  const e = await runHttpGetJson({ url: `http://127.0.0.1:${port}/json` }, opts, live());
  assert.is(e.outcome, 'FAILED');
  assert.match(e.error!, /^ECONNREFUSED/);
  assert.equal(resultOf(e), { status: null, body: null, truncated: false, bytesReturned: 0, error: e.error });
});

http('no response within the timeout fails the command', async () => {
  const t0 = Date.now();
  const e = await get('/slow', { ...opts, timeoutMs: 300 });
  assert.is(e.outcome, 'FAILED');
  assert.match(e.error!, /^TIMEOUT/);
  assert.ok(Date.now() - t0 < 2000);
});

http('a body that stalls past the timeout completes with what arrived', async () => {
  const e = await get('/slow-body', { ...opts, timeoutMs: 300 });
  const r = resultOf(e);
  assert.is(e.outcome, 'COMPLETED');
  assert.is(r.status, 200);
  assert.ok(r.truncated);
  assert.is(r.body, '{"partial":');
  assert.match(r.error!, /^TIMEOUT/);
});

http('redirects are followed', async () => {
  const e = await get(`/redirect/${MAX_REDIRECTS}`);
  assert.is(resultOf(e).status, 200);
  assert.equal(resultOf(e).body, { hello: 'world', n: 42 });
  assert.is(target.hits('/redirect/1'), 1);
});

http('past the redirect limit the last response is the result', async () => {
  const before = target.hits('/json');
  const e = await get(`/redirect/${MAX_REDIRECTS + 1}`);
  assert.is(e.outcome, 'COMPLETED');
  assert.is(resultOf(e).status, 302);
  assert.match(resultOf(e).error!, /^TOO_MANY_REDIRECTS/);
  assert.is(target.hits('/json'), before, 'the chain was not followed to its end');
});

http('only http and https', async () => {
  const e = await runHttpGetJson({ url: 'file:///etc/passwd' }, opts, live());
  assert.is(e.outcome, 'FAILED');
  assert.match(e.error!, /^BAD_URL/);
});

http('abort rejects with the signal reason and cuts the request', async () => {
  const ctl = new AbortController();
  const reason = new Error('lease lost');
  const p = get('/slow?abort', { ...opts, timeoutMs: 10_000 }, ctl.signal);
  await target.seen('/slow?abort');
  ctl.abort(reason);
  try {
    await p;
    assert.unreachable('should have rejected');
  } catch (err) {
    assert.is(err, reason);
  }
});

http.run();
