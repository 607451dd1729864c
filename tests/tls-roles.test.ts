// TLS and the two roles, as an operator sets them up: a server on HTTPS with
// a certificate from a private CA (made with openssl here), an agent and curl
// that trust that CA and one that does not; client and agent tokens that each
// open only their own routes (every route is tried); tokens read from files,
// so they never appear on a command line. The servers run on the file store
// and on PostgreSQL (support/stores.ts); flag parsing needs no server.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { promisify } from 'node:util';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../lib/flags.ts';
import { parseAgentConfig } from '../lib/agent/config.ts';
import { ROUTE_ROLES } from '../lib/server/app.ts';
import { parseServerFlags } from '../lib/server/config.ts';
import { about, submit, waitFinal } from './fixtures/agent-harness.ts';
import { call, closeAll } from './support/server-harness.ts';
import { cleanup, startAgent, startServer, tempDir } from './support/processes.ts';
import { makePki, type TestPki } from './support/tls-certs.ts';
import { runSuites, stored, STORES } from './support/stores.ts';

const run = promisify(execFile);
let pki: TestPki;
let stranger: TestPki; // another CA: its certificates mean nothing to the first

// --- TLS ----------------------------------------------------------------------

/** The two CAs, made again for each suite (a suite's cleanup removes their directory). */
function makeCas(): void {
  pki = makePki('keel');
  stranger = makePki('stranger');
}

/** curl's exit code and output; 0 is success. */
async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const { stdout, stderr } = await run('curl', ['-sS', ...args]);
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

