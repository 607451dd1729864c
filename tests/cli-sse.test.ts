// The CLI's text/event-stream reader on bytes split anywhere: line endings of
// every kind, comments, multi-line data, ids that carry over, and an event
// cut off by the end of the stream.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readEvents, type SseEvent } from '../lib/cli/sse.ts';

const test = suite('CLI event-stream reader');

async function collect(chunks: Array<string | Uint8Array>): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of readEvents((async function* () { yield* chunks; })())) out.push(e);
  return out;
}

const STREAM = ': keepalive\n\nid: 7\nevent: finish\ndata: {"a":1}\n\ndata: one\ndata: two\n\nevent: reset\ndata: {}\n\n';
const EXPECTED: SseEvent[] = [
  { event: 'finish', data: '{"a":1}', id: '7' },
  { event: 'message', data: 'one\ntwo', id: '7' },
  { event: 'reset', data: '{}', id: '7' },
];

test('whole, and split at every byte', async () => {
  assert.equal(await collect([STREAM]), EXPECTED);
  const bytes = new TextEncoder().encode(STREAM);
  for (let cut = 1; cut < bytes.length; cut++) {
    assert.equal(await collect([bytes.slice(0, cut), bytes.slice(cut)]), EXPECTED, `cut at ${cut}`);
  }
});

test('CRLF and lone CR end lines too, even with the CRLF split across chunks', async () => {
  const crlf = STREAM.replaceAll('\n', '\r\n');
  assert.equal(await collect([crlf]), EXPECTED);
  for (let cut = 1; cut < crlf.length; cut++) assert.equal(await collect([crlf.slice(0, cut), crlf.slice(cut)]), EXPECTED, `crlf cut at ${cut}`);
  assert.equal(await collect([STREAM.replaceAll('\n', '\r')]), EXPECTED);
});

test('a multi-byte character split across chunks survives', async () => {
  const bytes = new TextEncoder().encode('data: "é€"\n\n');
  const at = bytes.indexOf(0xe2) + 1; // inside the euro sign
  assert.equal(await collect([bytes.slice(0, at), bytes.slice(at)]), [{ event: 'message', data: '"é€"', id: '' }]);
});

test('no space after the colon, a field with no colon, and an event cut off by the end', async () => {
  const events = await collect(['event:x\ndata:1\nid\n\n', 'data: lost']);
  assert.equal(events, [{ event: 'x', data: '1', id: '' }]);
});

test.run();
