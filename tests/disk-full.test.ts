// A full disk, for real: the state directory lives on a 4 MiB tmpfs that the
// test fills. The server stays up read-only (503 disk full for writes, reads
// answered, /readyz 503), writes again by itself once space returns, and
// starts on a full disk in the same mode. The agent stops claiming and keeps
// what it holds.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpGetJsonResult } from '../lib/protocol.ts';
import { about, getCommand, submit, waitFinal } from './fixtures/agent-harness.ts';
import { call, type Reply } from './support/http.ts';
import { cleanup, Proc, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { SmallDisk } from './support/tmpfs.ts';

const test = suite('full disk');
const disks: SmallDisk[] = [];

test.after(async () => {
  await cleanup();
  for (const d of disks) d.remove();
});

function smallDisk(): SmallDisk {
  const d = new SmallDisk(4);
  disks.push(d);
  return d;
}

const DELAY = { type: 'DELAY', payload: { ms: 1 } };
const isDiskFullLine = (l: { msg?: string }): boolean => l.msg?.startsWith('disk full') === true;
const spaceAgain = (l: { msg?: string }): boolean => l.msg === 'disk has space again: writes resumed';

async function expectReadOnly(server: ServerHandle, readable: string[]): Promise<void> {
  const refused = await call(server.url, 'POST', '/commands', DELAY);
  assert.is(refused.status, 503, refused.text);
  assert.is(refused.body.error, 'disk full');
  assert.ok(Number(refused.headers.get('retry-after')) >= 1, 'Retry-After');
  const cancel = await call(server.url, 'POST', `/commands/${readable[0]}/cancel`);
  assert.is(cancel.status, 503, cancel.text);
  for (const id of readable) assert.is((await getCommand(server.url, id)).status, 'PENDING');
  const ready = await call(server.url, 'GET', '/readyz');
  assert.is(ready.status, 503);
  assert.equal(ready.body, { ready: false, reason: 'disk full' });
  assert.match((await call(server.url, 'GET', '/metrics')).text, /^keel_disk_full 1$/m);
}

/**
 * Fill the disk, then submit one at a time until one meets the full disk:
 * that one is not answered (its record waits for space), and the server
 * says why in its log. Returns the ids acknowledged before, and the stuck request.
 */
async function fillUntilStuck(server: ServerHandle, disk: SmallDisk, acked: string[]): Promise<{ answer: Promise<Reply> }> {
  disk.fill();
  const full = server.proc.waitFor(isDiskFullLine, 60_000, 'the disk-full log line');
  for (let i = 0; i < 1000; i++) {
    const sent = call(server.url, 'POST', '/commands', DELAY);
    const r = await Promise.race([sent, full.then(() => undefined)]);
    if (r === undefined) return { answer: sent };
    if (r.status !== 201) assert.unreachable(`submit answered ${r.status} before the disk-full line: ${r.text}`);
    acked.push(r.body.commandId as string);
  }
  throw new Error('no submit met the full disk');
}

test('the server stays up read-only on ENOSPC, resumes once space returns, and starts on a full disk', async () => {
  const disk = smallDisk();
  const stateDir = path.join(disk.dir, 'server');
  let server = await startServer(stateDir);
  const acked = [await submit(server.url, 'DELAY', { ms: 1 })];
  const stuck = (await fillUntilStuck(server, disk, acked)).answer;
  let stuckAnswered = false;
  void stuck.then(() => (stuckAnswered = true));

  await expectReadOnly(server, acked);
  assert.not.ok(stuckAnswered, 'a record that could not be written was acknowledged');

  disk.free();
  await server.proc.waitFor(spaceAgain, 30_000, 'writes resumed');
  const late = await stuck;
  assert.is(late.status, 201, late.text);
  acked.push(late.body.commandId as string);
  assert.is((await call(server.url, 'GET', '/readyz')).status, 200);
  acked.push(await submit(server.url, 'DELAY', { ms: 1 }));

  // A restart on a full disk: up and read-only from the start, nothing acknowledged lost.
  await server.proc.kill('SIGKILL');
  disk.fill();
  server = await startServer(stateDir);
  assert.ok(server.proc.lines.some(isDiskFullLine), 'the start says the disk is full');
  await expectReadOnly(server, acked);
  disk.free();
  await server.proc.waitFor(spaceAgain, 30_000, 'writes resumed after a start on a full disk');
  assert.is((await call(server.url, 'GET', '/readyz')).status, 200);
  await submit(server.url, 'DELAY', { ms: 1 });
  await server.proc.kill('SIGTERM');
});

test('SIGKILL while a write waits for space: the restart finds every acknowledged command and a whole journal', async () => {
  const disk = smallDisk();
  const stateDir = path.join(disk.dir, 'server');
  let server = await startServer(stateDir);
  const acked: string[] = [];
  const { answer } = await fillUntilStuck(server, disk, acked);
  answer.catch(() => {}); // the connection dies with the server
  await server.proc.kill('SIGKILL');
  disk.free();
  server = await startServer(stateDir);
  // A partial write was cut back at once: nothing torn to cut, nothing corrupt.
  assert.not.ok(server.proc.lines.some((l) => String(l.msg).startsWith('journal:')), server.proc.stdout);
  for (const id of acked) assert.is((await getCommand(server.url, id)).status, 'PENDING');
  await submit(server.url, 'DELAY', { ms: 1 });
  await server.proc.kill('SIGTERM');
});

test('a new state directory on a full disk: the start fails with a sentence saying what to do', async () => {
  const disk = smallDisk();
  disk.fill();
  const server = new Proc('server', ['server.ts', '--state-dir', path.join(disk.dir, 'new'), '--port', '0']);
  assert.is((await server.exited).code, 1);
  assert.match(server.stderr, /^keel: disk full: cannot write state directory .*: free some and start again\n$/);
});

/** An HTTP target that holds GET /hold until release(), then answers a body of `bytes`. */
async function holdingTarget(bytes: number) {
  let arrived!: () => void;
  const seen = new Promise<void>((r) => (arrived = r));
  let hits = 0;
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    hits++;
    held.push(res);
    arrived();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hold`,
    seen,
    hits: () => hits,
    release(): void {
      for (const res of held.splice(0)) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ pad: 'y'.repeat(bytes) }));
      }
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Resolves once the server has answered `n` more heartbeats (its /metrics counter). */
async function heartbeats(url: string, n: number): Promise<void> {
  const count = async (): Promise<number> => {
    const m = /keel_http_requests_total\{route="\/agent\/heartbeat",code="200"\} (\d+)/.exec((await call(url, 'GET', '/metrics')).text);
    return Number(m?.[1] ?? 0);
  };
  const from = await count();
  const deadline = Date.now() + 60_000;
  while ((await count()) < from + n) {
    if (Date.now() > deadline) throw new Error(`fewer than ${n} heartbeats in 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the agent on a full disk stops claiming and keeps what it holds; a result still reaches the server', async () => {
  const disk = smallDisk();
  const target = await holdingTarget(40 * 1024); // its `done` record needs fresh pages
  try {
    const server = await startServer(tempDir(), ['--lease-timeout', '2s']);
    const agent = startAgent(server.url, path.join(disk.dir, 'agent'));
    await agent.waitForMsg('agent ready');
    const held = await submit(server.url, 'HTTP_GET_JSON', { url: target.url });
    await target.seen;
    assert.is((await getCommand(server.url, held)).status, 'RUNNING');

    disk.fill();
    target.release();
    await agent.waitFor((l) => l.msg?.startsWith('ledger disk full') === true, 30_000, 'the ledger disk-full line');
    const waiting = await submit(server.url, 'DELAY', { ms: 1 });
    // Longer than the lease timeout, counted in heartbeats: the lease is kept.
    await heartbeats(server.url, 6);
    assert.is(agent.child.exitCode, null, 'the agent is still running');
    // The finish goes out alongside `done`, which waits for space: the server has the result.
    const early = await waitFinal(server.url, held, 30_000);
    assert.is(early.status, 'COMPLETED', `${early.status} ${early.error}`);
    assert.is((await getCommand(server.url, waiting)).status, 'PENDING');

    disk.free();
    const done = await waitFinal(server.url, held, 30_000);
    assert.is(done.status, 'COMPLETED', `${done.status} ${done.error}`);
    assert.is((done.result as HttpGetJsonResult).status, 200);
    assert.is((await waitFinal(server.url, waiting, 30_000)).status, 'COMPLETED');
    assert.is(target.hits(), 1);
    assert.ok(agent.lines.some((l) => l.msg === 'ledger disk has space again: claiming resumes'));
    assert.ok(agent.lines.some(about('reported', held)));
    await agent.kill('SIGTERM');
    await server.proc.kill('SIGTERM');
  } finally {
    await target.close();
  }
});

test.run();
