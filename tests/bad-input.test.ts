// Every input path a client can reach, tried with malformed values. The table
// is the contract: what each bad input gets. Then a seeded fuzz of POST
// /commands: no 5xx, no crash, and nothing written for a rejected body. These
// run on each store (support/stores.ts); the flags and damaged state files of
// the file store run against real processes.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ServerContext } from '../lib/server/context.ts';
import { call } from './support/http.ts';
import { segmentData } from './support/journal-files.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';
import { closeAll, type TestServer } from './support/server-harness.ts';
import { runSuites, stored, STORES } from './support/stores.ts';
import { mulberry32 } from '../lib/prng.ts';

const VALID_ID = '0000000a-0000-4000-8000-00000000000b';
// [what, method, path, body (string = raw), headers, expected status, expected field]
type Row = [string, string, string, unknown, Record<string, string>, number, string | undefined];
const ROWS: Row[] = [
  ['empty body', 'POST', '/commands', '', {}, 400, 'body'],
  ['not JSON', 'POST', '/commands', '{"type":', {}, 400, 'body'],
  ['JSON array', 'POST', '/commands', '[1,2]', {}, 400, 'body'],
  ['JSON string', 'POST', '/commands', '"DELAY"', {}, 400, 'body'],
  ['JSON null', 'POST', '/commands', 'null', {}, 400, 'body'],
  ['missing type', 'POST', '/commands', { payload: { ms: 1 } }, {}, 400, 'type'],
  ['unknown type', 'POST', '/commands', { type: 'SHELL', payload: {} }, {}, 400, 'type'],
  ['type not a string', 'POST', '/commands', { type: 7, payload: {} }, {}, 400, 'type'],
  ['unknown top-level field', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, prio: 1 }, {}, 400, 'prio'],
  ['missing payload', 'POST', '/commands', { type: 'DELAY' }, {}, 400, 'payload'],
  ['payload not an object', 'POST', '/commands', { type: 'DELAY', payload: 5 }, {}, 400, 'payload'],
  ['DELAY ms missing', 'POST', '/commands', { type: 'DELAY', payload: {} }, {}, 400, 'payload.ms'],
  ['DELAY ms negative', 'POST', '/commands', { type: 'DELAY', payload: { ms: -1 } }, {}, 400, 'payload.ms'],
  ['DELAY ms fractional', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1.5 } }, {}, 400, 'payload.ms'],
  ['DELAY ms over 24h', 'POST', '/commands', { type: 'DELAY', payload: { ms: 86_400_001 } }, {}, 400, 'payload.ms'],
  ['DELAY ms as string', 'POST', '/commands', { type: 'DELAY', payload: { ms: '10' } }, {}, 400, 'payload.ms'],
  ['DELAY unknown payload field', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1, url: 'x' } }, {}, 400, 'payload.url'],
  ['URL missing', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: {} }, {}, 400, 'payload.url'],
  ['URL relative', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: '/x' } }, {}, 400, 'payload.url'],
  ['URL ftp', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'ftp://127.0.0.1/x' } }, {}, 400, 'payload.url'],
  ['URL file', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 'file:///etc/passwd' } }, {}, 400, 'payload.url'],
  ['URL not a string', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: 5 } }, {}, 400, 'payload.url'],
  ['URL too long', 'POST', '/commands', { type: 'HTTP_GET_JSON', payload: { url: `http://127.0.0.1/${'a'.repeat(3000)}` } }, {}, 400, 'payload.url'],
  ['body over 64 KiB', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 }, pad: 'x'.repeat(70_000) }, {}, 413, 'body'],
  ['Idempotency-Key too long', 'POST', '/commands', { type: 'DELAY', payload: { ms: 1 } }, { 'idempotency-key': 'k'.repeat(300) }, 400, 'Idempotency-Key'],
  ['batch: commands missing', 'POST', '/commands/batch', {}, {}, 400, 'commands'],
  ['batch: commands not an array', 'POST', '/commands/batch', { commands: { type: 'DELAY' } }, {}, 400, 'commands'],
  ['batch: commands empty', 'POST', '/commands/batch', { commands: [] }, {}, 400, 'commands'],
  ['batch: over 1,000 commands', 'POST', '/commands/batch', { commands: Array.from({ length: 1001 }, () => ({ type: 'DELAY', payload: { ms: 1 } })) }, {}, 400, 'commands'],
  ['batch: unknown top-level field', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 } }], atomic: true }, {}, 400, 'atomic'],
  ['batch: item not an object', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 } }, 5] }, {}, 400, 'commands[1]'],
  ['batch: item type unknown', 'POST', '/commands/batch', { commands: [{ type: 'SHELL', payload: {} }] }, {}, 400, 'commands[0].type'],
  ['batch: item payload missing', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 } }, { type: 'DELAY' }] }, {}, 400, 'commands[1].payload'],
  ['batch: item ms negative', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 } }, { type: 'DELAY', payload: { ms: 1 } }, { type: 'DELAY', payload: { ms: 1 } }, { type: 'DELAY', payload: { ms: -1 } }] }, {}, 400, 'commands[3].payload.ms'],
  ['batch: item URL ftp', 'POST', '/commands/batch', { commands: [{ type: 'HTTP_GET_JSON', payload: { url: 'ftp://127.0.0.1/x' } }] }, {}, 400, 'commands[0].payload.url'],
  ['batch: item unknown field', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 }, prio: 1 }] }, {}, 400, 'commands[0].prio'],
  ['batch: idempotencyKey too long', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 }, idempotencyKey: 'k'.repeat(300) }] }, {}, 400, 'commands[0].idempotencyKey'],
  ['batch: idempotencyKey not a string', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 }, idempotencyKey: 7 }] }, {}, 400, 'commands[0].idempotencyKey'],
  ['batch: body over 4 MiB', 'POST', '/commands/batch', { commands: [{ type: 'DELAY', payload: { ms: 1 } }], pad: 'x'.repeat(4_200_000) }, {}, 413, 'body'],
  ['batch: not JSON', 'POST', '/commands/batch', '{"commands":[', {}, 400, 'body'],
  ['batch: wrong method', 'PUT', '/commands/batch', undefined, {}, 405, undefined],
  ['id not a UUID: no such command', 'GET', '/commands/123', undefined, {}, 404, 'id'],
  ['id with bad percent-encoding', 'GET', '/commands/%E0%A4%A', undefined, {}, 404, 'id'],
  ['id uppercase UUID', 'GET', `/commands/${VALID_ID.toUpperCase()}`, undefined, {}, 404, 'id'],
  ['unknown id', 'GET', `/commands/${VALID_ID}`, undefined, {}, 404, 'id'],
  ['wait not a duration', 'GET', `/commands/${VALID_ID}?wait=soon`, undefined, {}, 400, 'wait'],
  ['wait over 5m', 'GET', `/commands/${VALID_ID}?wait=10m`, undefined, {}, 400, 'wait'],
  ['list: bad status', 'GET', '/commands?status=DONE', undefined, {}, 400, 'status'],
  ['list: ASSIGNED is internal', 'GET', '/commands?status=ASSIGNED', undefined, {}, 400, 'status'],
  ['list: limit 0', 'GET', '/commands?limit=0', undefined, {}, 400, 'limit'],
  ['list: limit huge', 'GET', '/commands?limit=100000', undefined, {}, 400, 'limit'],
  ['list: limit not a number', 'GET', '/commands?limit=ten', undefined, {}, 400, 'limit'],
  ['list: cursor garbage', 'GET', '/commands?cursor=abc', undefined, {}, 400, 'cursor'],
  ['list: unknown parameter', 'GET', '/commands?sort=asc', undefined, {}, 400, 'sort'],
  ['cancel unknown id', 'POST', `/commands/${VALID_ID}/cancel`, undefined, {}, 404, 'id'],
  ['cancel non-id', 'POST', '/commands/zzz/cancel', undefined, {}, 404, 'id'],
  ['events non-id', 'GET', '/commands/zzz/events', undefined, {}, 404, 'id'],
  ['wrong method', 'DELETE', '/commands', undefined, {}, 405, undefined],
  ['wrong method on agent route', 'GET', '/agent/claim', undefined, {}, 405, undefined],
  ['unknown route', 'GET', '/nope', undefined, {}, 404, undefined],
  ['claim: missing agentId', 'POST', '/agent/claim', { max: 1 }, {}, 400, 'agentId'],
  ['claim: agentId with a slash', 'POST', '/agent/claim', { agentId: 'a/b' }, {}, 400, 'agentId'],
  ['claim: max 0', 'POST', '/agent/claim', { agentId: 'a', max: 0 }, {}, 400, 'max'],
  ['claim: finish not an array', 'POST', '/agent/claim', { agentId: 'a', finish: {} }, {}, 400, 'finish'],
  ['claim: riding finish with a bad outcome', 'POST', '/agent/claim', { agentId: 'a', finish: [{ id: VALID_ID, lease: 1, outcome: 'DONE' }] }, {}, 400, 'finish[0].outcome'],
  ['start: items empty', 'POST', '/agent/start', { agentId: 'a', items: [] }, {}, 400, 'items'],
  ['start: lease not an integer', 'POST', '/agent/start', { agentId: 'a', items: [{ id: VALID_ID, lease: 'x' }] }, {}, 400, 'items[0].lease'],
  ['finish: bad outcome', 'POST', '/agent/finish', { agentId: 'a', items: [{ id: VALID_ID, lease: 1, outcome: 'DONE' }] }, {}, 400, 'items[0].outcome'],
  ['heartbeat: leases not an array', 'POST', '/agent/heartbeat', { agentId: 'a', leases: {} }, {}, 400, 'leases'],
];

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const test = suite(store.label('bad input'));
  let s: TestServer<ServerContext>;
  test.before(async () => {
    s = await store.startServer({ leaseTimeoutMs: 5000 });
  });
  test.after(async () => {
    await closeAll();
    await cleanup();
  });

  test('every bad input gets its documented 4xx, naming the field, and writes nothing', async () => {
    const before = s.keel.ctx.store.lastSeq;
    const held = await stored(s);
    for (const [what, method, p, body, headers, status, field] of ROWS) {
      const r = await call(s.url, method, p, body, headers);
      assert.is(r.status, status, `${what}: status (${r.text})`);
      assert.type(r.body.error, 'string', `${what}: error message`);
      assert.is(r.body.field, field, `${what}: field`);
    }
    assert.is(s.keel.ctx.store.lastSeq, before, 'a rejected request made a transition');
    assert.is(await stored(s), held, 'a rejected request wrote something');
  });

  test('a request line that never finishes does not get a 5xx or crash the server', async () => {
    const sock = net.connect(s.port, '127.0.0.1');
    await new Promise<void>((r) => sock.write('POST /commands HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"ty', () => r()));
    sock.destroy(); // half a body, then the client goes away
    await new Promise((r) => sock.once('close', r));
    const r = await call(s.url, 'GET', '/healthz');
    assert.is(r.status, 200);
  });

  test('garbage that is not HTTP gets a 400 from the HTTP parser', async () => {
    const sock = net.connect(s.port, '127.0.0.1');
    let reply = '';
    sock.on('data', (d) => (reply += d));
    sock.write('\x00\x01\x02 this is not http\r\n\r\n');
    await new Promise((r) => sock.once('close', r));
    assert.match(reply, /^HTTP\/1\.1 400/);
  });

  test('fuzz: 3000 random and mutated bodies, no 5xx, nothing written for a rejected one', async () => {
    const rand = mulberry32(20261123); // seeded: a failing case can be replayed
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const seeds = [
      '{"type":"DELAY","payload":{"ms":5}}',
      '{"type":"HTTP_GET_JSON","payload":{"url":"http://127.0.0.1:9/x"}}',
    ];
    const junk = ['{', '}', '"', ':', ',', '[', ']', 'null', 'true', '-1', '1e999', '\\u0000', '\u00ff', 'ms', 'type', ' ', '0', 'DELAY', '\n'];
    const values: unknown[] = [null, true, -1, 0, 1.5, 2 ** 53, 'x', '', [], {}, { ms: 1 }, 'http://127.0.0.1/', 'DELAY'];
    const randomValue = (depth: number): unknown => {
      if (depth > 2 || rand() < 0.5) return pick(values);
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 3); i > 0; i--) o[pick(['type', 'payload', 'ms', 'url', 'x'])] = randomValue(depth + 1);
      return o;
    };
    let accepted = 0;
    const before = s.keel.ctx.store.lastSeq;
    for (let i = 0; i < 3000; i++) {
      let body: string;
      const mode = rand();
      if (mode < 0.4) {
        const s = pick(seeds).split('');
        for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) {
          const at = Math.floor(rand() * s.length);
          if (rand() < 0.5) s.splice(at, 1);
          else s.splice(at, 0, pick(junk));
        }
        body = s.join('');
      } else if (mode < 0.8) {
        body = JSON.stringify(randomValue(0));
      } else {
        body = Array.from({ length: Math.floor(rand() * 40) }, () => String.fromCharCode(Math.floor(rand() * 128))).join('');
      }
      const r = await call(s.url, 'POST', '/commands', body);
      assert.ok(r.status < 500, `body ${JSON.stringify(body)} got ${r.status}: ${r.text}`);
      if (r.status === 201) accepted++;
      else assert.ok(r.status >= 400 && typeof r.body.error === 'string', `body ${JSON.stringify(body)} got ${r.status}: ${r.text}`);
    }
    assert.is(s.keel.ctx.store.lastSeq - before, accepted, 'transitions != accepted submits');
    assert.ok(accepted > 0 && accepted < 3000, `fuzz is not exploring both sides (${accepted} accepted)`);
    assert.equal(s.logs.lines.filter((l) => l.level === 'error'), [], 'the server logged an error');
  });
  suites.push(test);
}

