// The keel CLI as a user meets it: the real bin in a child process against a
// real server and agent. Every subcommand, its plain and --json output, and
// the documented exit codes (0 ok or COMPLETED, 1 FAILED or refused, 2 usage,
// 3 unreachable or token refused, 4 wait timed out).
import { spawn } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandEventView, CommandView } from '../lib/protocol.ts';
import { SUBCOMMANDS } from '../lib/cli/commands.ts';
import { KEEL_USAGE } from '../lib/cli/usage.ts';
import { refusedPort } from './fixtures/agent-target.ts';
import { KEEL_BIN, keel, KeelProc, stopKeels, type KeelRun } from './support/keel-cli.ts';
import { cleanup, ROOT, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { call, submit, UUID_RE } from './support/server-harness.ts';
import { makePki } from './support/tls-certs.ts';

const test = suite('keel CLI');
let server: ServerHandle;
let env: NodeJS.ProcessEnv;

test.before(async () => {
  server = await startServer(tempDir());
  startAgent(server.url, tempDir(), ['--concurrency', '4']);
  env = { KEEL_SERVER: server.url };
});
test.after(async () => {
  stopKeels();
  await cleanup();
});

/** An error ends the CLI with one line on stderr and nothing that looks like a stack. */
function oneLine(r: KeelRun, pattern: RegExp, what: string): void {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.is(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, pattern, what);
  assert.not.match(r.stderr, /\n\s+at /, `${what}: no stack trace`);
}

/** A command's transitions as the server's JSON route lists them: what the CLI must show. */
async function journaled(id: string): Promise<CommandEventView[]> {
  const r = await call<{ events: CommandEventView[] }>(server.url, 'GET', `/commands/${id}/events`);
  assert.is(r.status, 200);
  return r.body.events;
}

async function submitDelay(ms: number): Promise<string> {
  const r = await keel(['submit', 'DELAY', '--ms', String(ms)], env);
  assert.is(r.code, 0, r.stderr);
  return r.stdout.trim();
}

test('--help, and each subcommand --help, print the usage and exit 0; no command exits 2', async () => {
  const runs = await Promise.all([keel(['--help']), keel([]), ...Object.keys(SUBCOMMANDS).map((name) => keel([name, '--help']))]);
  const [help, bare, ...subs] = runs;
  assert.is(help!.code, 0);
  assert.is(help!.stdout, KEEL_USAGE);
  assert.is(bare!.code, 2);
  assert.is(bare!.stderr, KEEL_USAGE);
  Object.values(SUBCOMMANDS).forEach((sub, i) => {
    assert.is(subs[i]!.code, 0);
    assert.is(subs[i]!.stdout, sub.usage);
  });
});

test('usage errors exit 2 with one line that says what is wrong, and need no server', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['bogus'], /^keel: unknown command "bogus"/],
    [['ls', '--bogus'], /^keel ls: Unknown option '--bogus'/],
    [['get'], /^keel get: missing ID/],
    [['get', 'a', 'b'], /^keel get: unexpected argument "b"/],
    [['ls', '--limit', 'many'], /^keel ls: --limit must be an integer from 1/],
    [['ls', '--status', 'DONE'], /^keel ls: --status must be one of PENDING, RUNNING, COMPLETED, FAILED/],
    [['submit', 'SLEEP'], /^keel submit: TYPE must be one of DELAY, HTTP_GET_JSON/],
    [['submit', 'DELAY'], /^keel submit: DELAY needs --ms N/],
    [['submit', 'DELAY', '--ms', '-1'], /^keel submit: --ms must be an integer \(0 or more\); got "-1"/],
    [['submit', 'HTTP_GET_JSON', '--ms', '5'], /^keel submit: --ms is for DELAY commands/],
    [['submit', 'DELAY', '--payload', '{"ms":'], /^keel submit: --payload must be a JSON object/],
    [['wait', 'x', '--timeout', 'soon'], /^keel wait: --timeout must be a duration/],
    [['ls', '--server', 'ftp://x'], /^keel ls: --server must be an http:\/\/ or https:\/\/ URL/],
  ];
  // A server that is not there: a usage error must be found before any request.
  const nowhere = { KEEL_SERVER: `http://127.0.0.1:${await refusedPort()}` };
  const runs = await Promise.all(cases.map(([args]) => keel(args, nowhere)));
  runs.forEach((r, i) => {
    const [args, pattern] = cases[i]!;
    assert.is(r.code, 2, args.join(' '));
    oneLine(r, pattern, args.join(' '));
    assert.is(r.stdout, '', args.join(' '));
  });
});

