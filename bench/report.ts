// One result line per measured figure, so `npm run bench` (bench/all.ts) can
// gather every bench's figures into one table. A bench prints as it likes;
// under BENCH_JSON=1 it also ends with `BENCH_JSON {"bench","rows"}`.

export interface BenchRow {
  metric: string;
  value: string;
  goal?: string;
}

const rows: BenchRow[] = [];

export function result(metric: string, value: string, goal?: string): void {
  rows.push(goal === undefined ? { metric, value } : { metric, value, goal });
}

export function emitResults(bench: string): void {
  if (process.env.BENCH_JSON) console.log(`BENCH_JSON ${JSON.stringify({ bench, rows })}`);
}