// --- flags and state files: each a real process start ---

const files = suite('server flags and damaged state files [file store only]');
files.after(cleanup);

function runServer(args: string[]): Proc {
  return new Proc('server', ['server.ts', ...args]);
}

const FLAG_ROWS: Array<[string, string[], RegExp]> = [
  ['unknown flag', ['--colour', 'red'], /Unknown option '--colour'/],
  ['port not a number', ['--port', 'http'], /--port must be an integer from 0 to 65535/],
  ['port out of range', ['--port', '70000'], /--port must be an integer/],
  ['lease timeout not a duration', ['--lease-timeout', 'soon'], /--lease-timeout must be a duration/],
  ['max-pending zero', ['--max-pending', '0'], /--max-pending must be an integer from 1/],
  ['positional argument', ['extra'], /Unexpected argument/],
];

files('bad server flags exit 2 with one line and the usage', async () => {
  for (const [what, args, message] of FLAG_ROWS) {
    const p = runServer([...args, '--state-dir', tempDir()]);
    const { code } = await p.exited;
    assert.is(code, 2, `${what}: exit code`);
    assert.match(p.stderr, message, what);
    assert.match(p.stderr, /usage: node --import tsx server.ts/, `${what}: usage`);
  }
});

files('a damaged state file stops startup naming the file and offset; --repair cuts it', async () => {
  const dir = tempDir();
  const first = runServer(['--state-dir', dir, '--port', '0']);
  const line = await first.waitForMsg('listening');
  for (let i = 0; i < 3; i++) await call(String(line.url), 'POST', '/commands', { type: 'DELAY', payload: { ms: i } });
  await first.kill('SIGKILL');

  const seg = fs.readdirSync(dir).find((f) => f.startsWith('journal-'))!;
  const file = path.join(dir, seg);
  const buf = fs.readFileSync(file);
  const secondRecord = buf.indexOf('\n', buf.indexOf('\n') + 1) + 1;
  buf[secondRecord + 20] = buf[secondRecord + 20]! ^ 0x01; // damage record 2 of 3: not the tail
  fs.writeFileSync(file, buf);

  const refused = runServer(['--state-dir', dir, '--port', '0']);
  assert.is((await refused.exited).code, 1);
  assert.ok(refused.stderr.includes(file), `names the file: ${refused.stderr}`);
  assert.match(refused.stderr, new RegExp(`at byte ${secondRecord}`));
  assert.match(refused.stderr, /--repair/);
  assert.not.match(refused.stderr, /\n\s+at /, 'no stack trace');

  const repaired = runServer(['--state-dir', dir, '--port', '0', '--repair']);
  const cut = await repaired.waitForMsg('journal: repaired by cutting');
  assert.is(cut.droppedRecords, 2);
  const up = await repaired.waitForMsg('listening');
  const list = await call(String(up.url), 'GET', '/commands');
  assert.is(list.body.commands.length, 1);
  await repaired.kill('SIGTERM');
});