test('an unreachable server exits 3 with one line naming it', async () => {
  const url = `http://127.0.0.1:${await refusedPort()}`;
  const [byFlag, byEnv] = await Promise.all([keel(['ls', '--server', url]), keel(['stats'], { KEEL_SERVER: url })]);
  for (const r of [byFlag, byEnv]) {
    assert.is(r.code, 3);
    oneLine(r, new RegExp(`cannot reach the server at ${url}: .*ECONNREFUSED`), 'unreachable');
  }
});

test('a token the server refuses exits 3; the right one (flag or KEEL_TOKEN) works', async () => {
  const guarded = await startServer(tempDir(), ['--token', 'sesame']);
  const [none, wrong, byFlag, byEnv] = await Promise.all([
    keel(['ls', '--server', guarded.url]),
    keel(['ls', '--server', guarded.url, '--token', 'open']),
    keel(['ls', '--server', guarded.url, '--token', 'sesame']),
    keel(['agents', '--server', guarded.url], { KEEL_TOKEN: 'sesame' }),
  ]);
  for (const r of [none, wrong]) {
    assert.is(r.code, 3);
    oneLine(r, /^keel ls: the server refused the token \(401\).*--token or KEEL_TOKEN$/, 'refused');
  }
  assert.is(byFlag.code, 0, byFlag.stderr);
  assert.is(byEnv.code, 0, byEnv.stderr);
  await guarded.proc.kill();
});

test('submit prints the id alone; wait, piped, prints the final command and nothing else, exit 0', async () => {
  const id = await submitDelay(200);
  assert.match(id, UUID_RE);
  const w = await keel(['wait', id], env);
  assert.is(w.code, 0, w.stderr);
  assert.is(w.stderr, '', 'no status line when piped');
  const get = await keel(['get', id], env);
  assert.is(w.stdout, get.stdout, 'wait shows the command as get does');
  assert.match(w.stdout, new RegExp(`^id +${id}\n`));
  assert.match(w.stdout, /^status +COMPLETED$/m);
  assert.match(w.stdout, /^result +\{"ok":true,"tookMs":\d+\}$/m);
});

test('submit --wait exits 1 when the command FAILED, 0 when it COMPLETED', async () => {
  const refused = `http://127.0.0.1:${await refusedPort()}/`;
  const [failed, completed] = await Promise.all([
    keel(['submit', 'HTTP_GET_JSON', '--url', refused, '--wait'], env),
    keel(['submit', 'HTTP_GET_JSON', '--url', `${server.url}/healthz`, '--wait', '--json'], env),
  ]);
  assert.is(failed.code, 1, failed.stderr);
  assert.match(failed.stdout, /^status +FAILED$/m);
  assert.match(failed.stdout, /^error +ECONNREFUSED/m);
  assert.is(completed.code, 0, completed.stderr);
  const view = JSON.parse(completed.stdout) as CommandView;
  assert.is(view.status, 'COMPLETED');
  assert.equal((view.result as { body: unknown }).body, { ok: true });
});

