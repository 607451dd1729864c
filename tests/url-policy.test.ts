// The agent's URL policy for HTTP_GET_JSON (--allow-url, --deny-url): by
// default everything but link-local addresses; a denied request ends FAILED
// URL_DENIED before anything is sent; the check runs on the address a name
// resolves to and again on every redirect hop. Everything here runs on
// 127.0.0.1, which the default allows.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAgentConfig } from '../lib/agent/config.ts';
import { runHttpGetJson, type HttpGetOptions } from '../lib/agent/executors/http-get-json.ts';
import { UrlPolicy } from '../lib/agent/url-policy.ts';
import { UsageError } from '../lib/flags.ts';
import { submit, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { cleanup, startAgent, startServer, tempDir } from './support/processes.ts';

const test = suite('URL policy');
let target: Target;
let port: number;
test.before(async () => {
  target = await startTarget();
  port = Number(new URL(target.url).port);
});
test.after(async () => {
  await cleanup();
  await target.close();
});

const fetchWith = (policy: UrlPolicy | undefined, url: string) => {
  const opts: HttpGetOptions = { timeoutMs: 3000, maxBodyBytes: 64 * 1024, urlPolicy: policy };
  return runHttpGetJson({ url }, opts, new AbortController().signal);
};

test('the default: loopback and names are fetched; link-local (cloud metadata) is denied, IPv4 and IPv6, before any connection', async () => {
  const ok = await fetchWith(undefined, `${target.url}/json?default`);
  assert.is(ok.outcome, 'COMPLETED');
  const byName = await fetchWith(undefined, `http://localhost:${port}/json?by-name`);
  assert.is(byName.outcome, 'COMPLETED', JSON.stringify(byName));
  for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://[fe80::1]/', 'http://[::ffff:169.254.169.254]/']) {
    const t0 = performance.now();
    const e = await fetchWith(undefined, url);
    assert.is(e.outcome, 'FAILED', url);
    assert.match(e.error!, /^URL_DENIED: .*link-local/, url);
    assert.ok(performance.now() - t0 < 1000, `${url}: took ${performance.now() - t0} ms: it tried to connect`);
  }
});

test('--deny-url: a range, an address or a name; nothing reaches the target', async () => {
  const rows: Array<[string[], string]> = [
    [['127.0.0.0/8'], `${target.url}/json?deny-range`],
    [['127.0.0.1'], `${target.url}/json?deny-ip`],
    [['localhost'], `http://localhost:${port}/json?deny-name`],
    [['*host'], `http://localhost:${port}/json?deny-pattern`],
    // A name is judged by what it resolves to: localhost is 127.0.0.1 (and ::1).
    [['127.0.0.0/8', '::1'], `http://localhost:${port}/json?deny-resolved`],
    // 0.0.0.0 reaches this host: it is judged as loopback.
    [['127.0.0.0/8'], `http://0.0.0.0:${port}/json?deny-unspecified`],
  ];
  for (const [deny, url] of rows) {
    const e = await fetchWith(new UrlPolicy([], deny), url);
    assert.is(e.outcome, 'FAILED', `${deny}: ${url}`);
    assert.match(e.error!, /^URL_DENIED: .*--deny-url/, `${deny}: ${url}`);
    assert.is(target.hits(new URL(url).pathname + new URL(url).search), 0, `${deny}: a request was sent`);
  }
});

test('the resolved address decides, not the name: a name allowed by --allow-url is still denied when it resolves to a denied address', async () => {
  // What DNS rebinding does: an allowed name that answers with a forbidden address.
  const e = await fetchWith(new UrlPolicy(['localhost'], ['127.0.0.0/8', '::1']), `http://localhost:${port}/json?rebound`);
  assert.match(e.error!, /^URL_DENIED: localhost \((127\.0\.0\.1|::1)\) matches --deny-url/);
  assert.is(target.hits('/json?rebound'), 0);
  // A name rule alone does not open link-local: only a range or address that contains it does.
  const policy = new UrlPolicy(['metadata.internal']);
  assert.match(policy.checkAddress('169.254.169.254', 'metadata.internal')!, /link-local/);
  assert.is(new UrlPolicy(['169.254.169.254']).checkAddress('169.254.169.254', 'metadata.internal'), undefined);
});

