// The README cannot go stale: every sh block of its walkthrough runs here, in
// order, in one bash session against a real server and agent; and every flag
// each program's --help prints is documented in its README table.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KeelClient } from '../lib/cli/client.ts';
import { SUBCOMMANDS } from '../lib/cli/commands.ts';
import { KEEL_USAGE } from '../lib/cli/usage.ts';
import { parseAgentConfig } from '../lib/agent/config.ts';
import { call } from './support/http.ts';
import { AGENT_USAGE_FLAGS, SERVER_USAGE_FLAGS } from './support/usage.ts';
import { cleanup, ROOT, startAgent, startServer, tempDir } from './support/processes.ts';

// stdin from /dev/null, not node's socketpair: bash given a socket for stdin
// at shell level 1 thinks sshd started it and sources /etc/bash.bashrc, which
// fails under -u (PS1 unbound) when the tests run outside another shell.
const SHELL_STDIO: ['ignore', 'pipe', 'pipe'] = ['ignore', 'pipe', 'pipe'];

const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const test = suite('README');
test.after(cleanup);

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has no "## ${title}" section`);
  const end = readme.indexOf('\n## ', start + 4);
  return readme.slice(start, end < 0 ? undefined : end);
}

function shBlocks(text: string): string[] {
  return [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

test('the two commands: install+run and install+test', () => {
  const blocks = shBlocks(section('Quick start')).map((b) => b.trim());
  assert.ok(blocks.includes('npm ci && (npm start & npm run agent & wait)'), 'install+run command');
  assert.ok(blocks.includes('npm ci && npm test'), 'install+test command');
  const scripts = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts;
  assert.is(scripts.start, 'node --import tsx server.ts');
  assert.is(scripts.agent, 'node --import tsx agent.ts');
});

test('the curl walkthrough runs as written', async () => {
  const server = await startServer(tempDir());
  startAgent(server.url, tempDir());
  const hostPort = new URL(server.url).host;
  const script = shBlocks(section('Walkthrough with curl'))
    .join('\n')
    .replaceAll('localhost:3000', hostPort)
    .replaceAll('127.0.0.1:3000', hostPort);
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { stdio: SHELL_STDIO, encoding: 'utf8', timeout: 60_000 });
  assert.is(run.status, 0, `walkthrough failed:\n${run.stdout}\n${run.stderr}`);
  const out = run.stdout;
  // What each step promises, as the reader will see it.
  assert.match(out, /"status":"COMPLETED".*"result":\{"ok":true,"tookMs":\d+\}/, 'the DELAY completes');
  assert.match(out, /"events":\[\{"seq":1,"event":"submit"/, 'events, oldest first');
  const keyed = [...out.matchAll(/\{"commandId":"([0-9a-f-]{36})"\}/g)].map((m) => m[1]);
  assert.ok(keyed.length >= 3 && keyed.at(-1) === keyed.at(-2), 'the same Idempotency-Key gives the same id');
  assert.match(out, /"status":"FAILED".*"error":"CANCELED"/, 'the canceled command is FAILED CANCELED');
  assert.match(out, /"agents":\[\{"id":"[^"]+","status":"online"/, 'the agent is online');
  assert.match(out, /keel_commands\{state="COMPLETED"\} \d+/, 'metrics');
  assert.match(out, /\{"error":"payload.ms must be an integer from 0 to 86400000","field":"payload.ms"\}/, 'bad input names the field');
});

test('the retries, scheduling and priorities examples run as written', async () => {
  const server = await startServer(tempDir());
  startAgent(server.url, tempDir(), ['--concurrency', '4']);
  const hostPort = new URL(server.url).host;
  const script = shBlocks(section('Retries, scheduling and priorities'))
    .join('\n')
    .replaceAll('localhost:3000', hostPort)
    .replaceAll('127.0.0.1:3000', hostPort);
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { stdio: SHELL_STDIO, encoding: 'utf8', timeout: 60_000 });
  assert.is(run.status, 0, `examples failed:\n${run.stdout}\n${run.stderr}`);
  const out = run.stdout;
  const view = (id: string, rest: string): RegExp => new RegExp(`"id":"${id}","type":"[A-Z_]+","payload":\\{[^}]*\\}(,"status":"${rest})`);
  // The scheduled one: PENDING (SCHEDULED, with runAt) at first, COMPLETED once due.
  const later = /"id":"([0-9a-f-]{36})","type":"DELAY","payload":\{"ms":10\},"status":"PENDING","state":"SCHEDULED"[^]*?"runAt":"\d{4}-/.exec(out);
  assert.ok(later, `no SCHEDULED command shown:\n${out}`);
  assert.match(out, view(later[1]!, 'COMPLETED'), 'the scheduled command completes once due');
  // The one scheduled 300 days ahead is canceled.
  assert.match(out, /"status":"FAILED","state":"FAILED","result":\{"error":"CANCELED"\}[^]*?"runAt":"\d{4}-/, 'the far-off command is canceled');
  // Keel's own 404, retried twice, then FAILED for good with three attempts.
  const flaky = /"id":"([0-9a-f-]{36})","type":"HTTP_GET_JSON","payload":\{"url":"[^"]+\/no-such-page","expectStatus":"2xx"\},"status":"FAILED"/.exec(out);
  assert.ok(flaky, `the 404 command did not end FAILED:\n${out}`);
  const v = (await call(server.url, 'GET', `/commands/${flaky[1]}`)).body;
  assert.equal([v.error, v.attempts.map((a: { error: string }) => a.error)], ['HTTP_STATUS_404', ['HTTP_STATUS_404', 'HTTP_STATUS_404', 'HTTP_STATUS_404']]);
  const rerun = (await call(server.url, 'GET', '/commands?type=HTTP_GET_JSON&limit=10')).body.commands.filter((c: { retryOf: string }) => c.retryOf === flaky[1]);
  assert.is(rerun.length, 1, 'POST /commands/:id/retry made one new command naming the original');
  assert.match(out, /"payload":\{"ms":60000\},"status":"FAILED","state":"FAILED"[^]*?"error":"TIMEOUT"/, 'the slow one times out');
  assert.match(out, /\{"commands":\[\{"id":"[0-9a-f-]{36}","type":"HTTP_GET_JSON"/, 'the list filters by type');
  assert.match(out, /\{"error":"retry.attempts must be an integer from 1 to 100","field":"retry.attempts"\}/, 'a bad option names the field');
});

for (const [title, flags] of [['Server flags', SERVER_USAGE_FLAGS], ['Agent flags', AGENT_USAGE_FLAGS]] as const) {
  test(`every flag in --help is in the README's "${title}" table`, () => {
    const table = section(title);
    for (const flag of flags) assert.ok(table.includes(`\`${flag}`), `${flag} is not documented under "${title}"`);
  });
}

test('"Scaling out": the agent given two servers is a command line the agent takes, and lists both', () => {
  const line = shBlocks(section('Scaling out')).flatMap((b) => b.split('\n')).find((l) => l.startsWith('node --import tsx agent.ts '));
  assert.ok(line, 'no agent command line under "Scaling out"');
  // The token file is the reader's; the rest parses as written.
  const args = line.split(/\s+/).slice(4).filter((a, i, all) => a !== '--token-file' && all[i - 1] !== '--token-file');
  assert.equal(parseAgentConfig(args, {}).servers, ['https://keel-a.internal:3000', 'https://keel-b.internal:3000']);
});

test('"Scaling out": the CLI given two servers is a command line the CLI takes, and lists both', () => {
  const line = shBlocks(section('Scaling out')).flatMap((b) => b.split('\n')).find((l) => l.startsWith('npx keel --server '));
  assert.ok(line, 'no CLI command line under "Scaling out"');
  const [, , , servers, sub] = line.split(/\s+/);
  assert.ok(sub !== undefined && sub in SUBCOMMANDS, `keel has no subcommand ${sub}`);
  assert.equal(new KeelClient({ server: servers!, token: undefined, caFile: undefined }).servers, ['https://keel-a.internal:3000', 'https://keel-b.internal:3000']);
});

/** A `### title` part of a section. */
function part(text: string, title: string): string {
  const start = text.indexOf(`\n### ${title}\n`);
  assert.ok(start >= 0, `README has no "### ${title}"`);
  const end = text.indexOf('\n### ', start + 5);
  return text.slice(start, end < 0 ? undefined : end);
}

const cliPart = (): string => part(section('Operating keel'), 'The `keel` CLI');

test('keel --help and every command\'s --help are in the README, as printed', () => {
  const cli = cliPart();
  const usages: Array<[string, string]> = [['keel --help', KEEL_USAGE], ...Object.entries(SUBCOMMANDS).map(([name, sub]): [string, string] => [`keel ${name} --help`, sub.usage])];
  for (const [what, usage] of usages) {
    assert.ok(cli.includes(`\`${what}\`:\n\n\`\`\`text\n${usage}\`\`\``), `the README does not show ${what} as it prints`);
  }
});

test('the CLI examples run as written', async () => {
  const server = await startServer(tempDir());
  startAgent(server.url, tempDir());
  const hostPort = new URL(server.url).host;
  const script = shBlocks(cliPart()).join('\n').replaceAll('127.0.0.1:3000', hostPort);
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { stdio: SHELL_STDIO, cwd: ROOT, encoding: 'utf8', timeout: 90_000, env: { ...process.env, KEEL_SERVER: server.url } });
  assert.is(run.status, 0, `CLI examples failed:\n${run.stdout}\n${run.stderr}`);
  const out = run.stdout;
  assert.match(out, /^status +COMPLETED$/m, 'submit --wait shows the outcome');
  assert.match(out, /^SEQ +EVENT +FROM +TO/m, 'events');
  assert.match(out, /^ID +TYPE +STATUS +AGE +AGENT +OUTCOME$/m, 'ls');
  assert.match(out, /^\S+ +online /m, 'agents');
  assert.match(out, /^last minute +\d+ completed/m, 'stats');
  assert.match(out, /: cancel requested, its agent aborts it$|canceled: FAILED CANCELED$/m, 'cancel');
  assert.match(out, /^error +CANCELED$/m, 'the canceled command');
  assert.match(out, /^exit 1$/m, 'wait on a FAILED command exits 1');
  assert.is(run.stderr, '', 'nothing on stderr');
});

test.run();