test('--json: submit, get, ls, agents and stats print JSON documents', async () => {
  const s = await keel(['submit', 'DELAY', '--payload', '{"ms":1}', '--json'], env);
  assert.is(s.code, 0, s.stderr);
  const { commandId } = JSON.parse(s.stdout) as { commandId: string };
  assert.match(commandId, UUID_RE);
  assert.is((await keel(['wait', commandId], env)).code, 0);
  const [get, ls, agents, stats] = await Promise.all([
    keel(['get', commandId, '--json'], env),
    keel(['ls', '--json', '--status', 'COMPLETED', '--limit', '500'], env),
    keel(['agents', '--json'], env),
    keel(['stats', '--json'], env),
  ]);
  for (const r of [get, ls, agents, stats]) assert.is(r.code, 0, r.stderr);
  const view = JSON.parse(get.stdout) as CommandView;
  assert.is(view.id, commandId);
  assert.equal(view.payload, { ms: 1 });
  assert.is(view.status, 'COMPLETED');
  const list = JSON.parse(ls.stdout) as { commands: CommandView[] };
  assert.ok(list.commands.some((c) => c.id === commandId));
  assert.ok(list.commands.every((c) => c.status === 'COMPLETED'));
  const a = JSON.parse(agents.stdout) as { agents: Array<{ status: string }> };
  assert.is(a.agents.length, 1);
  assert.is(a.agents[0]!.status, 'online');
  const st = JSON.parse(stats.stdout) as { counts: Record<string, number>; lastMinute: { completed: number }; agents: { online: number } };
  assert.ok(st.counts.COMPLETED! >= 1);
  assert.ok(st.lastMinute.completed >= 1);
  assert.is(st.agents.online, 1);
});

test('ls: an aligned table, newest first, filtered and limited', async () => {
  const ids = [await submitDelay(1), await submitDelay(1), await submitDelay(1)];
  for (const id of ids) assert.is((await keel(['wait', id], env)).code, 0);
  const r = await keel(['ls', '--status', 'COMPLETED', '--limit', '2'], env);
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^ID +TYPE +STATUS +AGE +AGENT +OUTCOME$/);
  assert.is(lines.length, 3, 'header and two rows');
  assert.ok(lines[1]!.startsWith(ids[2]!) && lines[2]!.startsWith(ids[1]!), 'newest first');
  // Aligned: every row has its status where the header has STATUS.
  const at = lines[0]!.indexOf('STATUS');
  for (const l of lines.slice(1)) assert.is(l.slice(at, at + 9), 'COMPLETED');
});

test('wait --timeout exits 4 while it runs; cancel asks its agent to abort; wait then exits 1', async () => {
  const id = await submitDelay(60_000);
  const w = await keel(['wait', id, '--timeout', '300ms'], env);
  assert.is(w.code, 4);
  oneLine(w, new RegExp(`^keel wait: ${id} is not final after 300ms$`), 'timeout');
  assert.is(w.stdout, '');
  const running = await waitForStatus(id, 'RUNNING');
  assert.is(running.status, 'RUNNING');
  const c = await keel(['cancel', id], env);
  assert.is(c.code, 0, c.stderr);
  assert.match(c.stdout, new RegExp(`^${id} is RUNNING on \\S+: cancel requested`));
  const done = await keel(['wait', id, '--json'], env);
  assert.is(done.code, 1);
  const view = JSON.parse(done.stdout) as CommandView;
  assert.is(view.status, 'FAILED');
  assert.is(view.error, 'CANCELED');
});

/** Long-poll through the CLI until the command shows `status`; get's --json says where it is. */
async function waitForStatus(id: string, status: string): Promise<CommandView> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const view = JSON.parse((await keel(['get', id, '--json'], env)).stdout) as CommandView;
    if (view.status === status || Date.now() > deadline) return view;
  }
}

