// The agent's lean keep-alive client: connections are reused one request at
// a time; whatever is not a whole answer (cut, timed out, aborted, chunked,
// longer than announced) rejects, and that connection is never reused.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePort } from './support/ports.ts';
import { rejection } from './support/rejection.ts';
import { KeepAlivePool } from '../lib/agent/keepalive-pool.ts';

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

let server: http.Server;
let handler: Handler;
let connections = 0;
let pool: KeepAlivePool;

async function listen(): Promise<URL> {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => handler(req, body, res));
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/base`);
}

const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
};

const test = suite('KeepAlivePool');
test.before.each(async () => {
  connections = 0;
  const url = await listen();
  pool = new KeepAlivePool(url, { 'content-type': 'application/json', authorization: 'Bearer t' });
});
test.after.each(async () => {
  pool.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

test('requests one after another share one connection; method, path, headers and body arrive', async () => {
  const seen: string[] = [];
  handler = (req, body, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.authorization} ${req.headers['content-type']} ${body}`);
    json(res, 200, { echo: JSON.parse(body) });
  };
  for (let i = 0; i < 3; i++) {
    const a = await pool.post('/base/agent/claim', JSON.stringify({ n: i, s: 'é' }), 1000);
    assert.equal([a.status, JSON.parse(a.text)], [200, { echo: { n: i, s: 'é' } }]);
  }
  assert.is(connections, 1);
  assert.equal(seen[2], 'POST /base/agent/claim Bearer t application/json {"n":2,"s":"é"}');
});

test('requests at the same time each get a connection, and their own answer; a 4xx is an answer too', async () => {
  handler = (_req, body, res) => {
    const { n } = JSON.parse(body) as { n: number };
    setTimeout(() => json(res, n === 1 ? 409 : 200, { n }), 10 * (3 - n));
  };
  const answers = await Promise.all([0, 1, 2].map((n) => pool.post('/x', JSON.stringify({ n }), 1000)));
  assert.equal(answers.map((a) => [a.status, JSON.parse(a.text).n]), [[200, 0], [409, 1], [200, 2]]);
  assert.is(connections, 3);
  await pool.post('/x', '{"n":0}', 1000);
  assert.is(connections, 3, 'an idle one was reused');
});

test('an answer with Connection: close is read whole, and that connection is not reused', async () => {
  handler = (_req, _body, res) => json(res, 200, { ok: true }, { connection: 'close' });
  assert.is((await pool.post('/x', '{}', 1000)).status, 200);
  assert.is((await pool.post('/x', '{}', 1000)).status, 200);
  assert.is(connections, 2);
});

test('a connection the server closed while idle is not used again', async () => {
  handler = (_req, _body, res) => json(res, 200, {});
  await pool.post('/x', '{}', 1000);
  assert.is(pool.idleConnections, 1);
  server.closeIdleConnections();
  while (pool.idleConnections > 0) await new Promise((resolve) => setImmediate(resolve));
  assert.is((await pool.post('/x', '{}', 1000)).status, 200);
  assert.is(connections, 2);
});

test('an answer without a length is read until the connection closes', async () => {
  handler = (req, _body, _res) => {
    req.socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"whole":true}');
  };
  const a = await pool.post('/x', '{}', 1000);
  assert.equal([a.status, a.text], [200, '{"whole":true}']);
});

test('a chunked answer is read whole, and its connection reused', async () => {
  handler = (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"a":');
    setImmediate(() => res.end('"ü"}'));
  };
  for (let i = 0; i < 2; i++) assert.equal(JSON.parse((await pool.post('/x', '{}', 1000)).text), { a: 'ü' });
  assert.is(connections, 1);
});

test('a chunked answer with trailers and chunk extensions; a bad chunk size rejects', async () => {
  handler = (req) => req.socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\n{"a\r\n4\r\n":1}\r\n0\r\nx-trailer: t\r\n\r\n');
  assert.equal(JSON.parse((await pool.post('/x', '{}', 1000)).text), { a: 1 });
  handler = (req) => req.socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n');
  assert.match(await rejection(pool.post('/x', '{}', 1000)), /bad chunk size/);
});

test('a connection cut mid-answer rejects; the next request gets a fresh connection', async () => {
  let n = 0;
  handler = (req, _body, res) => {
    if (n++ === 0) {
      req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"part');
      req.socket.destroy();
    } else json(res, 200, { ok: true });
  };
  assert.match(await rejection(pool.post('/x', '{}', 1000)), /closed before the whole answer/);
  assert.is((await pool.post('/x', '{}', 1000)).status, 200);
  assert.is(connections, 2);
});

test('no answer in time rejects and drops the connection; an abort rejects with its reason', async () => {
  let arrived: () => void = () => {};
  handler = () => arrived();
  assert.match(await rejection(pool.post('/x', '{}', 30)), /no answer within 30 ms/);
  const ctl = new AbortController();
  const reached = new Promise<void>((resolve) => (arrived = resolve));
  const aborted = pool.post('/x', '{}', 5000, ctl.signal);
  await reached;
  ctl.abort(new Error('stopping'));
  assert.match(await rejection(aborted), /stopping/);
  assert.match(await rejection(pool.post('/x', '{}', 5000, ctl.signal)), /stopping/, 'already aborted: not sent');
  handler = (_req, _body, res) => json(res, 200, {});
  assert.is((await pool.post('/x', '{}', 1000)).status, 200);
  assert.is(connections, 3, 'the timed-out and the aborted connections were not reused');
});

test('bytes beyond the announced length: rejected, never read as the next answer', async () => {
  handler = (req) => req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n');
  assert.match(await rejection(pool.post('/x', '{}', 1000)), /longer than its content-length/);
});

test('a refused connection rejects with the system error', async () => {
  const port = await freePort();
  const lonely = new KeepAlivePool(new URL(`http://127.0.0.1:${port}`), {});
  assert.match(await rejection(lonely.post('/x', '{}', 1000)), /ECONNREFUSED/);
  lonely.close();
});

test.run();
