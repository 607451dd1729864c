// npm run bench: every benchmark in turn, then one table of their figures.
//   npm run bench [-- journal server throughput latency scale restart streams]   (a subset)
// Each bench also runs alone: npm run bench:<name>.
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { BenchRow } from './report.ts';

const ALL = ['journal', 'server', 'throughput', 'latency', 'scale', 'restart', 'streams'];
// Both stores in the same run, so their rows compare (each bench alone measures the file store unless told).
const ARGS: Record<string, string[]> = { throughput: ['--store', 'file,postgres'], latency: ['--store', 'file,postgres'] };
const dir = path.dirname(new URL(import.meta.url).pathname);
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ALL;
const table: Array<BenchRow & { bench: string }> = [];

for (const name of chosen) {
  if (!ALL.includes(name)) {
    process.stderr.write(`unknown bench "${name}"; choose from ${ALL.join(', ')}\n`);
    process.exit(2);
  }
  process.stdout.write(`\n=== bench:${name}\n`);
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(dir, `${name}.ts`), ...(ARGS[name] ?? [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, BENCH_JSON: '1' },
    });
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('BENCH_JSON ')) {
          const { bench, rows } = JSON.parse(line.slice('BENCH_JSON '.length)) as { bench: string; rows: BenchRow[] };
          for (const r of rows) table.push({ bench, ...r });
        } else process.stdout.write(`${line}\n`);
      }
    });
    child.on('close', resolve);
  });
  if (code !== 0) table.push({ bench: name, metric: '(bench failed)', value: `exit ${code}` });
}

const width = (k: keyof BenchRow): number => Math.max(k.length, ...table.map((r) => (r[k] ?? '').length));
const [m, v, g] = [width('metric'), width('value'), width('goal')];
console.log(`\nkeel benchmarks, ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${os.cpus().length} cpus, load average ${os.loadavg()[0]!.toFixed(1)}\n`);
console.log(`| ${'metric'.padEnd(m)} | ${'value'.padEnd(v)} | ${'goal'.padEnd(g)} |`);
console.log(`|${'-'.repeat(m + 2)}|${'-'.repeat(v + 2)}|${'-'.repeat(g + 2)}|`);
for (const r of table) console.log(`| ${r.metric.padEnd(m)} | ${r.value.padEnd(v)} | ${(r.goal ?? '').padEnd(g)} |`);