test('refusals exit 1 with the server\'s sentence: an unknown id, cancel of a COMPLETED command', async () => {
  const id = await submitDelay(1);
  assert.is((await keel(['wait', id], env)).code, 0);
  const unknown = '00000000-0000-4000-8000-000000000000';
  const [get, cancel] = await Promise.all([keel(['get', unknown], env), keel(['cancel', id], env)]);
  assert.is(get.code, 1);
  oneLine(get, new RegExp(`^keel get: no command ${unknown}`), 'unknown id');
  assert.is(cancel.code, 1);
  oneLine(cancel, /^keel cancel: cannot cancel: .*\(409\)$/, 'cancel of a final command');
});

test('a request the server calls invalid exits 2 with its sentence, naming the field', async () => {
  const r = await keel(['submit', 'DELAY', '--payload', '{"ms":-1}'], env);
  assert.is(r.code, 2);
  oneLine(r, /^keel submit: payload\.ms must be an integer from 0 to 86400000$/, 'server 400');
});

test('submit --idempotency-key returns the same command twice', async () => {
  const args = ['submit', 'DELAY', '--ms', '1', '--idempotency-key', 'cli-order-7'];
  const a = await keel(args, env);
  const b = await keel(args, env);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.stdout, a.stdout);
  const other = await keel(['submit', 'DELAY', '--ms', '2', '--idempotency-key', 'cli-order-7'], env);
  assert.is(other.code, 1, 'same key, other body: 409');
});

test('submit passes the schedule, priority, timeout and retry options through; get shows them', async () => {
  const s = await keel(['submit', 'DELAY', '--ms', '1', '--delay', '1h', '--priority', '-7', '--timeout', '30s',
    '--attempts', '3', '--backoff', 'fixed', '--retry-delay', '2s', '--max-delay', '1m'], env);
  assert.is(s.code, 0, s.stderr);
  const id = s.stdout.trim();
  const [json, plain] = await Promise.all([keel(['get', id, '--json'], env), keel(['get', id], env)]);
  const view = JSON.parse(json.stdout) as CommandView;
  assert.is(view.state, 'SCHEDULED');
  assert.is(view.status, 'PENDING');
  assert.is(view.priority, -7);
  assert.is(view.timeoutMs, 30_000);
  assert.equal(view.retry, { attempts: 3, backoff: 'fixed', delayMs: 2000, maxDelayMs: 60_000 });
  const due = Date.parse(view.runAt!) - Date.parse(view.createdAt);
  assert.ok(Math.abs(due - 3_600_000) < 1000, `runAt is an hour after it was created (${due} ms)`);
  assert.match(plain.stdout, /^status +PENDING \(SCHEDULED\)$/m);
  assert.match(plain.stdout, /^priority +-7$/m);
  assert.match(plain.stdout, /^retry +3 attempts, fixed backoff from 2s, at most 1m$/m);
  assert.match(plain.stdout, /^timeout +30s$/m);
  assert.match(plain.stdout, new RegExp(`^run at +${view.runAt}$`, 'm'));
  const ls = await keel(['ls', '--status', 'PENDING'], env);
  assert.match(ls.stdout, new RegExp(`^${id} +DELAY +PENDING +\\S+ +due in (59|60)m$`, 'm'), ls.stdout);
  const c = await keel(['cancel', id], env);
  assert.is(c.code, 0, c.stderr);
  assert.is(c.stdout, `${id} canceled: FAILED CANCELED\n`);

  const at = new Date(Math.floor(Date.now() / 1000) * 1000 + 30 * 86_400_000).toISOString();
  const later = (await keel(['submit', 'DELAY', '--ms', '1', '--run-at', at, '--json'], env)).stdout;
  const laterView = JSON.parse((await keel(['get', (JSON.parse(later) as { commandId: string }).commandId, '--json'], env)).stdout) as CommandView;
  assert.is(laterView.runAt, at);
});

