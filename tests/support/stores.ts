// The command stores the HTTP and crash tests run against: the file store (a
// temp state dir) and PostgreSQL (a fresh database on this test file's
// PostgreSQL, support/postgres.ts). A test file defines its store-independent
// suites once per store, named for it, and runs them with runSuites(), which
// stops the PostgreSQL after the last. KEEL_TEST_STORES=file (or postgres)
// runs one store only, for a quick look.
import pg from 'pg';
import type { Test } from 'uvu';
import type { ServerConfig, ServerContext } from '../../lib/server/context.ts';
import { CommandStore } from '../../state/command-store.ts';
import { PgStore } from '../../state/pg/pg-store.ts';
import { freshDatabase, stopPostgres } from './postgres.ts';
import { journalBytes, journalText, startPgTestServer, startTestServer, type TestServer } from './server-harness.ts';

export interface StoreUnderTest {
  readonly name: 'file' | 'postgres';
  /** A suite name that says which store it ran on. */
  label(what: string): string;
  /**
   * An in-process server on a store of its own: a new temp dir, or a new
   * database. With `stateDir` and `store` from sameStore(), the store of an
   * earlier server (a restart).
   */
  startServer(overrides?: Partial<ServerConfig>): Promise<TestServer<ServerContext>>;
  /** The flags that put a server.ts process on a store of its own: none (its --state-dir holds it), or --store with a new database. */
  serverArgs(): Promise<string[]>;
}

export const fileStore: StoreUnderTest = {
  name: 'file',
  label: (what) => `${what} [file store]`,
  startServer: (overrides = {}) => startTestServer(overrides),
  serverArgs: async () => [],
};

export const postgresStore: StoreUnderTest = {
  name: 'postgres',
  label: (what) => `${what} [postgres store]`,
  startServer: async (overrides = {}) => startPgTestServer(overrides.store ?? (await freshDatabase()), overrides),
  serverArgs: async () => ['--store', await freshDatabase()],
};

const only = process.env.KEEL_TEST_STORES;
if (only !== undefined && only !== 'file' && only !== 'postgres') throw new Error(`KEEL_TEST_STORES is file or postgres, not ${JSON.stringify(only)}`);

/** The stores under test, the file store first. */
export const STORES: readonly StoreUnderTest[] = [fileStore, postgresStore].filter((s) => only === undefined || s.name === only);

/** What a restart on the same store as `s` passes to startServer(). */
export function sameStore(s: TestServer<ServerContext>): Partial<ServerConfig> {
  return { stateDir: s.dir, store: s.keel.ctx.config.store };
}

/**
 * What the store of `s` holds, to compare before and after a request: the
 * same value means nothing was written. The file store: its journal's size;
 * PostgreSQL: the number of events and a digest of every command row (an
 * update that adds no event changes it too).
 */
export async function stored(s: TestServer<ServerContext>): Promise<string> {
  const store = s.keel.ctx.store;
  if (!(store instanceof PgStore)) return `journal bytes ${journalBytes(s.dir)}`;
  const { rows } = await store.pool.query<{ events: string; commands: string }>(
    `SELECT (SELECT count(*) FROM keel_events) AS events,
            (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY c.ord), '')) FROM keel_commands c) AS commands`,
  );
  return `events ${rows[0]!.events}, commands ${rows[0]!.commands}`;
}

/** Whether the durable state of the store of `s` names command `id`: the journal's text, or a committed row. */
export async function onDisk(s: TestServer<ServerContext>, id: string): Promise<boolean> {
  const store = s.keel.ctx.store;
  if (!(store instanceof PgStore)) return journalText(s.dir).includes(id);
  // Another connection than the one that wrote it: only what was committed shows.
  const c = new pg.Client({ connectionString: s.keel.ctx.config.store });
  await c.connect();
  try {
    return (await c.query('SELECT 1 FROM keel_commands WHERE id = $1', [id])).rowCount === 1;
  } finally {
    await c.end();
  }
}

/**
 * What a stopped server.ts left in its store: commands by idempotency key,
 * and how many in all. `args` are the store flags it ran with (serverArgs());
 * the file store is replayed from `dir`, telling `log` of any damage.
 */
export async function storedCommands(dir: string, args: readonly string[], log?: (msg: string) => void): Promise<{ keys: Map<string, string>; size: number }> {
  const at = args.indexOf('--store');
  if (at < 0) {
    const store = await CommandStore.open(dir, { log });
    const keys = new Map(store.table.byIdemKey);
    const size = store.table.size;
    await store.close();
    return { keys, size };
  }
  const c = new pg.Client({ connectionString: args[at + 1] });
  await c.connect();
  try {
    const { rows } = await c.query<{ id: string; idem_key: string | null }>('SELECT id, idem_key FROM keel_commands');
    return { keys: new Map(rows.flatMap((r) => (r.idem_key === null ? [] : [[r.idem_key, r.id] as const]))), size: rows.length };
  } finally {
    await c.end();
  }
}

/** Run these suites in order; after the last, stop the PostgreSQL if one was started. */
export function runSuites(...suites: Array<Test<any>>): void {
  suites.at(-1)?.after(stopPostgres);
  for (const s of suites) s.run();
}
