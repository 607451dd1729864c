// Retries, expectStatus and timeouts with real processes: a server and an
// agent under tsx, a local HTTP target on 127.0.0.1. Each test awaits the
// command's final state (?wait=), never a sleep. The server runs on the file
// store and on PostgreSQL (support/stores.ts).
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandView, HttpGetJsonResult } from '../lib/protocol.ts';
import { startTarget, type Target } from './fixtures/agent-target.ts';
import { call } from './support/http.ts';
import { cleanup, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { runSuites, STORES } from './support/stores.ts';

let target: Target;
let server: ServerHandle;

async function submitAndWait(body: unknown): Promise<CommandView> {
  const r = await call(server.url, 'POST', '/commands', body);
  assert.is(r.status, 201, r.text);
  const v = await call(server.url, 'GET', `/commands/${r.body.commandId}?wait=60s`);
  assert.is(v.status, 200);
  return v.body;
}

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const test = suite(store.label('retries and timeouts, real processes'));
  test.before(async () => {
    target = await startTarget();
    server = await startServer(tempDir(), ['--lease-timeout', '10s', ...(await store.serverArgs())]);
    startAgent(server.url, tempDir(), ['--id', 'retry-agent', '--concurrency', '4']);
  });
  test.after(async () => {
    await cleanup();
    await target.close();
  });

  test('attempts: 3 against a target that fails twice, then answers 200: COMPLETED on attempt 3, after the backoff', async () => {
    const path = '/flaky/2?three-attempts';
    const v = await submitAndWait({
      type: 'HTTP_GET_JSON',
      payload: { url: target.url + path, expectStatus: '2xx' },
      retry: { attempts: 3, backoff: 'exponential', delay: '300ms' },
    });
    assert.is(v.status, 'COMPLETED', JSON.stringify(v));
    assert.is((v.result as HttpGetJsonResult).status, 200);
    assert.equal(v.attempts.map((a) => [a.number, a.agentId, a.outcome, a.error]), [
      [1, 'retry-agent', 'FAILED', 'HTTP_STATUS_503'],
      [2, 'retry-agent', 'FAILED', 'HTTP_STATUS_503'],
      [3, 'retry-agent', 'COMPLETED', null],
    ]);
    assert.is(target.hits(path), 3);
    // Equal jitter: at least half the delay, which doubles: 150 ms, then 300 ms.
    const gap = (i: number): number => Date.parse(v.attempts[i]!.startedAt) - Date.parse(v.attempts[i - 1]!.finishedAt!);
    assert.ok(gap(1) >= 150, `first backoff ${gap(1)} ms`);
    assert.ok(gap(2) >= 300, `second backoff ${gap(2)} ms`);
    const events = (await call(server.url, 'GET', `/commands/${v.id}/events`)).body.events.map((e: { event: string; to: string }) => `${e.event}:${e.to}`);
    assert.equal(events.filter((e: string) => e === 'finish:RETRY_WAIT' || e === 'due:PENDING'), ['finish:RETRY_WAIT', 'due:PENDING', 'finish:RETRY_WAIT', 'due:PENDING']);
  });

  test('with no backoff at all the same agent takes the next attempt while the last is still being reported, and it completes', async () => {
    const path = '/flaky/2?no-backoff';
    const v = await submitAndWait({ type: 'HTTP_GET_JSON', payload: { url: target.url + path, expectStatus: '2xx' }, retry: { attempts: 3, backoff: 'fixed', delay: '0ms' } });
    assert.is(v.status, 'COMPLETED', JSON.stringify(v));
    assert.equal(v.attempts.map((a) => a.outcome), ['FAILED', 'FAILED', 'COMPLETED']);
    assert.is(target.hits(path), 3);
  });

  test('without retry, a status outside expectStatus fails it once with its code; without expectStatus a 503 completes it', async () => {
    const failed = await submitAndWait({ type: 'HTTP_GET_JSON', payload: { url: `${target.url}/flaky/5?once`, expectStatus: [200, 204] } });
    assert.equal([failed.status, failed.error, (failed.result as HttpGetJsonResult).status, failed.attempts.length], ['FAILED', 'HTTP_STATUS_503', 503, 1]);
    assert.is(target.hits('/flaky/5?once'), 1);
    const plain = await submitAndWait({ type: 'HTTP_GET_JSON', payload: { url: `${target.url}/flaky/5?plain` } });
    assert.equal([plain.status, (plain.result as HttpGetJsonResult).status], ['COMPLETED', 503]);
  });

  test('the agent aborts an attempt at its timeout and reports FAILED TIMEOUT; with attempts left it runs again', async () => {
    const once = await submitAndWait({ type: 'DELAY', payload: { ms: 60_000 }, timeout: '300ms' });
    assert.equal([once.status, once.error, once.attempts.length], ['FAILED', 'TIMEOUT', 1]);
    const trail = (await call(server.url, 'GET', `/commands/${once.id}/events`)).body.events.map((e: { event: string }) => e.event);
    assert.is(trail.at(-1), 'finish', 'the agent reported it, not the server backstop');

    const path = '/slow?timed-out-twice';
    const twice = await submitAndWait({ type: 'HTTP_GET_JSON', payload: { url: target.url + path }, timeout: '300ms', retry: { attempts: 2, delay: '50ms' } });
    assert.equal([twice.status, twice.error], ['FAILED', 'TIMEOUT']);
    assert.equal(twice.attempts.map((a) => [a.outcome, a.error]), [['FAILED', 'TIMEOUT'], ['FAILED', 'TIMEOUT']]);
    assert.is(target.hits(path), 2, 'a retried command may reach the remote once per attempt');
  });

  suites.push(test);
}

runSuites(...suites);