test('options the server refuses exit 2 with its sentence naming the field', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--priority', '500'], /^keel submit: priority must be an integer from -100 to 100/],
    [['--attempts', '3', '--backoff', 'linear'], /^keel submit: retry\.backoff must be "exponential" or "fixed"/],
    [['--backoff', 'fixed'], /^keel submit: retry\.attempts is required/],
    [['--run-at', 'tomorrow'], /^keel submit: runAt must be an ISO time/],
    [['--run-at', '2031-01-01T00:00:00Z', '--delay', '1s'], /^keel submit: give runAt or delay, not both/],
    [['--timeout', 'soon'], /^keel submit: timeout must be a duration/],
  ];
  const runs = await Promise.all(cases.map(([args]) => keel(['submit', 'DELAY', '--ms', '1', ...args], env)));
  runs.forEach((r, i) => {
    const what = cases[i]![0].join(' ');
    assert.is(r.code, 2, what);
    oneLine(r, cases[i]![1], what);
  });
});

test('--expect-status goes into the payload; retry runs a final command again as a new one', async () => {
  const [pattern, codes] = await Promise.all([
    keel(['submit', 'HTTP_GET_JSON', '--url', `${server.url}/healthz`, '--expect-status', '2xx', '--wait', '--json'], env),
    keel(['submit', 'HTTP_GET_JSON', '--url', `${server.url}/healthz`, '--expect-status', '200,204', '--wait', '--json'], env),
  ]);
  assert.is(pattern.code, 0, pattern.stderr);
  assert.equal((JSON.parse(pattern.stdout) as CommandView).payload, { url: `${server.url}/healthz`, expectStatus: '2xx' });
  assert.equal((JSON.parse(codes.stdout) as CommandView).payload, { url: `${server.url}/healthz`, expectStatus: [200, 204] });

  const refusedUrl = `http://127.0.0.1:${await refusedPort()}/`;
  const failed = await keel(['submit', 'HTTP_GET_JSON', '--url', refusedUrl, '--wait', '--json'], env);
  assert.is(failed.code, 1, failed.stderr);
  const orig = JSON.parse(failed.stdout) as CommandView;
  const again = await keel(['retry', orig.id, '--wait'], env);
  assert.is(again.code, 1, 'the retry fails the same way');
  assert.match(again.stdout, new RegExp(`^retry of +${orig.id}$`, 'm'));
  assert.match(again.stdout, /^error +ECONNREFUSED/m);
  assert.match(again.stdout, /^attempts +#1 +\S+ +FAILED +ECONNREFUSED/m);

  const keyed = ['retry', orig.id, '--idempotency-key', 'cli-retry-1'];
  const [a, b] = [await keel(keyed, env), await keel(keyed, env)];
  assert.is(a.code, 0, a.stderr);
  assert.match(a.stdout.trim(), UUID_RE);
  assert.is(b.stdout, a.stdout, 'the same key gives the same new command');

  const list = JSON.parse((await keel(['ls', '--type', 'http_get_json', '--json', '--limit', '1000'], env)).stdout) as { commands: CommandView[] };
  assert.ok(list.commands.some((c) => c.id === orig.id));
  assert.ok(list.commands.every((c) => c.type === 'HTTP_GET_JSON'));

  const running = await submitDelay(60_000);
  const refused = await keel(['retry', running], env);
  assert.is(refused.code, 1);
  oneLine(refused, /^keel retry: command is (PENDING|RUNNING); only a COMPLETED or FAILED command can be retried \(409\)$/, 'retry of a live command');
  assert.is((await keel(['cancel', running], env)).code, 0);
});

test('events: the transitions, oldest first, as a table and as JSON', async () => {
  const id = await submitDelay(1);
  assert.is((await keel(['wait', id], env)).code, 0);
  const [plain, json] = await Promise.all([keel(['events', id], env), keel(['events', id, '--json'], env)]);
  assert.is(plain.code, 0, plain.stderr);
  const rows = plain.stdout.trimEnd().split('\n');
  assert.match(rows[0]!, /^SEQ +EVENT +FROM +TO +AT +AGENT +LEASE +ERROR$/);
  const trail = await journaled(id);
  assert.equal(rows.slice(1).map((l) => l.split(/\s+/).slice(0, 4).join(' ')), trail.map((e) => `${e.seq} ${e.event} ${e.from ?? '-'} ${e.to}`));
  assert.is(trail[0]!.event, 'submit');
  assert.is(trail.at(-1)!.to, 'COMPLETED');
  const body = JSON.parse(json.stdout) as { id: string; events: Array<{ seq: number; event: string }> };
  assert.is(body.id, id);
  assert.equal(body.events, trail);
});

test('agents and stats: aligned tables', async () => {
  const [agents, stats] = await Promise.all([keel(['agents'], env), keel(['stats'], env)]);
  assert.is(agents.code, 0, agents.stderr);
  assert.match(agents.stdout, /^ID +STATUS +LAST SEEN +PROTOCOL +TYPES +HOLDS +COMMANDS\n\S+ +online +\d+(ms|s) ago +\d+ +DELAY,HTTP_GET_JSON +\d+/);
  assert.is(stats.code, 0, stats.stderr);
  assert.match(stats.stdout, /^STATUS +COMMANDS +OF WHICH\nPENDING +\d+.*\nRUNNING +\d+.*\nCOMPLETED +[1-9]\d*.*\nFAILED +\d+/);
  assert.match(stats.stdout, /^agents +1 online, 0 offline$/m);
  assert.match(stats.stdout, /^last minute +[1-9]\d* completed, \d+ failed \([\d.]+\/s\)$/m);
});

test('events --follow prints each transition as it happens and ends when the command is final', async () => {
  const id = await submitDelay(1500);
  const [plain, json] = await Promise.all([keel(['events', id, '--follow'], env), keel(['events', id, '--follow', '--json'], env)]);
  assert.is(plain.code, 0, plain.stderr);
  const rows = plain.stdout.trimEnd().split('\n');
  assert.match(rows[0]!, /^SEQ +EVENT/);
  const trail = await journaled(id);
  assert.equal(rows.slice(1).map((l) => l.split(/\s+/)[1]), trail.map((e) => e.event));
  assert.is(json.code, 0, json.stderr);
  const lines = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; event: string; to: string });
  assert.equal(lines, trail);
  assert.is(lines.at(-1)!.to, 'COMPLETED');
});

