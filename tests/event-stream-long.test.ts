// A long run of GET /events against real processes: 2,000 commands through a
// server and an agent, the stream dropped and resumed with Last-Event-ID
// halfway, and what the reader saw compared with the journal on disk: every
// transition exactly once, in seq order.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call } from './support/http.ts';
import { journalRecords } from './support/journal-files.ts';
import { fromJournal } from '../state/command-record.ts';
import type { CommandRecord } from '../state/command-table.ts';
import { cleanup, startAgent, startServer, tempDir } from './support/processes.ts';
import { SseReader, type SseFrame } from './support/sse.ts';

const test = suite('event stream, long run');
test.after(cleanup);

const COMMANDS = 2000;

test(`${COMMANDS} commands: every transition once, in seq order, across a resume`, async () => {
  const dir = tempDir();
  const server = await startServer(dir);
  const agent = startAgent(server.url, tempDir(), ['--concurrency', '16']);
  await agent.waitForMsg('agent ready', 30_000);

  const seen: SseFrame[] = [];
  let reader = await SseReader.open(`${server.url}/events`);
  const submitting = (async () => {
    for (let i = 0; i < COMMANDS; i += 100) {
      await Promise.all(Array.from({ length: 100 }, async () => {
        const r = await call(server.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 0 } });
        assert.is(r.status, 201, r.text);
      }));
    }
  })();

  let finished = 0;
  let resumed = false;
  while (finished < COMMANDS) {
    const f = await reader.next(120_000);
    assert.ok(f, 'the stream ended early');
    assert.is.not(f!.event, 'reset', 'the server lost track of a stream it should hold');
    seen.push(f!);
    if (f!.event === 'finish' || f!.event === 'expire') finished++;
    if (!resumed && seen.length === COMMANDS) {
      // Hang up mid-run and come back from the last id read.
      reader.close();
      reader = await SseReader.open(`${server.url}/events`, { 'last-event-id': f!.id! });
      resumed = true;
    }
  }
  reader.close();
  await submitting;

  const journal = journalRecords(dir).map(({ seq, rec }) => ({ seq, rec: fromJournal(rec) as CommandRecord }));
  const fromDisk = journal.map((r) => `${r.seq} ${r.rec.ev.type} ${r.rec.id}`);
  const fromStream = seen.map((f) => `${f.id} ${f.event} ${JSON.parse(f.data).id}`);
  assert.is(fromStream.length, fromDisk.length, 'the stream and the journal hold different numbers of transitions');
  assert.equal(fromStream, fromDisk);
  const finals = new Map<string, number>();
  for (const f of seen) {
    const v = JSON.parse(f.data);
    if (v.status === 'COMPLETED' || v.status === 'FAILED') finals.set(v.id, (finals.get(v.id) ?? 0) + 1);
  }
  assert.is(finals.size, COMMANDS);
  assert.ok([...finals.values()].every((n) => n === 1), 'a command reached a final state twice');
});

test.run();
