// A keel server stand-in in this process for agent-side tests: it hands each
// request to the test, which answers it (or cuts it, or leaves it hanging)
// when it likes.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LeaseRef } from '../../lib/protocol.ts';

export interface Received {
  route: string;
  body: { agentId: string; items: Array<LeaseRef & Record<string, unknown>> };
  answer(status: number, body: unknown): void;
  /** Drop the connection without an answer. */
  cut(): void;
  /** Resolves if the connection closes before an answer was sent. */
  abandoned: Promise<void>;
}

/** A server that hands each request to the test, which answers it when it likes. */
export class ScriptedServer {
  readonly received: Received[] = [];
  /** Answers requests as they arrive unless a test answers by hand. */
  auto: ((r: Received) => void) | undefined;
  private readonly server: http.Server;
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  url = '';

  constructor() {
    this.server = http.createServer((req, res) => {
      let text = '';
      req.on('data', (d: Buffer) => (text += d));
      req.on('end', () => {
        const r: Received = {
          route: req.url ?? '',
          body: JSON.parse(text),
          answer(status, body) {
            const out = JSON.stringify(body);
            res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
            res.end(out);
          },
          cut: () => req.socket.destroy(),
          abandoned: new Promise((resolve) => res.once('close', () => !res.writableFinished && resolve())),
        };
        this.received.push(r);
        this.waiters = this.waiters.filter((w) => (this.received.length >= w.n ? (w.resolve(), false) : true));
        this.auto?.(r);
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves once n requests in all have arrived; rejects if they have not within timeoutMs. */
  requests(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.received.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.received.length} requests of ${n} arrived within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