interface TailLine {
  seq: number;
  event: string;
  data: CommandView;
}
const tailLines = (stdout: string): TailLine[] => stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TailLine);

test('tail --json: every transition once, in seq order, from --since and then live', async () => {
  const before = await submitDelay(1);
  assert.is((await keel(['wait', before], env)).code, 0);
  const tail = new KeelProc(['tail', '--json', '--since', '0'], env);
  const finished = (id: string) => (out: string): boolean => tailLines(out).some((l) => l.data.id === id && l.event === 'finish');
  await tail.waitForOutput(finished(before), 15_000, 'the replayed finish');
  const live = await submitDelay(1);
  await tail.waitForOutput(finished(live), 15_000, 'the live finish');
  await tail.kill();
  const lines = tailLines(tail.stdout);
  const seqs = lines.map((l) => l.seq);
  assert.equal(seqs, [...new Set(seqs)].sort((a, b) => a - b), 'each seq once, rising');
  assert.equal(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'no gap: every journaled transition');
  assert.equal(lines.filter((l) => l.data.id === live).map((l) => l.event), (await journaled(live)).map((e) => e.event));
});

test('tail: filtered by type and status, as aligned lines', async () => {
  const refused = `http://127.0.0.1:${await refusedPort()}/`;
  const failing = (await keel(['submit', 'HTTP_GET_JSON', '--url', refused], env)).stdout.trim();
  const other = await submitDelay(1); // neither its type nor (until it ends) its status passes
  // --since 0 replays what the server holds (all of this run), then goes on live.
  const tail = new KeelProc(['tail', '--type', 'http_get_json', '--status', 'FAILED', '--since', '0'], env);
  await tail.waitForOutput((out) => out.includes(failing), 15_000, 'the failed command');
  await tail.kill();
  const rows = tail.stdout.trimEnd().split('\n');
  assert.match(rows[0]!, /^SEQ +EVENT +ID +TYPE +STATUS +AGENT +DETAIL$/);
  for (const row of rows.slice(1)) assert.match(row, /^\d+ +finish +\S+ +HTTP_GET_JSON +FAILED +\S+ +ECONNREFUSED/);
  assert.ok(rows.some((r) => r.includes(failing)));
  assert.not.ok(tail.stdout.includes(other));
});

