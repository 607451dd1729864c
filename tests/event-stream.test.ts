// The event streams: GET /events (every transition, filters, resume after
// Last-Event-ID or ?since=, `reset` when the records are gone, keepalive
// comments, a slow reader cut off) and GET /commands/:id/events?follow=1
// (one command until it is final). In-process servers, loopback only, on the
// file store and on PostgreSQL (support/stores.ts).
import net from 'node:net';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  call,
  claimOne,
  cleanup,
  closeAll,
  finish,
  submit,
  type TestServer,
} from './support/server-harness.ts';
import { runSuites, STORES } from './support/stores.ts';
import type { ServerContext } from '../lib/server/context.ts';
import { BURST } from '../lib/server/sse.ts';
import { parseFrame, SseReader, type SseFrame } from './support/sse.ts';

const after = async (): Promise<void> => {
  await closeAll();
  await cleanup();
};

const data = (f: SseFrame | undefined): any => JSON.parse(f!.data);

/** Claim, start and finish the next PENDING command as `agent`. */
async function runOne(url: string, agent = 'agent-a', outcome: 'COMPLETED' | 'FAILED' = 'COMPLETED'): Promise<string> {
  const { id, lease } = await claimOne(url, agent);
  assert.is((await finish(url, agent, [{ id, lease, outcome, result: { ok: true } }])).status, 200);
  return id;
}

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  // --- GET /events --------------------------------------------------------------

  const all = suite(store.label('GET /events'));
  let s: TestServer<ServerContext>;
  all.before(async () => {
    s = await store.startServer();
  });
  all.after(after);

  all('streams every transition as it is journaled: id is the seq, event the FSM event, data the view', async () => {
    const r = await SseReader.open(`${s.url}/events`);
    assert.is(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/);
    const first = s.keel.ctx.store.lastSeq;
    const id = await submit(s.url);
    await runOne(s.url);
    const got = await r.take(3);
    r.close();
    assert.equal(got.map((f) => f.event), ['submit', 'claim-start', 'finish']);
    assert.equal(got.map((f) => Number(f.id)), [first + 1, first + 2, first + 3]);
    assert.equal(got.map((f) => data(f).status), ['PENDING', 'RUNNING', 'COMPLETED']);
    assert.equal(got.map((f) => data(f).state), ['PENDING', 'RUNNING', 'COMPLETED']);
    assert.ok(got.every((f) => data(f).id === id));
    assert.equal(data(got[2]).result, { ok: true });
  });

  all('?type= and ?status= filter; several values are comma-separated', async () => {
    const byStatus = await SseReader.open(`${s.url}/events?status=COMPLETED,FAILED`);
    const byType = await SseReader.open(`${s.url}/events?type=HTTP_GET_JSON`);
    const delay = await submit(s.url);
    const http = await submit(s.url, { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/x' } });
    await runOne(s.url);
    await runOne(s.url, 'agent-a', 'FAILED');
    const finals = await byStatus.take(2);
    assert.equal(finals.map((f) => [data(f).id, data(f).status]), [[delay, 'COMPLETED'], [http, 'FAILED']]);
    const https = await byType.take(3);
    assert.equal(https.map((f) => f.event), ['submit', 'claim-start', 'finish']);
    assert.ok(https.every((f) => data(f).id === http));
    byStatus.close();
    byType.close();
  });

  all('Last-Event-ID (or ?since=) replays what came after it, then follows live, without a gap', async () => {
    const r = await SseReader.open(`${s.url}/events`);
    await submit(s.url);
    const [seen] = await r.take(1);
    r.close();
    // Meanwhile, with nobody listening:
    const missed = await submit(s.url);
    await call(s.url, 'POST', `/commands/${missed}/cancel`);
    const resumed = [
      await SseReader.open(`${s.url}/events`, { 'last-event-id': seen!.id! }),
      await SseReader.open(`${s.url}/events?since=${seen!.id}`),
    ];
    const live = await submit(s.url);
    for (const r of resumed) {
      const got = await r.take(3);
      assert.equal(got.map((f) => Number(f.id)), [1, 2, 3].map((n) => Number(seen!.id) + n));
      assert.equal(got.map((f) => [f.event, data(f).id]), [['submit', missed], ['cancel', missed], ['submit', live]]);
      // Each as it was then: the submit still PENDING, though the command is FAILED by now.
      assert.equal(got.map((f) => data(f).status), ['PENDING', 'FAILED', 'PENDING']);
      r.close();
    }
  });

  all('a resume point past the last seq gets `reset` first, with the current seq as its id', async () => {
    const last = s.keel.ctx.events.lastSeq;
    const r = await SseReader.open(`${s.url}/events?since=${last + 1000}`);
    const [reset] = await r.take(1);
    assert.is(reset!.event, 'reset');
    assert.is(Number(reset!.id), last);
    assert.is(data(reset).reason, 'gone');
    const id = await submit(s.url);
    const [next] = await r.take(1);
    assert.equal([next!.event, data(next).id, Number(next!.id)], ['submit', id, last + 1]);
    r.close();
  });

  all('bad filters and resume points are 400s naming the parameter, and open no stream', async () => {
    for (const [query, headers, field] of [
      ['?type=SLEEP', {}, 'type'],
      ['?type=DELAY,', {}, 'type'],
      ['?status=ASSIGNED', {}, 'status'],
      ['?status=done', {}, 'status'],
      ['?since=-1', {}, 'since'],
      ['?since=abc', {}, 'since'],
      ['', { 'last-event-id': '12x' }, 'Last-Event-ID'],
      ['?follow=1', {}, 'follow'],
    ] as Array<[string, Record<string, string>, string]>) {
      const r = await call(s.url, 'GET', `/events${query}`, undefined, headers);
      assert.is(r.status, 400, `${query} ${JSON.stringify(headers)}: ${r.text}`);
      assert.is(r.body.field, field, query);
      assert.type(r.body.error, 'string');
    }
    assert.is((await call(s.url, 'POST', '/events')).status, 405);
  });

  // --- GET /commands/:id/events?follow=1 ------------------------------------------

  const one = suite(store.label('GET /commands/:id/events?follow=1'));
  one.before(async () => {
    s = await store.startServer();
  });
  one.after(after);

  one('streams the command\'s transitions oldest first, follows live, and ends once it is final', async () => {
    const id = await submit(s.url);
    const r = await SseReader.open(`${s.url}/commands/${id}/events?follow=1`);
    assert.is(r.status, 200);
    const [first] = await r.take(1);
    assert.equal([first!.id, first!.event, data(first).to], ['1', 'submit', 'PENDING']);
    await runOne(s.url);
    const rest = await r.take(10);
    await r.untilEnd();
    assert.equal(rest.map((f) => [f.id, f.event, data(f).from, data(f).to]), [
      ['2', 'claim-start', 'PENDING', 'RUNNING'],
      ['3', 'finish', 'RUNNING', 'COMPLETED'],
    ]);
    // The same events as the JSON answer without follow.
    const json = await call(s.url, 'GET', `/commands/${id}/events`);
    assert.equal([first, ...rest].map((f) => data(f)), json.body.events);
  });

  one('a final command: its whole history, then the end; resumed past its end, 204 (an EventSource stops)', async () => {
    const id = await submit(s.url);
    await call(s.url, 'POST', `/commands/${id}/cancel`);
    const r = await SseReader.open(`${s.url}/commands/${id}/events?follow=1`);
    const got = await r.take(10);
    await r.untilEnd();
    assert.equal(got.map((f) => f.event), ['submit', 'cancel']);
    const resumed = await SseReader.open(`${s.url}/commands/${id}/events?follow=1&since=1`);
    assert.equal((await resumed.take(10)).map((f) => f.event), ['cancel']);
    const done = await call(s.url, 'GET', `/commands/${id}/events?follow=1`, undefined, { 'last-event-id': '2' });
    assert.is(done.status, 204);
  });

  one('unknown id or not an id 404, bad parameters 400', async () => {
    const id = await submit(s.url);
    for (const p of ['/commands/00000000-0000-4000-8000-000000000000/events?follow=1', '/commands/nope/events?follow=1']) {
      const unknown = await call(s.url, 'GET', p);
      assert.is(unknown.status, 404, `${p}: ${unknown.text}`);
      assert.is(unknown.body.field, 'id');
    }
    for (const [p, field] of [
      [`/commands/${id}/events?follow=yes`, 'follow'],
      [`/commands/${id}/events?since=1`, 'since'],
      [`/commands/${id}/events?follow=1&since=x`, 'since'],
      [`/commands/${id}/events?status=PENDING`, 'status'],
    ]) {
      const r = await call(s.url, 'GET', p!);
      assert.is(r.status, 400, `${p}: ${r.text}`);
      assert.is(r.body.field, field, p);
    }
  });

  // --- bounds, keepalive, auth, shutdown ------------------------------------------

  const bounds = suite(store.label('stream bounds'));
  bounds.after(after);

  bounds('resuming from before the ring\'s oldest record: `reset` first, then live', async () => {
    const own = await store.startServer({ eventRing: { events: 3, bytes: 1 << 20 } });
    const from = own.keel.ctx.events.lastSeq;
    // A live stream sees each transition once the ring has it: on PostgreSQL
    // they arrive through the event feed, after the submits are answered.
    const live = await SseReader.open(`${own.url}/events`);
    for (let i = 0; i < 5; i++) await submit(own.url);
    assert.equal((await live.take(5)).map((f) => Number(f.id)), [1, 2, 3, 4, 5].map((i) => from + i));
    live.close();
    assert.is(own.keel.ctx.events.held, 3);
    // The ring holds from+3..from+5: after from+2 is still whole, after from+1 is not.
    const whole = await SseReader.open(`${own.url}/events?since=${from + 2}`);
    assert.equal((await whole.take(3)).map((f) => Number(f.id)), [from + 3, from + 4, from + 5]);
    whole.close();
    const r = await SseReader.open(`${own.url}/events?since=${from + 1}`);
    const [reset] = await r.take(1);
    assert.equal([reset!.event, Number(reset!.id), data(reset).reason], ['reset', from + 5, 'gone']);
    await submit(own.url);
    const [next] = await r.take(1);
    assert.equal([next!.event, Number(next!.id)], ['submit', from + 6]);
    r.close();
  });

  bounds('the ring keeps at most its byte bound', async () => {
    const own = await store.startServer({ eventRing: { events: 1000, bytes: 4000 } });
    for (let i = 0; i < 20; i++) await submit(own.url);
    assert.ok(own.keel.ctx.events.held < 20, `held ${own.keel.ctx.events.held}`);
    assert.ok(own.keel.ctx.events.held >= 4000 / 1000, `held ${own.keel.ctx.events.held}`);
  });

  bounds('an idle stream gets a comment line every keepalive interval', async () => {
    const own = await store.startServer({ streamKeepaliveMs: 50 });
    const r = await SseReader.open(`${own.url}/events`);
    await r.until((f) => f.comment === 'keepalive', 10_000, 'keepalive comment');
    assert.ok(r.frames.every((f) => f.comment === 'keepalive'), 'an idle stream sent an event');
    r.close();
  });

  bounds('a reader that stops reading is cut off with a final `reset`; what the server queues for it stays bounded', async () => {
    const bufferBytes = 64 * 1024;
    const own = await store.startServer({ streamBufferBytes: bufferBytes, streamStallMs: 200 });
    const socket = net.connect(own.port, '127.0.0.1');
    // HTTP/1.0: no chunked framing to take apart, the body ends when the socket does.
    socket.write('GET /events HTTP/1.0\r\n\r\n');
    let text = '';
    socket.on('data', (d) => (text += d));
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.pause(); // from now on the kernel buffers fill, then node's

    // Long URLs make big frames. Submit until the server says it cut the stream.
    const url = `http://127.0.0.1:9/${'x'.repeat(1900)}`;
    const cut = own.logs.waitFor((l) => l.msg === 'event stream cut off', 120_000, 'cut-off');
    let submitted = 0;
    let done = false;
    void cut.then(() => (done = true), () => (done = true));
    while (!done && submitted < 40_000) {
      await Promise.all(Array.from({ length: 50 }, () => submit(own.url, { type: 'HTTP_GET_JSON', payload: { url } })));
      submitted += 50;
    }
    const line = await cut;
    assert.ok((line.bufferBytes as number) <= BURST * bufferBytes, `queued ${String(line.bufferBytes)} bytes`);
    assert.is(own.keel.ctx.streams.open.size, 0, 'the cut-off stream is still subscribed');

    // The reader wakes up: everything queued arrives, ending in `reset`, and the server closes.
    socket.resume();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    const frames = body.split('\n\n').filter((b) => /^(id|event):/m.test(b)).flatMap(parseFrame);
    const last = frames[frames.length - 1]!;
    assert.is(last.event, 'reset');
    assert.is(JSON.parse(last.data).reason, 'behind');
    const ids = frames.slice(0, -1).map((f) => Number(f.id));
    const gap = ids.findIndex((x, i) => i > 0 && x !== ids[i - 1]! + 1);
    assert.is(gap, -1, `the frames before the reset have a gap: ${ids.slice(Math.max(0, gap - 3), gap + 3).join(' ')}`);
    assert.ok(Number(last.id) > ids[ids.length - 1]!, 'the reset id is not past what was delivered');
    const metrics = await call(own.url, 'GET', '/metrics');
    assert.match(metrics.text, /^keel_event_streams_cut_off_total 1$/m);
  });

  bounds('a burst past the buffer bound, to a reader that keeps reading, is delivered whole', async () => {
    // One group commit of 400 submits is ~220 KB of frames in one tick: over
    // the 64 KiB bound, under 8x it, and drained long before the stall limit.
    const own = await store.startServer({ streamBufferBytes: 64 * 1024, streamStallMs: 60_000 });
    const r = await SseReader.open(`${own.url}/events`);
    const batch = await call(own.url, 'POST', '/commands/batch', { commands: Array.from({ length: 400 }, () => ({ type: 'DELAY', payload: { ms: 1 } })) });
    assert.is(batch.status, 201, batch.text);
    const got = await r.take(400, 30_000);
    r.close();
    assert.equal(got.map((f) => f.event), Array(400).fill('submit'));
    assert.equal(got.map((f) => data(f).id), batch.body.commandIds);
    assert.is(own.keel.ctx.streams.cutOff, 0);
  });

  bounds('streams need the token like every other route', async () => {
    const own = await store.startServer({ token: 's3cret' });
    const id = await submit(own.url, undefined, { authorization: 'Bearer s3cret' });
    for (const p of ['/events', `/commands/${id}/events?follow=1`]) {
      const none = await call(own.url, 'GET', p);
      assert.is(none.status, 401, p);
      const wrong = await call(own.url, 'GET', p, undefined, { authorization: 'Bearer nope' });
      assert.is(wrong.status, 401, p);
      const r = await SseReader.open(own.url + p, { authorization: 'Bearer s3cret' });
      assert.is(r.status, 200, p);
      r.close();
    }
  });

  bounds('closing the server ends its open streams', async () => {
    const own = await store.startServer();
    const r = await SseReader.open(`${own.url}/events`);
    const id = await submit(own.url);
    const f = await SseReader.open(`${own.url}/commands/${id}/events?follow=1`);
    await f.take(1);
    assert.is(own.keel.ctx.streams.open.size, 2);
    await own.close();
    await r.untilEnd();
    await f.untilEnd();
  });

  suites.push(all, one, bounds);
}

runSuites(...suites);
