// What counting commands costs on the PostgreSQL store with many rows: the
// GROUP BY over keel_commands that /metrics and every --max-pending check
// used to run, against counts() as it is now (keel_counts plus the deltas not
// folded yet, state/pg/schema.ts migration 4). Fills a fresh database with
// --rows commands (most final, as retention keeps them), then times each
// --runs times, alternating, and prints the medians.
//   node --import tsx bench/pg-counts.ts [--rows 1000000] [--runs 9]
import { parseArgs } from 'node:util';
import pg from 'pg';
import { PgStore } from '../state/pg/pg-store.ts';
import { storeArgs, stopStores } from './stores.ts';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '9' } } });
const rows = Number(values.rows);
const runs = Number(values.runs);

const url = (await storeArgs('postgres'))[1]!;
const store = await PgStore.open({ url, leaseTimeoutMs: 60_000 });
const cmd = JSON.stringify({ id: 'x', type: 'DELAY', payload: { ms: 10 }, state: 'COMPLETED', trail: 'submit,P,0;claim-start,R,3,agent-1,1;finish,C,15,agent-1,1', result: { ok: true } });
const t0 = performance.now();
// In chunks of 100,000, on a connection of its own: not a keel session, so the trigger counts them.
const filler = new pg.Client({ connectionString: url });
await filler.connect();
for (let done = 0; done < rows; done += 100_000) {
  const n = Math.min(100_000, rows - done);
  await filler.query(
    `INSERT INTO keel_commands (id, state, version, type, priority, attempt, cmd)
     SELECT 'c' || ($1 + g), CASE WHEN g % 100 = 0 THEN 'PENDING' WHEN g % 10 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 3,
            CASE WHEN g % 2 = 0 THEN 'DELAY' ELSE 'HTTP_GET_JSON' END, 0, 1, $2::json
     FROM generate_series(1, $3) g`,
    [done, cmd, n],
  );
}
await filler.end();
await store.foldCounts();
// The fold left a million dead delta rows; autovacuum clears a table that small within its naptime (a minute).
await store.pool.query('VACUUM ANALYZE keel_commands, keel_count_deltas');
process.stderr.write(`filled ${rows} rows in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

const groupBy = (): Promise<unknown> => store.pool.query('SELECT state, type, count(*)::int AS n FROM keel_commands GROUP BY state, type');
// A second of transitions not folded yet, as counts() usually finds.
await store.pool.query("INSERT INTO keel_count_deltas SELECT 'DELAY', 'PENDING', 'RUNNING' FROM generate_series(1, 2000)");
const times: Record<string, number[]> = { 'GROUP BY': [], 'counts()': [] };
for (let i = 0; i < runs; i++) {
  for (const [name, fn] of [['GROUP BY', groupBy], ['counts()', () => store.counts()]] as const) {
    const t = performance.now();
    await fn();
    times[name]!.push(performance.now() - t);
  }
}
// The deltas move commands between states; the total stays.
const counted = Object.values((await store.counts()).byState).reduce((a, b) => a + b, 0);
if (counted !== rows) throw new Error(`counts() says ${counted} commands, not ${rows}`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, xs] of Object.entries(times)) process.stdout.write(`${name.padEnd(9)} median ${median(xs).toFixed(2)} ms over ${runs} runs (${rows} rows)\n`);
await store.close();
await stopStores();
