// A small Server-Sent Events reader for tests: opens a stream with fetch and
// hands out its frames (and comment lines) in order, awaitable one by one.
export interface SseFrame {
  id?: string;
  event: string;
  data: string;
  /** A comment line (`: ...`) rather than an event. */
  comment?: string;
}

export class SseReader {
  readonly status: number;
  readonly headers: Headers;
  /** Every frame so far, comments included. */
  readonly frames: SseFrame[] = [];
  private readonly waiters: Array<() => void> = [];
  private read = 0;
  private ended = false;
  private readonly abort: AbortController;

  private constructor(res: Response, abort: AbortController) {
    this.status = res.status;
    this.headers = res.headers;
    this.abort = abort;
    void this.pump(res);
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
    const abort = new AbortController();
    const res = await fetch(url, { headers, signal: abort.signal });
    return new SseReader(res, abort);
  }

  /** True once the server ended the stream. */
  get done(): boolean {
    return this.ended;
  }

  /** The next event (comments skipped); undefined if the stream ends first. */
  async next(timeoutMs = 10_000): Promise<SseFrame | undefined> {
    for (;;) {
      while (this.read < this.frames.length) {
        const f = this.frames[this.read++]!;
        if (f.comment === undefined) return f;
      }
      if (this.ended) return undefined;
      await this.change(timeoutMs, 'next event');
    }
  }

  /** Take events until `n` have been read or the stream ends. */
  async take(n: number, timeoutMs = 10_000): Promise<SseFrame[]> {
    const out: SseFrame[] = [];
    while (out.length < n) {
      const f = await this.next(timeoutMs);
      if (!f) break;
      out.push(f);
    }
    return out;
  }

  /** Resolves once the server ends the stream. */
  async untilEnd(timeoutMs = 10_000): Promise<void> {
    while (!this.ended) await this.change(timeoutMs, 'end of stream');
  }

  /** Resolves once a frame matching `pred` (comments included) has arrived. */
  async until(pred: (f: SseFrame) => boolean, timeoutMs = 10_000, what = 'frame'): Promise<SseFrame> {
    for (;;) {
      const f = this.frames.find(pred);
      if (f) return f;
      if (this.ended) throw new Error(`stream ended without a ${what}`);
      await this.change(timeoutMs, what);
    }
  }

  close(): void {
    this.abort.abort();
  }

  private change(timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push(() => (clearTimeout(timer), resolve()));
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async pump(res: Response): Promise<void> {
    let buf = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          this.frames.push(...parseFrame(buf.slice(0, end)));
          buf = buf.slice(end + 2);
        }
        this.wake();
      }
    } catch {
      // aborted by close(), or the connection dropped: either way it ended
    }
    this.ended = true;
    this.wake();
  }
}

export function parseFrame(block: string): SseFrame[] {
  const out: SseFrame[] = [];
  const f: SseFrame = { event: 'message', data: '' };
  let hasField = false;
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) {
      out.push({ event: '', data: '', comment: line.slice(1).trim() });
      continue;
    }
    const i = line.indexOf(':');
    const name = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    hasField = true;
    if (name === 'id') f.id = value;
    else if (name === 'event') f.event = value;
    else if (name === 'data') data.push(value);
  }
  if (hasField) out.push({ ...f, data: data.join('\n') });
  return out;
}
