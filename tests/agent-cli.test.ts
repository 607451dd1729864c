// agent.ts's command line and identity, without a server: usage, bad flags,
// an id that survives restarts, and a clean exit on SIGTERM while the
// server is unreachable.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import { listSegments } from '../state/journal.ts';
import { Ledger } from '../state/ledger.ts';
import * as assert from 'uvu/assert';
import { refusedPort } from './fixtures/agent-target.ts';
import { cleanup, startAgent, tempDir, Proc } from './support/processes.ts';

const test = suite('agent command line');
test.after(cleanup);

test('--help prints the usage and exits 0', async () => {
  const p = new Proc('agent', ['agent.ts', '--help']);
  const { code } = await p.exited;
  assert.is(code, 0);
  assert.match(p.stdout, /^usage: node --import tsx agent.ts/);
  for (const flag of ['--server', '--state-dir', '--id', '--concurrency', '--token', '--repair', '--kill-after', '--random-failures', '--seed', '--supervise', '--http-timeout', '--max-body']) {
    assert.ok(p.stdout.includes(flag), `usage lacks ${flag}`);
  }
});

const BAD_FLAGS: Array<[string[], RegExp]> = [
  [['--bogus'], /bogus/],
  [['--concurrency', '0'], /--concurrency must be an integer from 1/],
  [['--http-timeout', 'soon'], /--http-timeout must be a duration/],
  [['--max-body', '12 parsecs'], /--max-body must be a size/],
  [['--random-failures=2'], /--random-failures must be a probability/],
  [['--kill-after', 'later'], /--kill-after must be seconds/],
  [['--server', 'ftp://x'], /--server must be an http/],
  [['--server', 'http://127.0.0.1:1,'], /--server must be an http:\/\/ or https:\/\/ URL, or several/],
  [['--server', 'http://127.0.0.1:1,http://127.0.0.1:1'], /--server names the same server twice/],
];

test('bad flags: exit 2, one line naming the flag, then the usage', async () => {
  // One process per case, all at once: each is a full Node start-up.
  await Promise.all(
    BAD_FLAGS.map(async ([args, pattern]) => {
      const p = new Proc('agent', ['agent.ts', ...args]);
      const { code } = await p.exited;
      const what = args.join(' ');
      assert.is(code, 2, what);
      const [first, blank, usage] = p.stderr.split('\n');
      assert.match(first!, /^error: /, what);
      assert.match(first!, pattern, what);
      assert.is(blank, '', what);
      assert.match(usage!, /^usage: /, what);
    }),
  );
});

test('--random-failures=1 dies at the first crash point it reaches, by SIGKILL', async () => {
  const server = `http://127.0.0.1:${await refusedPort()}`;
  const p = startAgent(server, tempDir(), ['--random-failures=1', '--seed', 'fixed']);
  assert.equal(await p.exited, { code: null, signal: 'SIGKILL' });
  assert.match(p.stderr, /"msg":"crash point","point":"journal:written"/); // the identity record
  assert.ok(p.lines.some((l) => l.msg === 'random failures armed' && l.seed === 'fixed'));
});

test('the id is generated once and kept in the ledger; SIGTERM exits 0 with the server down', async () => {
  const server = `http://127.0.0.1:${await refusedPort()}`;
  const dir = tempDir();
  const first = startAgent(server, dir);
  const ready = await first.waitForMsg('agent ready');
  assert.match(String(ready.agentId), /^agent-[0-9a-f]{12}$/);
  await first.waitForMsg('server unreachable; retrying with backoff');
  await first.kill('SIGTERM');
  assert.equal(await first.exited, { code: 0, signal: null });

  const second = startAgent(server, dir);
  assert.is((await second.waitForMsg('agent ready')).agentId, ready.agentId);
  await second.kill('SIGTERM');
  assert.is((await second.exited).code, 0);

  const other = startAgent(server, dir, ['--id', 'someone-else']);
  const { code } = await other.exited;
  assert.is(code, 1);
  assert.match(other.stderr, new RegExp(`belongs to agent ${String(ready.agentId)}, not someone-else`));
});

test('a second agent on the same state directory exits at once', async () => {
  const server = `http://127.0.0.1:${await refusedPort()}`;
  const dir = tempDir();
  const first = startAgent(server, dir, ['--id', 'a1']);
  await first.waitForMsg('agent ready');
  const second = startAgent(server, dir, ['--id', 'a1']);
  const { code } = await second.exited;
  assert.is(code, 1);
  assert.match(second.stderr, /in use by agent pid/);
  await first.kill('SIGTERM');
});

test('a damaged or unknown ledger file stops the agent with one line naming it, not a stack trace', async () => {
  const server = `http://127.0.0.1:${await refusedPort()}`;
  const cases: Array<[string, RegExp]> = [
    ['{"keel":"snapshot","format":1,"machine":"ledger","seq":3}\nnot json\n', /snapshot\.jsonl: damaged snapshot at byte \d+: .*restore the state directory/],
    ['{"keel":"snapshot","format":99,"machine":"ledger","seq":3}\n', /snapshot\.jsonl: snapshot format 99 is not supported: this keel reads formats 1 to \d+\. It was written by a newer keel/],
    ['{"keel":"snapshot","format":1,"machine":"commands","seq":3}\n', /this is a commands snapshot, not ledger\. Is --state-dir pointing at the right directory/],
  ];
  await Promise.all(
    cases.map(async ([bytes, pattern]) => {
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, 'snapshot.jsonl'), bytes);
      const p = startAgent(server, dir);
      assert.is((await p.exited).code, 1);
      const lines = p.stderr.trimEnd().split('\n');
      assert.is(lines.length, 1, p.stderr);
      assert.match(lines[0]!, /^keel: /);
      assert.match(lines[0]!, pattern);
    }),
  );
});

test('a ledger damaged before its last record: the agent refuses to start, naming --repair, which cuts it', async () => {
  const server = `http://127.0.0.1:${await refusedPort()}`;
  const dir = tempDir();
  const ledger = await Ledger.open(dir);
  await ledger.write({ t: 'identity', agentId: 'before-damage' });
  await ledger.close();
  const seg = listSegments(dir).at(-1)!.file;
  const lines = fs.readFileSync(seg, 'utf8').split('\n');
  lines[1] = lines[1]!.replace('before-damage', 'before-dAmage'); // the crc no longer matches
  fs.writeFileSync(seg, `${lines.join('\n')}garbage\n`);

  const refused = startAgent(server, dir);
  assert.is((await refused.exited).code, 1);
  assert.match(refused.stderr, /^keel: .*corrupt journal at byte \d+: .*Start with --repair/);

  const repaired = startAgent(server, dir, ['--repair']);
  const ready = await repaired.waitForMsg('agent ready');
  assert.is.not(ready.agentId, 'before-damage'); // the identity record was cut
  assert.ok(repaired.lines.some((l) => l.msg === 'journal: repaired by cutting'));
  await repaired.kill('SIGTERM');
  assert.is((await repaired.exited).code, 0);
});

test.run();
