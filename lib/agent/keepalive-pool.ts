// A small HTTP/1.1 keep-alive client for the agent's calls to its server:
// POST a JSON body, get back the status and body. One request at a time per
// connection (no pipelining); idle connections are reused, a broken one is
// dropped. Answers may carry a Content-Length, be chunked, or end with the
// connection; an answer that is none of these, or longer than it said, fails
// the request, and that connection is never reused: the caller retries as it
// would after any lost answer.
//
// Why not node:http: at thousands of calls a second its client machinery
// (agent, ClientRequest, IncomingMessage streams) was a fifth of the agent's
// CPU; this does the same work for the requests the agent makes.
import net from 'node:net';

export interface PoolAnswer {
  status: number;
  text: string;
}

interface Pending {
  resolve: (a: PoolAnswer) => void;
  reject: (e: Error) => void;
}

const HEAD_END = Buffer.from('\r\n\r\n');
// Past this many bytes of response head we are not talking to a keel server.
const MAX_HEAD = 64 * 1024;

class Connection {
  readonly socket: net.Socket;
  private buf: Buffer | undefined;
  private pending: Pending | undefined;
  private head: { status: number; length: number | undefined; chunked: boolean; close: boolean; bodyAt: number } | undefined;
  broken = false;

  constructor(host: string, port: number, onIdleClose: (c: Connection) => void) {
    this.socket = net.connect({ host, port, noDelay: true });
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => {
      this.broken = true;
      const head = this.head;
      if (this.pending && head && head.length === undefined && !head.chunked) this.finish(this.buf!.subarray(head.bodyAt));
      else this.fail(new Error('the connection closed before the whole answer arrived'));
      onIdleClose(this);
    });
  }

  send(request: string, body: Buffer): Promise<PoolAnswer> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.buf = undefined;
      this.head = undefined;
      this.socket.cork();
      this.socket.write(request, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    });
  }

  destroy(err: Error): void {
    this.broken = true;
    this.socket.destroy();
    this.fail(err);
  }

  private onData(d: Buffer): void {
    if (!this.pending) {
      // Bytes nobody asked for: the stream is out of step; never reuse it.
      this.destroy(new Error('unexpected bytes from the server'));
      return;
    }
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    if (!this.head) {
      const end = this.buf.indexOf(HEAD_END);
      if (end < 0) {
        if (this.buf.length > MAX_HEAD) this.destroy(new Error('the answer has no end of headers'));
        return;
      }
      const text = this.buf.toString('latin1', 0, end);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!m) return this.destroy(new Error(`not an HTTP answer: ${JSON.stringify(text.slice(0, 40))}`));
      const lines = text.toLowerCase().split('\r\n');
      let length: number | undefined;
      let encoding: string | undefined;
      let close = /^http\/1\.0/.test(lines[0]!);
      for (const line of lines) {
        if (line.startsWith('content-length:')) length = Number(line.slice(15).trim());
        else if (line.startsWith('transfer-encoding:')) encoding = line.slice(18).trim();
        else if (line.startsWith('connection:')) close = line.includes('close') || (close && !line.includes('keep-alive'));
      }
      const chunked = encoding !== undefined && encoding.endsWith('chunked');
      if (encoding !== undefined && !chunked) return this.destroy(new Error('the answer has a transfer-encoding this client does not read'));
      if (chunked) length = undefined;
      if (length !== undefined && !(Number.isInteger(length) && length >= 0)) return this.destroy(new Error('bad content-length'));
      this.head = { status: Number(m[1]), length, chunked, close, bodyAt: end + 4 };
    }
    const { length, chunked, bodyAt } = this.head;
    if (chunked) {
      let whole;
      try {
        whole = dechunk(this.buf, bodyAt);
      } catch (err) {
        return this.destroy(err as Error);
      }
      if (!whole) return;
      if (whole.end < this.buf.length) return this.destroy(new Error('bytes after the end of the chunked answer'));
      return this.finish(whole.body);
    }
    if (length === undefined) return; // read until the connection closes
    if (this.buf.length < bodyAt + length) return;
    if (this.buf.length > bodyAt + length) return this.destroy(new Error('the answer is longer than its content-length'));
    this.finish(this.buf.subarray(bodyAt));
  }

  /** body: exactly the answer's body bytes. */
  private finish(body: Buffer): void {
    const p = this.pending!;
    const head = this.head!;
    const text = body.toString('utf8');
    this.pending = undefined;
    this.buf = undefined;
    if (head.close || (head.length === undefined && !head.chunked)) {
      this.broken = true;
      this.socket.end();
    }
    p.resolve({ status: head.status, text });
  }

  private fail(err: Error): void {
    const p = this.pending;
    this.pending = undefined;
    p?.reject(err);
  }
}

/** A whole chunked body at buf[from..]: its bytes, and where the answer ends; undefined while incomplete. */
function dechunk(buf: Buffer, from: number): { body: Buffer; end: number } | undefined {
  const parts: Buffer[] = [];
  for (let at = from; ; ) {
    const eol = buf.indexOf('\r\n', at);
    if (eol < 0) return undefined;
    const sizeText = buf.toString('latin1', at, eol).split(';')[0]!.trim();
    const size = /^[0-9a-f]{1,8}$/i.test(sizeText) ? parseInt(sizeText, 16) : NaN;
    if (Number.isNaN(size)) throw new Error(`bad chunk size ${JSON.stringify(sizeText.slice(0, 20))}`);
    if (size === 0) {
      // Trailers, ignored, end with an empty line.
      const end = buf.indexOf('\r\n\r\n', eol);
      return end < 0 ? undefined : { body: Buffer.concat(parts), end: end + 4 };
    }
    if (buf.length < eol + 2 + size + 2) return undefined;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

export class KeepAlivePool {
  private readonly host: string;
  private readonly port: number;
  private readonly headers: string;
  private idle: Connection[] = [];
  private readonly all = new Set<Connection>();

  constructor(url: URL, headers: Record<string, string>) {
    this.host = url.hostname.replace(/^\[|\]$/g, '');
    this.port = Number(url.port || 80);
    this.headers = Object.entries({ host: url.host, ...headers })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
  }

  /** POST body to path; rejects when no whole answer came (refused, cut, timed out, aborted). */
  post(path: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<PoolAnswer> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const conn = this.take();
    const bytes = Buffer.from(body, 'utf8');
    const answer = conn.send(`POST ${path} HTTP/1.1\r\n${this.headers}content-length: ${bytes.length}\r\n\r\n`, bytes);
    const timer = setTimeout(() => conn.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = (): void => conn.destroy(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    const settle = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (conn.broken) this.all.delete(conn);
      else this.idle.push(conn);
    };
    return answer.then(
      (a) => (settle(), a),
      (err: unknown) => {
        settle();
        throw err;
      },
    );
  }

  /** Connections open and waiting for a request. */
  get idleConnections(): number {
    return this.idle.length;
  }

  close(): void {
    for (const c of this.all) c.socket.destroy();
    this.all.clear();
    this.idle = [];
  }

  private take(): Connection {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) if (!c.broken) return c;
    const c = new Connection(this.host, this.port, (gone) => {
      this.all.delete(gone);
      this.idle = this.idle.filter((x) => x !== gone);
    });
    this.all.add(c);
    return c;
  }
}
