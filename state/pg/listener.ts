// One connection that LISTENs, for everything a server hears from the
// others: commands becoming claimable, and transitions made elsewhere. It
// reconnects by itself; `onListening` fires on every (re)connection, since
// notifications sent while it was away are gone and the caller must look.
import pg, { type Client } from 'pg';

const RECONNECT_MS = 1000;

export class PgListener {
  private readonly url: string;
  private readonly channels: readonly string[];
  private readonly handlers = new Map<string, (payload: string) => void>();
  private readonly connected = new Set<() => void>();
  private client: Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** Whether a connection is listening now. */
  listening = false;

  constructor(url: string, channels: readonly string[]) {
    this.url = url;
    this.channels = channels;
  }

  on(channel: string, fn: (payload: string) => void): void {
    this.handlers.set(channel, fn);
  }

  onListening(fn: () => void): void {
    this.connected.add(fn);
  }

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    this.listening = false;
    await c?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({ connectionString: this.url, application_name: 'keel-listen' });
    let failed = false;
    const retry = (): void => {
      if (failed) return;
      failed = true;
      if (this.client === client) {
        this.client = undefined;
        this.listening = false;
      }
      void client.end().catch(() => {});
      if (this.stopped) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.connect(), RECONNECT_MS);
      this.timer.unref();
    };
    client.on('error', retry);
    client.on('end', retry);
    client.on('notification', (n: { channel: string; payload?: string }) => this.handlers.get(n.channel)?.(n.payload ?? ''));
    try {
      await client.connect();
      for (const ch of this.channels) await client.query(`LISTEN ${ch}`);
    } catch {
      retry();
      return;
    }
    if (this.stopped) {
      failed = true;
      void client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.listening = true;
    for (const fn of this.connected) fn();
  }
}
