// The short chaos run that is part of npm test: about 20 s of load with the
// server and agents SIGKILLed at random. Longer runs: npm run chaos.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanup, Proc } from './support/processes.ts';

const test = suite('chaos');
test.after(cleanup);

test('20 s of random SIGKILLs: nothing lost, nothing run twice, all final, no status regression', async () => {
  const run = new Proc('chaos', ['tests/chaos.ts', '--duration', '20s', '--agents', '3', '--seed', '42']);
  const { code } = await run.exited;
  const json = run.stdout.slice(run.stdout.indexOf('{'));
  const report = JSON.parse(json);
  assert.is(code, 0, `chaos failed:\n${run.stdout}\n${run.stderr.slice(-4000)}`);
  assert.ok(report.submitted > 50, `too little load to prove anything: ${json}`);
  assert.ok(report.kills.server + report.kills.agent >= 3, `too few kills to prove anything: ${json}`);
  for (const k of ['lost', 'executedTwice', 'notFinal', 'statusRegressions']) assert.is(report[k], 0, `${k}: ${json}`);
});

test.run();