test('tail carries on across a server restart, resuming after the last seq it saw', async () => {
  const dir = tempDir();
  const first = await startServer(dir);
  const local = { KEEL_SERVER: first.url };
  // --since 0: whatever it connects after, a new server still holds all of it.
  const tail = new KeelProc(['tail', '--json', '--since', '0'], local);
  const a = (await keel(['submit', 'DELAY', '--ms', '1'], local)).stdout.trim();
  await tail.waitForOutput((out) => out.includes(a), 15_000, 'the first submit');
  await first.proc.kill('SIGTERM');
  const second = await startServer(dir, [], {}, first.port);
  const b = (await keel(['submit', 'DELAY', '--ms', '1'], local)).stdout.trim();
  await tail.waitForOutput((out) => out.includes(b), 20_000, 'the submit after the restart');
  await tail.kill();
  const lines = tailLines(tail.stdout);
  assert.equal(lines.map((l) => [l.seq, l.data.id]), [[1, a], [2, b]]);
  await second.proc.kill();
});

test('wait carries on across a server restart', async () => {
  const dir = tempDir();
  const first = await startServer(dir);
  startAgent(first.url, tempDir());
  const local = { KEEL_SERVER: first.url };
  const id = (await keel(['submit', 'DELAY', '--ms', '60000'], local)).stdout.trim();
  const wait = new KeelProc(['wait', id], local);
  // Piped, wait prints nothing until the end; the server counts its stream.
  await waitForMetric(first.url, /^keel_event_streams 1$/m);
  await first.proc.kill('SIGTERM');
  const second = await startServer(dir, [], {}, first.port);
  assert.is((await keel(['cancel', id], local)).code, 0);
  const r = await wait.done;
  assert.is(r.code, 1, r.stderr);
  assert.is(r.stderr, '');
  assert.match(r.stdout, /^error +CANCELED$/m);
  await second.proc.kill();
});

/** Poll /metrics until it matches: for a server-side count that has no event to await. */
async function waitForMetric(url: string, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(await (await fetch(`${url}/metrics`)).text())) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} in ${url}/metrics within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a reader that goes away (tail | head -n 1) ends tail quietly, exit 0', async () => {
  // Its own process group, so that whatever happens the whole pipeline can be stopped.
  const pipeline = spawn('bash', ['-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(KEEL_BIN)} tail --json --since 0 | head -n 1; echo "tail exited \${PIPESTATUS[0]}" >&2`], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  pipeline.stdout.on('data', (d: Buffer) => (out += d));
  pipeline.stderr.on('data', (d: Buffer) => (err += d));
  let ended = false;
  const closed = new Promise<void>((resolve) => pipeline.on('close', () => ((ended = true), resolve())));
  try {
    // --since 0 gives head its line at once; tail then meets the closed pipe
    // at its next write, which the next transition brings.
    const deadline = Date.now() + 30_000;
    while (!ended) {
      assert.ok(Date.now() < deadline, `tail still running:\n${out}\n${err}`);
      await Promise.race([submit(server.url), closed]);
      await Promise.race([new Promise((r) => setTimeout(r, 50)), closed]);
    }
    assert.is(out.trimEnd().split('\n').length, 1);
    assert.is(err, 'tail exited 0\n', 'no stack trace, exit 0');
  } finally {
    if (!ended) process.kill(-pipeline.pid!, 'SIGKILL');
  }
});

