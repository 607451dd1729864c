// server.ts's command line and its bearer token, as a user meets them: bad
// flags end the process with exit 2, one line saying what is wrong and the
// usage; --help prints the usage; with a token (flag or KEEL_TOKEN) every
// route but /healthz and /readyz answers 401 without it.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../lib/flags.ts';
import { parseServerFlags, SERVER_USAGE } from '../lib/server/config.ts';
import { call } from './support/http.ts';
import { cleanup, Proc, startServer, tempDir, type ServerHandle } from './support/processes.ts';

const flags = suite('server flags');
flags.after(cleanup);

// [args, what the one line must say]
const BAD: Array<[string[], RegExp]> = [
  [['--bogus'], /Unknown option '--bogus'/],
  [['--port', 'abc'], /--port must be an integer from 0 to 65535; got "abc"/],
  [['--port', '70000'], /--port must be an integer from 0 to 65535/],
  [['--port'], /--port/],
  [['--lease-timeout', 'soon'], /--lease-timeout must be a duration like 250ms, 10s, 2m/],
  [['--lease-timeout', '10x'], /--lease-timeout must be a duration/],
  [['--lease-timeout', '50ms'], /--lease-timeout must be at least 100ms/],
  [['--max-pending', '0'], /--max-pending must be an integer from 1/],
  [['--max-pending', '-5'], /--max-pending/],
  [['--snapshot-bytes', '10'], /--snapshot-bytes must be an integer from 4096/],
  [['--retain', 'forever'], /--retain must be a duration/],
  [['--retain', '500ms'], /--retain must be at least 1s/],
  [['--retain-max', '0'], /--retain-max must be an integer from 1/],
  [['--repair=yes'], /--repair/],
  [['stray'], /stray/],
  [['--headers-timeout', '5s', '--request-timeout', '1s'], /--request-timeout must be at least --headers-timeout/],
  [['--store', 'mysql://db/keel'], /--store must be a postgres:\/\/ URL \(got mysql:\)/],
  [['--store', 'keel'], /--store must be a URL like postgres:\/\//],
];

flags('each bad flag is a UsageError with a one-line message naming it', () => {
  for (const [args, message] of BAD) {
    let err: unknown;
    try {
      parseServerFlags(args, {});
    } catch (e) {
      err = e;
    }
    assert.instance(err, UsageError, args.join(' '));
    const text = (err as Error).message;
    assert.match(text, message, args.join(' '));
    assert.not.match(text, /\n/, `${args.join(' ')}: more than one line`);
  }
});

// A few of them through the real entry (each is a process start, so not all).
const SPAWNED = [0, 1, 4, 11];

flags('as a process: exit 2, "error: <line>", a blank line, the usage; nothing created', async () => {
  const root = tempDir();
  const runs = SPAWNED.map((i) => {
    const dir = path.join(root, `never-${i}`);
    return { i, dir, proc: new Proc('server', ['server.ts', '--state-dir', dir, ...BAD[i]![0]]) };
  });
  for (const { i, dir, proc } of runs) {
    const [args, message] = BAD[i]!;
    const what = args.join(' ');
    const { code } = await proc.exited;
    assert.is(code, 2, `${what}: exit code (stderr: ${proc.stderr})`);
    const [line, blank, ...rest] = proc.stderr.split('\n');
    assert.match(line!, /^error: /, `${what}: ${line}`);
    assert.match(line!, message, what);
    assert.is(blank, '', `${what}: more than one line before the usage:\n${proc.stderr}`);
    assert.is(rest.join('\n'), SERVER_USAGE, `${what}: usage`);
    assert.is(proc.stdout, '', `${what}: wrote to stdout`);
    assert.not.ok(fs.existsSync(dir), `${what}: created the state directory`);
  }
});

flags('--help: the usage on stdout, exit 0, nothing started', async () => {
  const dir = path.join(tempDir(), 'never');
  const p = new Proc('server', ['server.ts', '--help', '--state-dir', dir]);
  const { code } = await p.exited;
  assert.is(code, 0);
  assert.is(p.stdout, SERVER_USAGE);
  assert.is(p.stderr, '');
  for (const flag of ['--port', '--host', '--state-dir', '--lease-timeout', '--token', '--max-pending', '--retain', '--retain-max', '--help']) {
    assert.ok(SERVER_USAGE.includes(flag), `usage does not mention ${flag}`);
  }
  assert.not.ok(fs.existsSync(dir));
});

flags('durations: 250ms, 2s, 2m and bare milliseconds; defaults as documented', async () => {
  const rows: Array<[string, number]> = [['250ms', 250], ['2s', 2000], ['2m', 120_000], ['1500', 1500]];
  for (const [d, ms] of rows) {
    const c = parseServerFlags(['--lease-timeout', d], {});
    assert.is(c === 'help' ? c : c.leaseTimeoutMs, ms, d);
  }
  const defaults = parseServerFlags([], {});
  assert.ok(defaults !== 'help');
  assert.equal(
    [defaults.port, defaults.host, defaults.stateDir, defaults.leaseTimeoutMs, defaults.token, defaults.headersTimeoutMs, defaults.requestTimeoutMs],
    [3000, '127.0.0.1', './data/server', 15_000, undefined, 10_000, 30_000],
  );
  assert.equal(defaults.retention, { ms: 7 * 86_400_000, max: 1_000_000 });
  const kept = parseServerFlags(['--retain', '2d', '--retain-max', '100000'], {});
  assert.equal(kept === 'help' ? kept : kept.retention, { ms: 2 * 86_400_000, max: 100_000 });
  // The hidden slow-client timeouts (tests shorten them) parse as durations too.
  const quick = parseServerFlags(['--headers-timeout', '300ms', '--request-timeout', '1s'], {});
  assert.equal(quick === 'help' ? quick : [quick.headersTimeoutMs, quick.requestTimeoutMs], [300, 1000]);
  assert.not.match(SERVER_USAGE, /--headers-timeout|--request-timeout/);
  // And through the process: the lease timeout is what agents are told.
  const srv = await startServer(tempDir(), ['--lease-timeout', '2s']);
  assert.is(srv.proc.lines.find((l) => l.msg === 'listening')!.leaseTimeoutMs, 2000);
  assert.is((await call(srv.url, 'POST', '/agent/claim', { agentId: 'a' })).body.leaseTimeoutMs, 2000);
  await srv.proc.kill('SIGTERM');
});

flags('--store: a postgres:// URL from the flag or KEEL_DATABASE_URL (the flag wins); none: the file store', () => {
  const none = parseServerFlags([], {});
  assert.is(none === 'help' ? none : none.store, undefined);
  const flag = parseServerFlags(['--store', 'postgres://u:p@db:5432/keel'], { KEEL_DATABASE_URL: 'postgresql://other/x' });
  assert.is(flag === 'help' ? flag : flag.store, 'postgres://u:p@db:5432/keel');
  const env = parseServerFlags([], { KEEL_DATABASE_URL: 'postgresql://other/x' });
  assert.is(env === 'help' ? env : env.store, 'postgresql://other/x');
  assert.throws(() => parseServerFlags([], { KEEL_DATABASE_URL: 'file:///tmp/x' }), /KEEL_DATABASE_URL must be a postgres:\/\/ URL/);
});

// --- token ---------------------------------------------------------------------

const auth = suite('bearer token');
auth.after(cleanup);

const ID = '00000000-0000-4000-8000-000000000000';
// Every route but the two health checks, each with a body it would accept.
const GUARDED: Array<[string, string, unknown]> = [
  ['POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }],
  ['GET', '/commands', undefined],
  ['GET', `/commands/${ID}`, undefined],
  ['POST', `/commands/${ID}/cancel`, undefined],
  ['GET', `/commands/${ID}/events`, undefined],
  ['GET', '/agents', undefined],
  ['GET', '/metrics', undefined],
  ['POST', '/agent/claim', { agentId: 'a' }],
  ['POST', '/agent/start', { agentId: 'a', items: [{ id: ID, lease: 1 }] }],
  ['POST', '/agent/finish', { agentId: 'a', items: [{ id: ID, lease: 1, outcome: 'COMPLETED', result: null }] }],
  ['POST', '/agent/release', { agentId: 'a', items: [{ id: ID, lease: 1 }] }],
  ['POST', '/agent/heartbeat', { agentId: 'a', leases: [] }],
];

async function assertGuarded(srv: ServerHandle, token: string): Promise<void> {
  const wrong: Array<[string, Record<string, string>]> = [
    ['no header', {}],
    ['empty bearer', { authorization: 'Bearer ' }],
    ['other scheme', { authorization: `Basic ${token}` }],
    ['no scheme', { authorization: token }],
    ['wrong token, same length', { authorization: `Bearer ${token.slice(0, -1)}${token.endsWith('x') ? 'y' : 'x'}` }],
    ['a prefix of the token', { authorization: `Bearer ${token.slice(0, 4)}` }],
    ['the token plus more', { authorization: `Bearer ${token}x` }],
    ['the token, space-padded', { authorization: `Bearer  ${token}` }],
  ];
  for (const [method, p, body] of GUARDED) {
    for (const [what, headers] of wrong) {
      const r = await call(srv.url, method, p, body, headers);
      assert.is(r.status, 401, `${method} ${p}, ${what}: ${r.text}`);
      assert.is(r.headers.get('www-authenticate'), 'Bearer', `${method} ${p}`);
      assert.type(r.body.error, 'string');
    }
    const ok = await call(srv.url, method, p, body, { authorization: `Bearer ${token}` });
    assert.not.equal(ok.status, 401, `${method} ${p} with the token: ${ok.text}`);
    assert.ok(ok.status < 500, `${method} ${p} with the token: ${ok.status}`);
  }
  // The scheme is case-insensitive (RFC 9110 11.1); the token is not.
  assert.is((await call(srv.url, 'GET', '/agents', undefined, { authorization: `bearer ${token}` })).status, 200, 'lower-case scheme');
  assert.is((await call(srv.url, 'GET', '/agents', undefined, { authorization: `Bearer ${token.toUpperCase()}` })).status, 401, 'token case');
  for (const p of ['/healthz', '/readyz']) assert.is((await call(srv.url, 'GET', p)).status, 200, `${p} needs no token`);
  // The one submit above that had the token is the only command.
  const all = await call(srv.url, 'GET', '/commands', undefined, { authorization: `Bearer ${token}` });
  assert.is(all.body.commands.length, 1, 'a request without the token changed something');
}

auth('--token: 401 on every route but /healthz and /readyz unless the token is sent', async () => {
  const srv = await startServer(tempDir(), ['--token', 's3cret-token']);
  assert.is(srv.proc.lines.find((l) => l.msg === 'listening')!.auth, true);
  await assertGuarded(srv, 's3cret-token');
  // A refused body is not even read: no 400 leaks past the 401.
  assert.is((await call(srv.url, 'POST', '/commands', '{not json')).status, 401);
  assert.not.ok(srv.proc.stdout.includes('s3cret-token'), 'the token was logged');
});

auth('KEEL_TOKEN works the same; --token wins over it', async () => {
  const env = await startServer(tempDir(), [], { KEEL_TOKEN: 'from-the-env' });
  await assertGuarded(env, 'from-the-env');
  const both = await startServer(tempDir(), ['--token', 'from-the-flag'], { KEEL_TOKEN: 'from-the-env' });
  assert.is((await call(both.url, 'GET', '/agents', undefined, { authorization: 'Bearer from-the-env' })).status, 401);
  assert.is((await call(both.url, 'GET', '/agents', undefined, { authorization: 'Bearer from-the-flag' })).status, 200);
});

auth('without a token nothing asks for one', async () => {
  const srv = await startServer(tempDir(), [], { KEEL_TOKEN: '' });
  assert.is(srv.proc.lines.find((l) => l.msg === 'listening')!.auth, false);
  assert.is((await call(srv.url, 'GET', '/agents')).status, 200);
  assert.is((await call(srv.url, 'GET', '/metrics')).status, 200);
});

flags.run();
auth.run();
