// One Server-Sent Events response: frames out, a comment line now and then so
// proxies keep an idle stream open, and a bounded buffer. node:http keeps
// whatever the socket cannot take yet in memory (res.writableLength); a
// reader that stops reading would grow it without end. So a stream is cut off,
// with a final `reset`, once more than `bufferBytes` has stayed queued for
// `stallMs` without draining, or at once past BURST times that: a group
// commit of batched submits can hand a reader that keeps up a burst of
// several megabytes in one tick, and that is no reason to drop it.
import type { ServerResponse } from 'node:http';
import { flushLogs } from '../log.ts';

export interface SseOptions {
  /** Queued bytes past which the reader counts as behind... */
  bufferBytes: number;
  /** ...once it stays so this long without the queue draining. */
  stallMs: number;
  /** A comment line after this long without a frame. */
  keepaliveMs: number;
  /** Called once when the stream is cut off for falling behind. */
  onCutOff?: () => void;
}

// A cut-off stream's last bytes get this long to drain before the socket is
// destroyed: a reader that never reads again must not pin them forever.
const DRAIN_GRACE_MS = 30_000;
/** Past BURST x bufferBytes queued, a stream is cut off without waiting. */
export const BURST = 8;

/** One SSE frame. `data` is JSON text: it holds no newline, so one `data:` line carries it. */
export function sseFrame(event: string, data: string, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${data}\n\n`;
}

export class SseStream {
  private readonly res: ServerResponse;
  private readonly opts: SseOptions;
  private readonly keepalive: NodeJS.Timeout;
  private closedFlag = false;
  private readonly closeHandlers: Array<() => void> = [];
  /** When the queue last went over bufferBytes, if it has not drained since. */
  private behindSince: number | undefined;

  constructor(res: ServerResponse, opts: SseOptions) {
    this.res = res;
    this.opts = opts;
    flushLogs();
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // nginx buffers proxied answers unless told not to.
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    this.keepalive = setInterval(() => this.write(': keepalive\n\n'), opts.keepaliveMs);
    res.once('close', () => this.closed());
    // 'drain' comes once a write was refused (the queue passed the socket's
    // high-water mark, far below bufferBytes) and everything went out.
    res.on('drain', () => (this.behindSince = undefined));
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Runs once the stream is over, whoever ended it. */
  onClose(fn: () => void): void {
    if (this.closedFlag) fn();
    else this.closeHandlers.push(fn);
  }

  /**
   * Queue one frame whose id is `id`. A reader too far behind gets, instead,
   * a final `reset` with that id: re-listing after it covers this frame.
   */
  send(frame: string, id: number): void {
    if (this.closedFlag) return;
    const queued = this.res.writableLength + frame.length;
    if (queued > this.opts.bufferBytes) {
      const now = performance.now();
      this.behindSince ??= now;
      if (queued > BURST * this.opts.bufferBytes || now - this.behindSince > this.opts.stallMs) {
        this.opts.onCutOff?.();
        this.reset('behind', 'this stream fell too far behind and was closed; list again, then resume from this id', id);
        return;
      }
    }
    this.keepalive.refresh();
    this.write(frame);
  }

  /**
   * A `reset` frame, then the end of the stream when `end` is set. Its id is
   * `lastSeq` when given, so a client that resumes after it does not ask again
   * for what it is told to re-list.
   */
  reset(reason: string, message: string, lastSeq?: number, end = true): void {
    if (this.closedFlag) return;
    this.write(sseFrame('reset', JSON.stringify({ reason, message, ...(lastSeq !== undefined ? { lastSeq } : {}) }), lastSeq));
    if (end) this.end();
  }

  end(): void {
    if (this.closedFlag) return;
    this.res.end();
    this.closed();
    // end() flushes what is queued; a reader that never reads would keep it.
    if (!this.res.writableFinished) setTimeout(() => this.res.destroy(), DRAIN_GRACE_MS).unref();
  }

  private write(text: string): void {
    if (!this.res.destroyed && !this.res.writableEnded) this.res.write(text);
  }

  private closed(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    clearInterval(this.keepalive);
    for (const fn of this.closeHandlers.splice(0)) fn();
  }
}
