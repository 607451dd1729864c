// The JSON line logger: lines logged in one tick are written together at
// its end, in order, and none is lost at exit.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../lib/log.ts';
import { cleanup, Proc } from './support/processes.ts';

const test = suite('log');
test.after(cleanup);

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A stream that keeps each write. */
function sink(): { writes: string[]; out: NodeJS.WritableStream } {
  const writes: string[] = [];
  return { writes, out: { write: (s: string) => (writes.push(s), true) } as unknown as NodeJS.WritableStream };
}

test('one JSON line per call, with the base fields, a timestamp and the level', async () => {
  const { writes, out } = sink();
  const log = createLogger({ role: 'server' }, out);
  log('transition', { id: 'c1', state: 'RUNNING' });
  await nextTurn();
  const line = JSON.parse(writes.join(''));
  assert.equal({ ...line, t: undefined }, { t: undefined, level: 'info', msg: 'transition', role: 'server', id: 'c1', state: 'RUNNING' });
  assert.ok(!Number.isNaN(Date.parse(line.t)));
});

test('the lines of one tick are written once, together and in order, at its end', async () => {
  const { writes, out } = sink();
  const log = createLogger({ role: 'agent' }, out);
  log('a');
  log.error('b');
  log('c');
  assert.equal(writes, [], 'nothing written during the tick');
  await nextTurn();
  assert.is(writes.length, 1);
  assert.equal(writes[0]!.trimEnd().split('\n').map((l) => [JSON.parse(l).msg, JSON.parse(l).level]), [['a', 'info'], ['b', 'error'], ['c', 'info']]);
  log('d');
  await nextTurn();
  assert.is(writes.length, 2);
  assert.is(JSON.parse(writes[1]!).msg, 'd');
});

for (const how of ['exit', 'kill'] as const) {
  test(`lines logged just before ${how === 'exit' ? 'process.exit()' : 'flushLogs() and a SIGKILL'} reach stdout`, async () => {
    const p = new Proc('logger', ['tests/fixtures/log-then-exit.ts', how]);
    // 'close': stdout has been read to its end ('exit' may come first).
    const closed = new Promise((resolve) => p.child.once('close', resolve));
    const ended = await p.exited;
    await closed;
    assert.equal(ended, how === 'exit' ? { code: 3, signal: null } : { code: null, signal: 'SIGKILL' });
    assert.equal(p.lines.map((l) => l.msg), ['first', 'second']);
  });
}

test.run();
