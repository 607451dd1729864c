// The server on the PostgreSQL store (state/pg/). Lease and attempt
// deadlines are columns on the database's clock, so there is nothing to time
// in memory: one sweep, on every server, expires leases, times out attempts
// and promotes due commands; a server losing a race to another changes
// nothing. Parked claims wake on LISTEN/NOTIFY (a command became claimable on
// some server), and look again every second in case a notification was lost
// with a connection. Event streams and waiters are fed by the event feed
// (state/pg/event-feed.ts): every server's transitions, in keel_events order,
// so their ids are the same on every server.
import type { Command } from '../../state/command-fsm.ts';
import type { CommandType } from '../../state/command-types.ts';
import { isConnectionLost } from '../../state/pg/connection.ts';
import { PgEventFeed } from '../../state/pg/event-feed.ts';
import { PgStore } from '../../state/pg/pg-store.ts';
import { SchemaTooNewError, SCHEMA_VERSION } from '../../state/pg/schema.ts';
import { DEFAULT_RETENTION } from '../../state/retention.ts';
import type { Logger } from '../log.ts';
import { StartupError } from '../startup.ts';
import type { Backend, ClaimParking, Leases, ServerConfig } from './context.ts';

/** How often parked claims look for work without a notification (one may be lost with a connection). */
const LOOK_AGAIN_MS = 1000;
/** The longest a due command waits on a server that did not schedule it. */
const MAX_SWEEP_MS = 1000;

export async function openPgBackend(config: ServerConfig, log: Logger & { error: Logger }): Promise<Backend> {
  const url = config.store!;
  const where = describe(url);
  const store = await PgStore.open({ url, leaseTimeoutMs: config.leaseTimeoutMs, retention: config.retention ?? DEFAULT_RETENTION }).catch((err: unknown) => {
    throw startupError(err, where);
  });
  log('recovered', { store: 'postgres', ...where, schemaVersion: SCHEMA_VERSION, seq: store.lastSeq });
  const sweeper = new Sweeper(store, config.leaseTimeoutMs, log);
  const claims = new PgClaimWaiters(store);
  const feed = new PgEventFeed(store.pool, store.lastSeq, (after, upTo) => {
    log.error('event feed passed a gap a transaction held open too long; a transition in it, if it commits, is not streamed', { after, upTo });
  });
  store.listen({
    pending: () => claims.wake(),
    changed: (seq) => feed.wake(seq),
    listening: () => {
      claims.wake();
      feed.wake();
    },
  });
  const leases: Leases = {
    start: () => sweeper.start(),
    stop: () => sweeper.stop(),
    // Claims and starts set the deadline in their own UPDATE; this is the heartbeat's.
    extend: (id, lease) => store.extendLease(id, lease).catch((err: unknown) => log.error('lease extension failed', { id, lease, error: (err as Error).message })),
    drop: () => {},
    get size() {
      return sweeper.held;
    },
  };
  return {
    store,
    leases,
    due: { start() {}, stop() {}, arm: () => sweeper.soon() },
    runDeadlines: { start() {}, stop() {}, started() {} },
    claimWaiters: claims,
    journal: () => undefined,
    transitions: (fn) => feed.onEvent(fn),
    committedSeq: () => store.maxSeq(),
    where,
    start: () => {
      claims.start();
      feed.start();
    },
    stop: () => {
      claims.stop();
      feed.stop();
    },
    beforeClose: async () => {},
  };
}

/** Host, port and database of a URL: never its password. */
function describe(url: string): Record<string, unknown> {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432), database: decodeURIComponent(u.pathname.slice(1)) };
}

function startupError(err: unknown, where: Record<string, unknown>): unknown {
  const at = `PostgreSQL at ${where.host}:${where.port}/${where.database}`;
  if (err instanceof SchemaTooNewError) return new StartupError(`${at}: ${err.message}`);
  if (isConnectionLost(err)) return new StartupError(`cannot reach ${at} (${(err as Error).message}); check --store or KEEL_DATABASE_URL and that the database is up`);
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return new StartupError(`${at} refused keel (${code}: ${(err as Error).message}); check the URL's user, password and database`);
  return err;
}

/** Expiry, timeouts, due promotion and retention, against the database's clock. */
class Sweeper {
  private readonly store: PgStore;
  private readonly everyMs: number;
  private readonly log: Logger & { error: Logger };
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = true;
  /** Leases held when the last sweep looked (for /metrics). */
  held = 0;

