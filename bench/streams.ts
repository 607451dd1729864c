// Event-stream benchmark (npm run bench:streams):
//  1. What a transition costs the server for the streams: EventHub.publish
//     with no stream open (a ring slot and a size estimate) and with one
//     (the command's view as JSON, written once and shared), CPU ns each.
//  2. End to end: server.ts as a child process takes `commands` DELAY
//     submits through POST /commands/batch (1,000 a batch, 4 batches in
//     flight) with 0, 1 and 4 readers on GET /events in this process; the
//     submit rate, and how long after the last submit was acknowledged each
//     reader had every submit event.
//   node --import tsx bench/streams.ts [--commands 20000]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { EventHub } from '../lib/server/event-hub.ts';
import { CommandStore } from '../state/command-store.ts';
import { cpuSeconds, startServer } from './children.ts';
import { emitResults, result } from './report.ts';

const { values } = parseArgs({ options: { commands: { type: 'string', default: '20000' } } });
const COMMANDS = Number(values.commands);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-streams-'));
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const print = (label: string, value: string): void => console.log(`${label.padEnd(52)} ${value}`);

// --- 1. publish cost -----------------------------------------------------------

async function finishedCommand() {
  const store = await CommandStore.open(path.join(root, 'store'), { noLock: true });
  const sub = await store.submit({ type: 'DELAY', payload: { ms: 5 } });
  const [c] = await store.claim('agent-1', 1);
  await store.start('agent-1', sub.id, c!.attempt);
  await store.finish('agent-1', sub.id, c!.attempt, 'COMPLETED', { ok: true, tookMs: 5 }, null);
  const cmd = store.get(sub.id)!;
  await store.close();
  return cmd;
}

function cpuNsPer(n: number, f: () => void): number {
  const t = process.cpuUsage();
  f();
  const d = process.cpuUsage(t);
  return ((d.user + d.system) * 1000) / n;
}

const cmd = await finishedCommand();
const N = 200_000;
for (const readers of [0, 1]) {
  const runs = [0, 1, 2].map(() => cpuNsPer(N, () => {
    const hub = new EventHub(0);
    let bytes = 0;
    for (let i = 0; i < readers; i++) hub.subscribe((e) => (bytes += e.frame.length));
    for (let seq = 1; seq <= N; seq++) hub.publish(cmd, 'finish', seq);
  })).sort((a, b) => a - b);
  const label = `publish, ${readers} stream${readers === 1 ? '' : 's'} open (CPU per transition)`;
  print(label, `${fmt(runs[1]!)} ns (runs ${runs.map(fmt).join(', ')})`);
  result(`streams: ${label}`, `${fmt(runs[1]!)} ns`);
}

// --- 2. end to end ---------------------------------------------------------------

async function reader(url: string, want: number): Promise<() => Promise<number>> {
  const res = await fetch(`${url}/events?type=DELAY`);
  const it = (res.body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  const decoder = new TextDecoder();
  let seen = 0;
  let carry = '';
  const done = (async () => {
    while (seen < want) {
      const { value, done: end } = await it.next();
      if (end) throw new Error(`stream ended after ${seen} events`);
      const text = carry + decoder.decode(value, { stream: true });
      let i = 0;
      for (let j = text.indexOf('event: submit\n', i); j >= 0; j = text.indexOf('event: submit\n', i)) {
        seen++;
        i = j + 14;
      }
      carry = text.slice(Math.max(i, text.length - 13));
    }
    const at = performance.now();
    await it.return?.();
    return at;
  })();
  return () => done;
}

async function run(readers: number): Promise<void> {
  const { child, url } = await startServer(path.join(root, `server-${readers}`));
  const waits = await Promise.all(Array.from({ length: readers }, () => reader(url, COMMANDS)));
  const body = JSON.stringify({ commands: Array.from({ length: 1000 }, () => ({ type: 'DELAY', payload: { ms: 1 } })) });
  const cpu0 = cpuSeconds(child.pid);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < COMMANDS) {
      next += 1000;
      const r = await fetch(`${url}/commands/batch`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      if (r.status !== 201) throw new Error(`batch answered ${r.status}: ${await r.text()}`);
      await r.arrayBuffer();
    }
  }));
  const acked = performance.now();
  const lags = (await Promise.all(waits.map((w) => w()))).map((at) => Math.max(0, at - acked));
  const cpu = cpuSeconds(child.pid) - cpu0;
  const rate = (COMMANDS / (acked - t0)) * 1000;
  const label = `${fmt(COMMANDS)} batched submits, ${readers} reader${readers === 1 ? '' : 's'} on /events`;
  const lag = readers > 0 ? `, last event ${fmt(Math.max(...lags))} ms after the last ack` : '';
  print(label, `${fmt(rate)}/s, server CPU ${cpu.toFixed(2)} s${lag}`);
  result(`streams: ${label}`, `${fmt(rate)}/s, server CPU ${cpu.toFixed(2)} s${lag}`);
  child.proc.kill('SIGTERM');
  await child.exited;
}

for (const readers of [0, 1, 4]) await run(readers);
fs.rmSync(root, { recursive: true, force: true });
emitResults('streams');