/** One GET with node:https trusting `ca`; the status, or the error code the handshake failed with. */
function httpsGet(url: string, ca: Buffer | undefined): Promise<number | string> {
  return new Promise((resolve) => {
    const req = https.get(url, { ca, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

// --- roles --------------------------------------------------------------------

const CLIENT = 'client-s3cret';
const AGENT = 'agent-s3cret';
const ID = '00000000-0000-4000-8000-000000000000';

/** The status of one request, read at the response head (event streams never end on their own). */
function statusOf(base: string, method: string, p: string, token: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const req = http.request(`${base}${p}`, { method, headers, agent: false }, (res) => {
      resolve(res.statusCode!);
      res.destroy();
    });
    req.on('error', reject);
    req.end(method === 'POST' ? JSON.stringify({ agentId: 'a', items: [{ id: ID, lease: 1 }], type: 'DELAY', payload: { ms: 1 } }) : undefined);
  });
}

// --- on each store ---------------------------------------------------------------

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const tls = suite(store.label('TLS'));
  tls.before(makeCas);
  tls.after(cleanup);

  tls('--tls-cert/--tls-key: the same API over HTTPS; an agent with --ca and curl --cacert work, a client without the CA is refused', async () => {
    const server = await startServer(tempDir(), ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--lease-timeout', '2s', ...(await store.serverArgs())]);
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.is(server.proc.lines.find((l) => l.msg === 'listening')!.tls, true);

    // curl: trusts the CA -> works; trusts nothing extra, or the other CA -> refused (60: peer certificate cannot be authenticated).
    const submitted = await curl(['--cacert', pki.caCert, '-X', 'POST', `${server.url}/commands`, '-d', '{"type":"DELAY","payload":{"ms":50}}']);
    assert.is(submitted.code, 0, submitted.err);
    const id = JSON.parse(submitted.out).commandId as string;
    for (const args of [[], ['--cacert', stranger.caCert]]) {
      const refused = await curl([...args, `${server.url}/healthz`]);
      assert.is(refused.code, 60, `curl ${args.join(' ')}: ${refused.err}`);
    }
    // Plain HTTP to the TLS port gets no answer from the API.
    const plain = await curl([`${server.url.replace('https:', 'http:')}/healthz`]);
    assert.not.equal(plain.code, 0);

    // node:https: the same three cases.
    assert.is(await httpsGet(`${server.url}/healthz`, fs.readFileSync(pki.caCert)), 200);
    assert.is(await httpsGet(`${server.url}/healthz`, undefined), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    assert.is(await httpsGet(`${server.url}/healthz`, fs.readFileSync(stranger.caCert)), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');

    // An agent that does not trust the CA never gets through, and says what to do.
    const untrusting = startAgent(server.url, tempDir(), ['--id', 'untrusting']);
    const complaint = await untrusting.waitForMsg('server unreachable; retrying with backoff');
    assert.match(String(complaint.error), /UNABLE_TO_VERIFY_LEAF_SIGNATURE.*pass --ca FILE/);
    await untrusting.kill('SIGTERM');

    // The agent with --ca runs the command.
    const agent = startAgent(server.url, tempDir(), ['--id', 'trusting', '--ca', pki.caCert]);
    await agent.waitFor(about('reported', id), 15_000, `reported ${id}`);
    const view = await curl(['--cacert', pki.caCert, `${server.url}/commands/${id}`]);
    const cmd = JSON.parse(view.out);
    assert.is(cmd.status, 'COMPLETED');
    assert.is(cmd.agentId, 'trusting');
    assert.not.ok(untrusting.lines.some((l) => l.msg === 'executing'), 'the agent without the CA claimed work');
  });

  const roles = suite(store.label('client and agent roles'));
  roles.after(async () => {
    await closeAll();
    await cleanup();
  });

  roles('every route: its own token passes, the other role\'s token gets 403, none or a wrong one 401; refused requests write nothing', async () => {
    const s = await store.startServer({ clientToken: CLIENT, agentToken: AGENT });
    const before = await stored(s);
    const kinds = new Set(ROUTE_ROLES.map((r) => r.role));
    assert.equal([...kinds].sort(), ['agent', 'client', 'open'], 'the table has routes of every role');
    for (const { method, name, role } of ROUTE_ROLES) {
      const p = name.replaceAll(':id', ID).replaceAll(':file', 'app.js');
      const what = `${method} ${name}`;
      if (role === 'open') {
        const st = await statusOf(s.url, method, p, undefined);
        assert.ok(st !== 401 && st !== 403 && st < 500, `${what} needs no token: ${st}`);
        continue;
      }
      const own = role === 'client' ? CLIENT : AGENT;
      const other = role === 'client' ? AGENT : CLIENT;
      assert.is(await statusOf(s.url, method, p, other), 403, `${what} with the ${role === 'client' ? 'agent' : 'client'} token`);
      assert.is(await statusOf(s.url, method, p, undefined), 401, `${what} without a token`);
      assert.is(await statusOf(s.url, method, p, `${own}x`), 401, `${what} with a wrong token`);
      assert.is(await stored(s), before, `${what}: a refused request wrote to the store`);
      const ok = await statusOf(s.url, method, p, own);
      assert.ok(ok !== 401 && ok !== 403 && ok < 500, `${what} with its own token: ${ok}`);
    }
    // What the 403 says: whose token it was, and which one the route needs.
    const r = await fetch(`${s.url}/commands`, { method: 'POST', headers: { authorization: `Bearer ${AGENT}` }, body: '{"type":"DELAY","payload":{"ms":1}}' });
    assert.is(r.status, 403);
    assert.equal(await r.json(), {
      error: 'this is the agent token; /commands is a client route and needs the client token',
      field: 'Authorization',
      role: 'client',
    });
  });

  roles('the routes the issue names, spelled out: an agent token cannot submit or cancel, a client token cannot claim, start, finish, heartbeat or release', async () => {
    const s = await store.startServer({ clientToken: CLIENT, agentToken: AGENT });
    const id = await submit(s.url, 'DELAY', { ms: 1 }, CLIENT);
    assert.is(await statusOf(s.url, 'POST', '/commands', AGENT), 403);
    assert.is(await statusOf(s.url, 'POST', `/commands/${id}/cancel`, AGENT), 403);
    for (const route of ['claim', 'start', 'finish', 'heartbeat', 'release']) assert.is(await statusOf(s.url, 'POST', `/agent/${route}`, CLIENT), 403, route);
    const still = await call(s.url, 'GET', `/commands/${id}`, undefined, { authorization: `Bearer ${CLIENT}` });
    assert.equal([still.body.state, still.body.cancelRequested], ['PENDING', false], 'a refused request moved the command');
  });

  roles('--token sets both roles; a role token overrides it for its own routes only', async () => {
    const passes = async (base: string, method: string, p: string, token: string | undefined): Promise<boolean> => {
      const st = await statusOf(base, method, p, token);
      return st !== 401 && st !== 403;
    };
    const both = await store.startServer({ token: 'one' });
    assert.ok(await passes(both.url, 'GET', '/agents', 'one'));
    assert.ok(await passes(both.url, 'POST', '/agent/heartbeat', 'one'));
    const split = await store.startServer({ token: 'one', agentToken: AGENT });
    assert.ok(await passes(split.url, 'GET', '/agents', 'one'));
    assert.is(await statusOf(split.url, 'POST', '/agent/heartbeat', 'one'), 403);
    assert.ok(await passes(split.url, 'POST', '/agent/heartbeat', AGENT));
    // Only an agent token: the client routes stay open.
    const agentOnly = await store.startServer({ agentToken: AGENT });
    assert.ok(await passes(agentOnly.url, 'GET', '/agents', undefined));
    assert.is(await statusOf(agentOnly.url, 'POST', '/agent/heartbeat', undefined), 401);
  });

  roles('token files keep the tokens out of ps: a real server and agent run a command with none on a command line', async () => {
    const dir = tempDir();
    const files = { client: path.join(dir, 'client.token'), agent: path.join(dir, 'agent.token') };
    fs.writeFileSync(files.client, `${CLIENT}\n`, { mode: 0o600 });
    fs.writeFileSync(files.agent, `${AGENT}\n`, { mode: 0o600 });
    const server = await startServer(tempDir(), ['--client-token-file', files.client, '--agent-token-file', files.agent, ...(await store.serverArgs())]);
    const agent = startAgent(server.url, tempDir(), ['--token-file', files.agent]);
    await agent.waitForMsg('agent ready');
    const id = await submit(server.url, 'DELAY', { ms: 1 }, CLIENT);
    assert.is((await waitFinal(server.url, id, 15_000, CLIENT)).status, 'COMPLETED');
    for (const p of [server.proc, agent]) {
      const cmdline = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
      assert.not.ok(cmdline.includes(CLIENT) || cmdline.includes(AGENT), `a token is on the command line: ${cmdline}`);
      assert.not.ok(p.stdout.includes(CLIENT) || p.stdout.includes(AGENT), 'a token was logged');
    }
    // The agent token file on the client side is refused as a client.
    assert.is(await statusOf(server.url, 'GET', '/agents', AGENT), 403);
  });

  suites.push(tls, roles);
}

// --- flags: no server ---------------------------------------------------------------

const flags = suite('TLS and token flags');
flags.before(makeCas);
flags.after(cleanup);

flags('TLS flags: both or neither, files that exist, a key that fits the certificate; --ca only for https', () => {
  const missing = path.join(pki.dir, 'nope.pem');
  const rows: Array<[string[], RegExp]> = [
    [['--tls-cert', pki.serverCert], /--tls-cert and --tls-key go together/],
    [['--tls-key', pki.serverKey], /--tls-cert and --tls-key go together/],
    [['--tls-cert', missing, '--tls-key', pki.serverKey], /--tls-cert: cannot read ".*nope\.pem" \(ENOENT\)/],
    [['--tls-cert', pki.serverCert, '--tls-key', stranger.serverKey], /--tls-cert .* with --tls-key .*: .*key values mismatch/],
    [['--tls-cert', pki.serverKey, '--tls-key', pki.serverKey], /--tls-cert .* with --tls-key/],
  ];
  for (const [args, message] of rows) {
    assert.throws(() => parseServerFlags(args, {}), (e: Error) => e instanceof UsageError && message.test(e.message) && !e.message.includes('\n'), args.join(' '));
  }
  const ok = parseServerFlags(['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey], {});
  assert.ok(ok !== 'help' && ok.tls !== undefined);
  const agentRows: Array<[string[], RegExp]> = [
    [['--ca', pki.caCert], /--ca applies to an https:\/\/ --server only/],
    [['--server', 'https://127.0.0.1:1', '--ca', missing], /--ca: cannot read .* \(ENOENT\)/],
    [['--server', 'https://127.0.0.1:1', '--ca', pki.serverKey], /--ca: .* holds no PEM certificate/],
  ];
  for (const [args, message] of agentRows) {
    assert.throws(() => parseAgentConfig(args, {}), (e: Error) => e instanceof UsageError && message.test(e.message), args.join(' '));
  }
  assert.ok(parseAgentConfig(['--server', 'https://127.0.0.1:1', '--ca', pki.caCert], {}).ca!.includes('BEGIN CERTIFICATE'));
});

flags('token flags: a file or the flag, not both; an empty or unreadable file says so', () => {
  const dir = tempDir();
  const empty = path.join(dir, 'empty');
  fs.writeFileSync(empty, '\n');
  const rows: Array<[string[], RegExp]> = [
    [['--token', 'x', '--token-file', empty], /give --token or --token-file, not both/],
    [['--agent-token-file', empty], /--agent-token-file: ".*empty" is empty/],
    [['--client-token-file', path.join(dir, 'nope')], /--client-token-file: cannot read ".*nope" \(ENOENT\)/],
    [['--client-token', ''], /--client-token must not be empty/],
  ];
  for (const [args, message] of rows) {
    assert.throws(() => parseServerFlags(args, {}), (e: Error) => e instanceof UsageError && message.test(e.message), args.join(' '));
  }
  assert.throws(() => parseAgentConfig(['--token-file', empty], {}), (e: Error) => /--token-file: ".*" is empty/.test(e.message));
});

runSuites(...suites, flags);