  constructor(store: PgStore, leaseTimeoutMs: number, log: Logger & { error: Logger }) {
    this.store = store;
    this.everyMs = Math.max(20, Math.min(MAX_SWEEP_MS, Math.floor(leaseTimeoutMs / 4)));
    this.log = log;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** A command started waiting here: look at its due time now rather than at the next tick. */
  soon(): void {
    if (this.stopped) return;
    void this.store.nextDue().then((at) => {
      if (at !== undefined && at - Date.now() < this.everyMs) this.schedule(Math.max(0, at - Date.now()));
    }, () => {});
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.sweep(), ms);
    this.timer.unref();
  }

  private async sweep(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      await this.store.syncClock();
      // One line per command, as the file store's timers write them: an operator greps for its id.
      for (const s of await this.store.expireLeases()) this.log('lease expired', { id: s.id, lease: s.lease, agentId: s.agentId, state: s.cmd.state, error: s.cmd.error });
      for (const s of await this.store.timeoutRuns()) this.log('attempt timed out', { id: s.id, lease: s.lease, agentId: s.agentId, state: s.cmd.state });
      const due = await this.store.promoteDue();
      const forgotten = await this.store.forgetExpired();
      await this.store.foldCounts();
      await this.store.pruneFrames();
      if (due > 0) this.log('due', { commands: due });
      if (forgotten > 0) this.log('forgotten', { commands: forgotten });
      this.held = [...(await this.store.heldBy()).values()].reduce((n, s) => n + s.size, 0);
    } catch (err) {
      // The database is away: requests answer 503 meanwhile, and the next sweep tries again.
      if (!isConnectionLost(err) && !(err as Error).name.includes('StoreUnavailable')) this.log.error('sweep failed', { error: (err as Error).message });
    } finally {
      this.running = false;
      const again = this.again;
      this.again = false;
      this.schedule(again ? 0 : this.everyMs);
    }
  }
}

interface Parked {
  agentId: string;
  max: number;
  types: ReadonlySet<CommandType> | undefined;
  signal: AbortSignal;
  timer: NodeJS.Timeout;
  resolve: (cmds: Command[]) => void;
}

/** Claims parked until a command they can take becomes claimable on any server. */
class PgClaimWaiters implements ClaimParking {
  private readonly store: PgStore;
  private queue: Parked[] = [];
  private poll: NodeJS.Timeout | undefined;
  private looking = false;
  private lookAgain = false;

  constructor(store: PgStore) {
    this.store = store;
  }

  /** A command became claimable somewhere, or the LISTEN connection is (back) up: offer what is there. */
  wake(): void {
    if (this.queue.length > 0) void this.look();
  }

  get size(): number {
    return this.queue.length;
  }

  start(): void {
    this.poll = setInterval(() => this.wake(), LOOK_AGAIN_MS);
    this.poll.unref();
  }

  stop(): void {
    clearInterval(this.poll);
    for (const w of [...this.queue]) this.answer(w, []);
  }

  async claim(agentId: string, max: number, ms: number, watch: () => AbortSignal, types?: ReadonlySet<CommandType>): Promise<Command[]> {
    this.store.refuseIfUnavailable();
    const now = await this.store.claim(agentId, max, { types });
    if (now.length > 0 || ms <= 0) return now;
    const signal = watch();
    if (signal.aborted) return [];
    return new Promise((resolve) => {
      const w: Parked = {
        agentId, max, types, signal, resolve,
        // A command may have come while no notification reached us: look once more.
        timer: setTimeout(() => {
          void this.store.claim(agentId, max, { types }).then((got) => this.answer(w, got), () => this.answer(w, []));
        }, ms),
      };
      signal.addEventListener('abort', () => this.answer(w, []), { once: true });
      this.queue.push(w);
    });
  }

  private answer(w: Parked, cmds: Command[]): void {
    const i = this.queue.indexOf(w);
    if (i < 0) return; // answered already
    this.queue.splice(i, 1);
    clearTimeout(w.timer);
    w.resolve(cmds);
  }

  /** Offer what is claimable to the parked claims, oldest first. */
  private async look(): Promise<void> {
    if (this.looking) {
      this.lookAgain = true;
      return;
    }
    this.looking = true;
    try {
      do {
        this.lookAgain = false;
        for (const w of [...this.queue]) {
          if (w.signal.aborted) {
            this.answer(w, []);
            continue;
          }
          const got = await this.store.claim(w.agentId, w.max, { types: w.types });
          if (got.length === 0) {
            if (w.types === undefined) break; // nothing claimable at all
            continue; // nothing of its types: one further back may take another
          }
          if (this.queue.includes(w)) this.answer(w, got);
          // else: answered meanwhile (its wait ended); the lease expires unheard, and the command goes back to PENDING
        }
      } while (this.lookAgain);
    } catch {
      // The database is away; the next notification or poll tries again.
    } finally {
      this.looking = false;
    }
  }
}
