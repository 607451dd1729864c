// The PostgreSQL schema, as numbered migrations. Each server applies the ones
// the database lacks at start, under an advisory lock (so two servers starting
// together do not both apply one), each in its own transaction, recorded in
// keel_migrations. A database migrated by a newer keel is refused: this
// binary would not know what its rows mean.
import type { Pool } from 'pg';

/** Any number would do; it only has to be the same for every keel server. */
const MIGRATION_LOCK = 7_310_550_015;

interface Migration {
  version: number;
  what: string;
  sql: string;
}

// Never edit a migration once released: add the next one.
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    what: 'commands, their events, idempotency keys',
    sql: `
      CREATE TABLE keel_commands (
        id text PRIMARY KEY,
        -- Submission order: the list's newest-first order and its cursor.
        ord bigserial NOT NULL UNIQUE,
        state text NOT NULL,
        version integer NOT NULL,
        type text NOT NULL,
        priority integer NOT NULL,
        agent_id text,
        attempt integer NOT NULL,
        -- SCHEDULED and RETRY_WAIT: when it becomes PENDING (epoch ms).
        due_at bigint,
        -- ASSIGNED and RUNNING: the lease's deadline, on the database's clock.
        lease_until timestamptz,
        -- RUNNING with a timeout: when the attempt is failed TIMEOUT (timeout plus one lease timeout).
        run_deadline timestamptz,
        -- Unique across every server; NULLs are distinct, so commands without one never collide.
        idem_key text UNIQUE,
        -- The command as state/command-fsm.ts sees it: step() reads and writes this (json, not jsonb: its key order is kept as written).
        cmd json NOT NULL
      );
      CREATE INDEX keel_commands_claimable ON keel_commands (priority DESC, ord) WHERE state = 'PENDING';
      CREATE INDEX keel_commands_due ON keel_commands (due_at) WHERE state IN ('SCHEDULED', 'RETRY_WAIT');
      CREATE INDEX keel_commands_leases ON keel_commands (lease_until) WHERE state IN ('ASSIGNED', 'RUNNING');
      CREATE INDEX keel_commands_deadlines ON keel_commands (run_deadline) WHERE run_deadline IS NOT NULL;
      CREATE INDEX keel_commands_held ON keel_commands (agent_id) WHERE state IN ('ASSIGNED', 'RUNNING');
      CREATE TABLE keel_events (
        seq bigserial PRIMARY KEY,
        command_id text NOT NULL,
        event text NOT NULL,
        to_state text NOT NULL,
        at bigint NOT NULL,
        agent_id text,
        lease integer,
        error text
      );
      CREATE INDEX keel_events_by_command ON keel_events (command_id, seq);
    `,
  },
  {
    version: 2,
    what: 'when each command became final, for retention',
    sql: `
      ALTER TABLE keel_commands ADD COLUMN final_at bigint;
      UPDATE keel_commands SET final_at = (cmd->>'updatedAt')::bigint WHERE state IN ('COMPLETED', 'FAILED');
      CREATE INDEX keel_commands_final ON keel_commands (final_at) WHERE final_at IS NOT NULL;
    `,
  },
  {
    version: 3,
    what: 'a command that falls due joins the claim queue then, not at its submission',
    sql: `
      -- Its place in its priority's first-in-first-out queue: NULL for its submission ordinal;
      -- a newer ordinal once it waited (SCHEDULED, RETRY_WAIT) and fell due, as the file store's queue does.
      ALTER TABLE keel_commands ADD COLUMN queued bigint;
      DROP INDEX keel_commands_claimable;
      CREATE INDEX keel_commands_claimable ON keel_commands (priority DESC, (coalesce(queued, ord))) WHERE state = 'PENDING';
    `,
  },
  {
    version: 4,
    what: 'commands counted by state and type, kept by a trigger',
    // A GROUP BY over the table on every /metrics and --max-pending check
    // reads every row (seconds at a million). Instead every insert, state
    // change and delete appends one row to keel_count_deltas (no row is
    // updated in place, so concurrent transitions never wait on each other),
    // and the sweeps fold the deltas into keel_counts. A count is then
    // keel_counts plus the deltas not folded yet, read in one snapshot.
    // keel's own statements append their deltas themselves, in a CTE (a
    // plpgsql call per row cost about a tenth of the database's CPU per
    // transition), and say so with the session setting keel.counted; the
    // trigger counts every other writer: a keel older than this migration
    // still running during a rolling upgrade, a row changed by hand.
    // CREATE TRIGGER locks out writers, so the first counts and the trigger
    // start at the same point.
    sql: `
      CREATE TABLE keel_counts (state text NOT NULL, type text NOT NULL, n bigint NOT NULL, PRIMARY KEY (state, type));
      CREATE TABLE keel_count_deltas (type text NOT NULL, from_state text, to_state text);
      CREATE FUNCTION keel_count_delta() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'INSERT' THEN
          INSERT INTO keel_count_deltas VALUES (NEW.type, NULL, NEW.state);
        ELSIF TG_OP = 'DELETE' THEN
          INSERT INTO keel_count_deltas VALUES (OLD.type, OLD.state, NULL);
        ELSE
          INSERT INTO keel_count_deltas VALUES (NEW.type, OLD.state, NEW.state);
        END IF;
        RETURN NULL;
      END $$;
      CREATE TRIGGER keel_count_insert_delete AFTER INSERT OR DELETE ON keel_commands FOR EACH ROW
        WHEN (current_setting('keel.counted', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION keel_count_delta();
      CREATE TRIGGER keel_count_update AFTER UPDATE OF state ON keel_commands FOR EACH ROW
        WHEN (OLD.state IS DISTINCT FROM NEW.state AND current_setting('keel.counted', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION keel_count_delta();
      INSERT INTO keel_counts SELECT state, type, count(*) FROM keel_commands GROUP BY state, type;
    `,
  },
  {
    version: 5,
    what: 'each event\'s command as it was after it, for the event streams of every server',
    // Written by the transition's own statement; read by every server's event
    // feed (state/pg/event-feed.ts) within moments, then pruned by the sweeps.
    // UNLOGGED: no WAL, emptied if PostgreSQL crashes and absent on a
    // promoted standby; a feed that finds no frame shows the command as it
    // is now instead.
    sql: `
      CREATE UNLOGGED TABLE keel_event_frames (seq bigint PRIMARY KEY, cmd json NOT NULL);
    `,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The database's schema is newer than this binary knows. */
export class SchemaTooNewError extends Error {
  readonly found: number;
  constructor(found: number) {
    super(`the database's keel schema is version ${found}, but this keel knows versions up to ${SCHEMA_VERSION}; run a keel at least as new as the one that migrated it`);
    this.name = 'SchemaTooNewError';
    this.found = found;
  }
}

/** Bring the schema up to SCHEMA_VERSION; resolves with the versions applied. */
export async function migrate(pool: Pool): Promise<number[]> {
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query('CREATE TABLE IF NOT EXISTS keel_migrations (version integer PRIMARY KEY, what text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM keel_migrations');
      const current = rows[0]?.v ?? 0;
      if (current > SCHEMA_VERSION) throw new SchemaTooNewError(current);
      for (const m of MIGRATIONS) {
        if (m.version <= current) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO keel_migrations (version, what) VALUES ($1, $2)', [m.version, m.what]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        }
        applied.push(m.version);
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    }
  } finally {
    client.release();
  }
  return applied;
}
