// --repair keeps a copy of what it cuts, and a crash anywhere in the repair
// leaves a directory that the next start (with --repair again) settles:
// the same commands survive, and every copy of the damaged file is kept.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call } from './support/http.ts';
import { cleanup, Proc, startServer, tempDir } from './support/processes.ts';

const test = suite('repair: copies and crashes');
test.after(cleanup);

/** A state directory of three commands whose second journal record is damaged (not the tail). */
async function damagedDir(): Promise<{ dir: string; file: string; damaged: Buffer }> {
  const dir = tempDir();
  const server = await startServer(dir);
  for (let i = 0; i < 3; i++) await call(server.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: i } });
  await server.proc.kill('SIGKILL');
  const file = path.join(dir, fs.readdirSync(dir).find((f) => f.startsWith('journal-'))!);
  const buf = fs.readFileSync(file);
  const second = buf.indexOf('\n', buf.indexOf('\n') + 1) + 1;
  buf[second + 20] = buf[second + 20]! ^ 0x01;
  fs.writeFileSync(file, buf);
  return { dir, file, damaged: buf };
}

async function commandsAfterRepair(dir: string): Promise<{ proc: Proc; count: number }> {
  const proc = new Proc('server', ['server.ts', '--state-dir', dir, '--port', '0', '--repair']);
  const up = await proc.waitForMsg('listening');
  const list = await call(String(up.url), 'GET', '/commands');
  await proc.kill('SIGTERM');
  return { proc, count: list.body.commands.length };
}

for (const point of ['repair:copied', 'repair:cut']) {
  test(`SIGKILL at ${point}, then --repair again: one command left, the damaged bytes kept`, async () => {
    const { dir, file, damaged } = await damagedDir();
    const crashed = new Proc('server', ['server.ts', '--state-dir', dir, '--port', '0', '--repair'], { KEEL_CRASH_AT: point });
    assert.is((await crashed.exited).signal, 'SIGKILL', crashed.stderr);
    assert.ok(crashed.stderr.includes(`"point":"${point}"`), crashed.stderr);

    const { proc, count } = await commandsAfterRepair(dir);
    assert.is(count, 1);
    assert.equal(fs.readFileSync(`${file}.broken`), damaged, 'the first copy holds the damaged file as it was');
    const cut = proc.lines.find((l) => l.msg === 'journal: repaired by cutting');
    if (point === 'repair:copied') {
      // Nothing was cut yet: the second repair cuts, keeping a second copy.
      assert.equal(cut?.keptCopies, [`${file}.broken.1`]);
      assert.equal(fs.readFileSync(`${file}.broken.1`), damaged);
    } else {
      assert.is(cut, undefined, 'the journal was already cut');
    }
  });
}

test.run();