files('a torn last record is cut and reported, and the server starts', async () => {
  const dir = tempDir();
  const first = runServer(['--state-dir', dir, '--port', '0']);
  const line = await first.waitForMsg('listening');
  for (let i = 0; i < 2; i++) await call(String(line.url), 'POST', '/commands', { type: 'DELAY', payload: { ms: i } });
  await first.kill('SIGKILL');
  const seg = path.join(dir, fs.readdirSync(dir).find((f) => f.startsWith('journal-'))!);
  fs.truncateSync(seg, segmentData(seg).length - 7);

  const again = runServer(['--state-dir', dir, '--port', '0']);
  await again.waitForMsg('journal: cut a torn last record');
  const up = await again.waitForMsg('listening');
  assert.is((await call(String(up.url), 'GET', '/commands')).body.commands.length, 1);
  await again.kill('SIGTERM');
});

files('a state dir that is a file: startup names it, exit 1, no stack trace', async () => {
  const file = path.join(tempDir(), 'not-a-dir');
  fs.writeFileSync(file, 'x');
  const p = runServer(['--state-dir', file, '--port', '0']);
  assert.is((await p.exited).code, 1);
  assert.ok(p.stderr.includes(file), p.stderr);
  assert.not.match(p.stderr, /\n\s+at /);
});

runSuites(...suites, files);