test('--allow-url locks down: only what matches is fetched', async () => {
  const policy = new UrlPolicy(['127.0.0.1/32']);
  assert.is((await fetchWith(policy, `${target.url}/json?allowed`)).outcome, 'COMPLETED');
  const elsewhere = await fetchWith(new UrlPolicy(['10.0.0.0/8', '*.example.com']), `${target.url}/json?not-allowed`);
  assert.match(elsewhere.error!, /^URL_DENIED: 127\.0\.0\.1 matches no --allow-url \(10\.0\.0\.0\/8,\*\.example\.com\)/);
  assert.is(target.hits('/json?not-allowed'), 0);
  // localhost resolves to ::1 as well, which the list does not hold: denied as a whole.
  const mixed = await fetchWith(new UrlPolicy(['127.0.0.1']), `http://localhost:${port}/json?mixed`);
  assert.ok(mixed.outcome === 'COMPLETED' || /^URL_DENIED: localhost \(::1\)/.test(mixed.error!), JSON.stringify(mixed));
});

test('every redirect hop is judged again: a hop to a denied address ends URL_DENIED and is not followed', async () => {
  const hop = (to: string): string => `${target.url}/to?${encodeURIComponent(to)}`;
  const toName = await fetchWith(new UrlPolicy([], ['localhost']), hop(`http://localhost:${port}/json?after-hop`));
  assert.is(toName.outcome, 'FAILED');
  assert.match(toName.error!, /^URL_DENIED: localhost matches --deny-url localhost \(redirect 1, to http:\/\/localhost:\d+\/json\?after-hop\)/);
  assert.is(target.hits('/json?after-hop'), 0);
  const toMetadata = await fetchWith(undefined, hop('http://169.254.169.254/latest/meta-data/iam'));
  assert.match(toMetadata.error!, /^URL_DENIED: 169\.254\.169\.254 is link-local.*\(redirect 1/);
  // A hop to an allowed place is followed as before.
  const fine = await fetchWith(new UrlPolicy([], ['localhost']), hop(`${target.url}/json?fine`));
  assert.is(fine.outcome, 'COMPLETED');
  assert.is(target.hits('/json?fine'), 1);
});

test('flags: rules comma-separated or repeated; a bad rule or an empty list is a usage error naming it', () => {
  const cfg = parseAgentConfig(['--allow-url', '10.0.0.0/8,*.example.com', '--allow-url', 'fd00::/8', '--deny-url', '10.1.2.3'], {});
  assert.is(cfg.urlPolicy.checkAddress('10.9.9.9', undefined), undefined);
  assert.match(cfg.urlPolicy.checkAddress('10.1.2.3', undefined)!, /--deny-url 10\.1\.2\.3/);
  assert.is(cfg.urlPolicy.checkAddress('fd00::5', undefined), undefined);
  assert.is(cfg.urlPolicy.checkAddress('93.184.216.34', 'api.example.com'), undefined);
  assert.match(cfg.urlPolicy.checkAddress('93.184.216.34', 'example.com')!, /matches no --allow-url/);
  const bad: Array<[string[], RegExp]> = [
    [['--deny-url', '10.0.0.0/33'], /--deny-url "10\.0\.0\.0\/33": the prefix length must be 0 to 32/],
    [['--allow-url', 'http://example.com/'], /--allow-url "http:\/\/example\.com\/": give a CIDR range/],
    [['--allow-url', ','], /--allow-url needs at least one rule/],
    [['--deny-url', 'fe80::/129'], /0 to 128/],
  ];
  for (const [args, message] of bad) {
    assert.throws(() => parseAgentConfig(args, {}), (e: Error) => e instanceof UsageError && message.test(e.message), args.join(' '));
  }
});

test('a real agent with --deny-url: the command ends FAILED URL_DENIED and the target sees nothing', async () => {
  const srv = await startServer(tempDir());
  startAgent(srv.url, tempDir(), ['--deny-url', '127.0.0.0/8,::1']);
  const id = await submit(srv.url, 'HTTP_GET_JSON', { url: `${target.url}/json?real-agent` });
  const v = await waitFinal(srv.url, id);
  assert.is(v.status, 'FAILED');
  assert.match(v.error!, /^URL_DENIED: 127\.0\.0\.1 matches --deny-url/);
  assert.is(target.hits('/json?real-agent'), 0);
  // The agent talks to its server on 127.0.0.1 all the same: the policy is for commands only.
  assert.is((await waitFinal(srv.url, await submit(srv.url, 'DELAY', { ms: 1 }))).status, 'COMPLETED');
});

test.run();
