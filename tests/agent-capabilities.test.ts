// What an agent announces when it claims: its protocol version and the
// command types it runs. The server hands it only those types (at once or
// while its claim is parked), shows both in GET /agents, counts in /metrics
// the PENDING commands no online agent runs, and refuses a protocol version it
// does not speak with a 400 naming both, after which the agent exits instead
// of retrying.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAgentConfig } from '../lib/agent/config.ts';
import { UsageError } from '../lib/flags.ts';
import { PROTOCOL_VERSION } from '../lib/protocol.ts';
import { CommandStore } from '../state/command-store.ts';
import { about, submit, waitFinal } from './fixtures/agent-harness.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call, closeAll, startTestServer, waitUntil } from './support/server-harness.ts';
import { cleanup, Proc, startAgent, startServer, tempDir } from './support/processes.ts';

const DELAY = { type: 'DELAY', payload: { ms: 1 } };
const HTTP = { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/x' } };

// --- the server: claims by type ------------------------------------------------

const server = suite('claims by type');
server.after(async () => {
  await closeAll();
  await cleanup();
});

const submitBody = async (url: string, body: unknown): Promise<string> => (await call(url, 'POST', '/commands', body)).body.commandId as string;

server('a claim that names types gets only those, oldest first; the others wait for an agent that runs them', async () => {
  const s = await startTestServer();
  const d1 = await submitBody(s.url, DELAY);
  const h1 = await submitBody(s.url, HTTP);
  const d2 = await submitBody(s.url, DELAY);
  const h2 = await submitBody(s.url, HTTP);
  const onlyHttp = await call(s.url, 'POST', '/agent/claim', { agentId: 'fetcher', max: 10, protocol: PROTOCOL_VERSION, types: ['HTTP_GET_JSON'] });
  assert.is(onlyHttp.status, 200, onlyHttp.text);
  assert.equal(onlyHttp.body.commands.map((c: { id: string }) => c.id), [h1, h2]);
  const all = await call(s.url, 'POST', '/agent/claim', { agentId: 'any', max: 10 });
  assert.equal(all.body.commands.map((c: { id: string }) => c.id), [d1, d2]);
});

server('a parked claim is offered only the types its agent runs; a command of another type goes to a claim parked behind it', async () => {
  const s = await startTestServer();
  const delays = call(s.url, 'POST', '/agent/claim', { agentId: 'sleeper', max: 1, waitMs: 5000, types: ['DELAY'] });
  await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the DELAY claim parked');
  const fetches = call(s.url, 'POST', '/agent/claim', { agentId: 'fetcher', max: 1, waitMs: 60_000, types: ['HTTP_GET_JSON'] });
  await waitUntil(() => s.keel.ctx.claimWaiters.size === 2, 5000, 'the HTTP claim parked');
  const h = await submitBody(s.url, HTTP);
  // Claimed in the submit's own group commit: it was offered at once, not found when a wait ran out.
  assert.is(s.keel.ctx.store.get(h)!.agentId, 'fetcher');
  const got = await fetches;
  assert.equal(got.body.commands.map((c: { id: string }) => c.id), [h], 'the HTTP claim, parked second, got it');
  assert.is(s.keel.ctx.claimWaiters.size, 1, 'the DELAY claim still waits');
  const d = await submitBody(s.url, DELAY);
  assert.equal((await delays).body.commands.map((c: { id: string }) => c.id), [d]);
});

server('GET /agents shows what each agent announced; /metrics counts PENDING commands no online agent runs', async () => {
  const s = await startTestServer();
  const metric = async (name: string): Promise<number | undefined> => {
    const text = (await call(s.url, 'GET', '/metrics')).text;
    const m = new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  await submitBody(s.url, HTTP);
  await submitBody(s.url, HTTP);
  await submitBody(s.url, DELAY);
  // Nobody online yet: every PENDING command waits for an agent.
  assert.is(await metric('keel_pending{type="HTTP_GET_JSON"}'), 2);
  assert.is(await metric('keel_pending_unrunnable{type="HTTP_GET_JSON"}'), 2);
  assert.is(await metric('keel_pending_unrunnable{type="DELAY"}'), 1);
  const r = await call(s.url, 'POST', '/agent/claim', { agentId: 'sleeper', max: 5, protocol: 1, types: ['DELAY'] });
  assert.is(r.body.commands.length, 1);
  assert.is(await metric('keel_pending_unrunnable{type="HTTP_GET_JSON"}'), 2, 'only a DELAY agent is online');
  assert.is(await metric('keel_pending_unrunnable{type="DELAY"}'), 0);
  assert.is(await metric('keel_pending{type="DELAY"}'), 0);
  const agents = (await call(s.url, 'GET', '/agents')).body.agents;
  assert.equal(agents.map((a: Record<string, unknown>) => [a.id, a.status, a.protocol, a.types]), [['sleeper', 'online', 1, ['DELAY']]]);
  // An agent that has not announced anything (only heartbeats since the server started) may run anything.
  await call(s.url, 'POST', '/agent/heartbeat', { agentId: 'quiet', leases: [] });
  assert.is(await metric('keel_pending_unrunnable{type="HTTP_GET_JSON"}'), 0);
  const quiet = (await call(s.url, 'GET', '/agents')).body.agents.find((a: { id: string }) => a.id === 'quiet');
  assert.equal([quiet.protocol, quiet.types], [null, null]);
});

server('a protocol version the server does not speak: 400 on field protocol, naming both versions; bad types: 400', async () => {
  const s = await startTestServer();
  await submitBody(s.url, DELAY);
  const r = await call(s.url, 'POST', '/agent/claim', { agentId: 'future', protocol: 3 });
  assert.is(r.status, 400);
  assert.is(r.body.field, 'protocol');
  assert.match(r.body.error, /this agent speaks protocol 3, this server speaks protocol 1 or 2/);
  assert.equal([r.body.agentProtocol, r.body.serverProtocols], [3, [1, 2]]);
  for (const types of [[], ['SHELL'], ['DELAY', 'DELAY'], 'DELAY']) {
    const bad = await call(s.url, 'POST', '/agent/claim', { agentId: 'a', types });
    assert.is(bad.status, 400, JSON.stringify(types));
    assert.is(bad.body.field, 'types');
  }
  assert.is(s.keel.ctx.store.table.countByState.PENDING, 1, 'a refused claim took nothing');
});

server('PENDING counts by type survive a snapshot and a restart', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir);
  for (const [type, payload, idemKey] of [['DELAY', { ms: 1 }], ['HTTP_GET_JSON', { url: 'http://127.0.0.1:9/' }], ['HTTP_GET_JSON', { url: 'http://127.0.0.1:9/k' }, 'key-1'], ['DELAY', { ms: 2 }, 'key-2']] as const) {
    await store.submit({ type, payload, idemKey, bodyHash: idemKey && 'h' });
  }
  await store.claim('a', 1); // the first DELAY leaves PENDING
  assert.equal(store.table.pendingByType, { DELAY: 1, HTTP_GET_JSON: 2 });
  await store.durable.compact();
  await store.submit({ type: 'DELAY', payload: { ms: 3 } }); // in the journal after the snapshot
  await store.close();
  const back = await CommandStore.open(dir);
  assert.equal(back.table.pendingByType, { DELAY: 2, HTTP_GET_JSON: 2 });
  await back.claim('b', 10, { types: new Set(['HTTP_GET_JSON'] as const) });
  assert.equal(back.table.pendingByType, { DELAY: 2, HTTP_GET_JSON: 0 });
  await back.close();
});

