// GET / and GET /dashboard/NAME: the dashboard's files straight from the
// repo, open without a token (they hold no data), nothing else reachable.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call, cleanup, closeAll, rawRequest, startTestServer, type TestServer } from './support/server-harness.ts';

const test = suite('dashboard files');
let s: TestServer;
test.before(async () => {
  s = await startTestServer({ token: 'secret' });
});
test.after(async () => {
  await closeAll();
  await cleanup();
});

test('GET / is the page, with a policy that lets it load only from this server; no token needed', async () => {
  const r = await call(s.url, 'GET', '/');
  assert.is(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(r.text, /<script type="module" src="\/dashboard\/app\.js"><\/script>/);
  const csp = r.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.is(r.headers.get('x-content-type-options'), 'nosniff');
});

test('every file the page names is served with its type', async () => {
  const page = (await call(s.url, 'GET', '/')).text;
  const app = (await call(s.url, 'GET', '/dashboard/app.js')).text;
  const names = new Set([
    ...[...page.matchAll(/"\/dashboard\/([a-z.-]+)"/g)].map((m) => m[1]!),
    ...[...app.matchAll(/from '\.\/([a-z.-]+)'/g)].map((m) => m[1]!),
  ]);
  assert.ok(names.size >= 8, [...names].join(' '));
  const types: Record<string, RegExp> = { js: /^text\/javascript/, css: /^text\/css/, svg: /^image\/svg\+xml/ };
  for (const name of names) {
    const r = await call(s.url, 'GET', `/dashboard/${name}`);
    assert.is(r.status, 200, name);
    assert.match(r.headers.get('content-type') ?? '', types[name.split('.').pop()!]!, name);
  }
});

test('unknown files and paths outside the folder are 404s; the data routes still want the token', async () => {
  for (const p of ['/dashboard/nope.js', '/dashboard/index.html', '/dashboard/..%2Fapp.ts', '/dashboard/.hidden.js', '/dashboard/APP.JS']) {
    const r = await call(s.url, 'GET', p);
    assert.is(r.status, 404, p);
    assert.is(r.body.field, 'path', p);
  }
  const traversal = await rawRequest(s.port, 'GET /dashboard/../../server.ts HTTP/1.1\r\nHost: x\r\n\r\n', 5000, { endAfterResponse: true });
  assert.ok(traversal.status === 404 || traversal.status === 401, traversal.text);
  assert.not.match(traversal.text, /startServer/);
  assert.is((await call(s.url, 'POST', '/')).status, 405);
  assert.is((await call(s.url, 'GET', '/events')).status, 401);
});

test.run();