test('wait on a terminal shows a live status line on stderr, then the command', async () => {
  const id = await submitDelay(60_000);
  // script(1) gives the CLI a pseudo-terminal.
  const child = spawn('script', ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(KEEL_BIN)} wait ${id}`, '/dev/null'], {
    cwd: ROOT,
    env: { ...process.env, ...env, COLUMNS: '200' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const statusLine = new RegExp(`\\r\\x1b\\[2K\\d+\\.\\ds  ${id} (PENDING|RUNNING)`);
  const shown = new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      if (statusLine.test(out)) resolve();
    });
  });
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  const limit = setTimeout(() => child.kill('SIGKILL'), 120_000);
  void closed.then(() => clearTimeout(limit));
  await Promise.race([shown, closed]);
  assert.match(out, statusLine, 'a status line while it runs');
  assert.is((await keel(['cancel', id], env)).code, 0);
  assert.is(await closed, 1, 'FAILED (canceled)');
  assert.match(out, /\r\x1b\[2Kid +\S+\r?\n/, 'cleared before the command is printed');
  assert.match(out, /status +FAILED/);
});

test('over HTTPS with --ca: submit, wait and a followed stream work; without the CA, exit 3 saying to pass --ca', async () => {
  const pki = makePki();
  const other = makePki('other');
  const tls = await startServer(tempDir(), ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey]);
  assert.match(tls.url, /^https:/);
  startAgent(tls.url, tempDir(), ['--ca', pki.caCert]);
  const local = { KEEL_SERVER: tls.url };
  const done = await keel(['submit', 'DELAY', '--ms', '1', '--wait', '--ca', pki.caCert], local);
  assert.is(done.code, 0, done.stderr);
  const id = /^id +(\S+)$/m.exec(done.stdout)![1]!;
  const [follow, untrusted, wrongCa, noFile] = await Promise.all([
    keel(['events', id, '--follow', '--json', '--ca', pki.caCert], local),
    keel(['ls'], local),
    keel(['ls', '--ca', other.caCert], local),
    keel(['ls', '--ca', `${pki.dir}/missing.pem`], local),
  ]);
  assert.is(follow.code, 0, follow.stderr);
  const listed = JSON.parse((await keel(['events', id, '--json', '--ca', pki.caCert], local)).stdout) as { events: CommandEventView[] };
  assert.equal(follow.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as CommandEventView), listed.events);
  for (const r of [untrusted, wrongCa]) {
    assert.is(r.code, 3);
    oneLine(r, /^keel ls: https:\/\/\S+ has a certificate this CLI does not trust \(\w+\); pass --ca FILE/, 'untrusted certificate');
  }
  assert.is(noFile.code, 2);
  oneLine(noFile, /^keel ls: cannot read --ca \S+missing\.pem: ENOENT$/, 'missing --ca file');
  await tls.proc.kill();
});

test('with separate roles, the agent token is refused (403, exit 3) and the client token works', async () => {
  const roles = await startServer(tempDir(), ['--client-token', 'for-people', '--agent-token', 'for-agents']);
  const local = { KEEL_SERVER: roles.url };
  const [agentToken, clientToken] = await Promise.all([
    keel(['submit', 'DELAY', '--ms', '1', '--token', 'for-agents'], local),
    keel(['submit', 'DELAY', '--ms', '1'], { ...local, KEEL_TOKEN: 'for-people' }),
  ]);
  assert.is(agentToken.code, 3);
  oneLine(agentToken, /^keel submit: the server refused the token \(403\)/, 'agent token');
  assert.is(clientToken.code, 0, clientToken.stderr);
  await roles.proc.kill();
});

test.run();