// --- real agents ----------------------------------------------------------------

const agents = suite('agents announce');
let target: Target;
agents.before(async () => {
  target = await startTarget();
});
agents.after(async () => {
  await cleanup();
  await target.close();
});

agents('--types: an agent runs only its types; a command no online agent runs stays PENDING (and /metrics says so) until one that does comes', async () => {
  const srv = await startServer(tempDir(), ['--lease-timeout', '2s']);
  const sleeper = startAgent(srv.url, tempDir(), ['--id', 'sleeper', '--types', 'DELAY']);
  await sleeper.waitForMsg('agent ready');
  const h = await submit(srv.url, 'HTTP_GET_JSON', { url: `${target.url}/json?typed` });
  const d = await submit(srv.url, 'DELAY', { ms: 10 });
  assert.is((await waitFinal(srv.url, d)).agentId, 'sleeper');
  const listed = (await call(srv.url, 'GET', '/agents')).body.agents;
  assert.equal(listed.map((a: Record<string, unknown>) => [a.id, a.protocol, a.types]), [['sleeper', PROTOCOL_VERSION, ['DELAY']]]);
  const metrics = (await call(srv.url, 'GET', '/metrics')).text;
  assert.match(metrics, /^keel_pending_unrunnable\{type="HTTP_GET_JSON"\} 1$/m);
  assert.is((await call(srv.url, 'GET', `/commands/${h}`)).body.status, 'PENDING');
  assert.is(target.hits('/json?typed'), 0);
  const fetcher = startAgent(srv.url, tempDir(), ['--id', 'fetcher', '--types', 'HTTP_GET_JSON']);
  const done = await waitFinal(srv.url, h);
  assert.equal([done.status, done.agentId], ['COMPLETED', 'fetcher']);
  assert.match((await call(srv.url, 'GET', '/metrics')).text, /^keel_pending_unrunnable\{type="HTTP_GET_JSON"\} 0$/m);
  assert.not.ok(sleeper.lines.some((l) => l.msg === 'executing' && l.id === h), 'the DELAY agent claimed the HTTP command');
  await fetcher.waitFor(about('reported', h), 5000);
});

agents('a protocol version the server does not speak: the agent exits (code 3) with a message naming both versions, after one claim', async () => {
  const srv = await startServer(tempDir());
  const agent = startAgent(srv.url, tempDir(), ['--protocol', '3']);
  const { code } = await agent.exited;
  assert.is(code, 3, agent.stderr);
  assert.match(agent.stderr, /^keel: the server refused this agent's protocol version 3: this agent speaks protocol 3, this server speaks protocol 1 or 2/);
  const claims = (await call(srv.url, 'GET', '/metrics')).text.match(/^keel_http_requests_total\{route="\/agent\/claim",code="400"\} (\d+)$/m);
  assert.is(claims?.[1], '1', 'the agent claimed more than once');
  // Supervised, it is not restarted either.
  const supervised = new Proc('agent', ['agent.ts', '--server', srv.url, '--state-dir', tempDir(), '--protocol', '3', '--supervise']);
  assert.is((await supervised.exited).code, 3, supervised.stdout);
  assert.is(supervised.lines.filter((l) => l.msg === 'agent child started').length, 1);
});

agents('a server from before protocol versions (it refuses the unknown field): the agent exits the same way, saying so', async () => {
  let claims = 0;
  const old = http.createServer((req, res) => {
    if (req.url === '/agent/claim') claims++;
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'unknown field "protocol"; allowed: agentId, max, waitMs, finish', field: 'protocol' }));
  });
  await new Promise<void>((r) => old.listen(0, '127.0.0.1', r));
  try {
    const agent = startAgent(`http://127.0.0.1:${(old.address() as AddressInfo).port}`, tempDir());
    assert.is((await agent.exited).code, 3, agent.stderr);
    assert.match(agent.stderr, /the server refused this agent's protocol version 2: unknown field "protocol"/);
    assert.is(claims, 1);
  } finally {
    old.close();
  }
});

agents('--types flag: known types, comma-separated, no repeats', () => {
  assert.equal(parseAgentConfig([], {}).types, ['DELAY', 'HTTP_GET_JSON']);
  assert.equal(parseAgentConfig(['--types', 'HTTP_GET_JSON'], {}).types, ['HTTP_GET_JSON']);
  for (const bad of ['', 'SHELL', 'DELAY,DELAY', 'DELAY,,HTTP_GET_JSON', 'delay']) {
    assert.throws(() => parseAgentConfig(['--types', bad], {}), (e: Error) => e instanceof UsageError && /--types must be/.test(e.message), bad);
  }
});

server.run();
agents.run();
