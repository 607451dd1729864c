// Logs are JSON lines on stdout, one per transition and per error, each with
// the command id where there is one, so `grep <id>` tells a command's story.
//
// Lines are gathered and written once per tick (process.nextTick), and at
// exit: under load a server logs thousands of transitions a second, and one
// synchronous write per line was a seventh of its CPU. The server flushes
// before each HTTP answer (lib/http-io.ts), so a transition's line is out
// before the transition is acknowledged and a SIGKILL cannot take it; a
// process that kills itself calls flushLogs() first. Lines logged before a journal flush is queued are
// written before it runs (nextTick order), so before its crash points.

export type LogFields = Record<string, unknown>;
export type Logger = (msg: string, fields?: LogFields) => void;

// Loggers holding lines not yet written.
const unwritten = new Set<() => void>();
let flushOnExit = false;

/** Write every logger's gathered lines now. */
export function flushLogs(): void {
  // Called before every HTTP answer: nothing to copy when nothing waits.
  if (unwritten.size === 0) return;
  for (const flush of [...unwritten]) flush();
}

// Levels and messages are a handful of constant strings: quote each once.
const quotedCache = new Map<string, string>();
function quoted(s: string): string {
  let q = quotedCache.get(s);
  if (q === undefined) {
    q = JSON.stringify(s);
    if (quotedCache.size < 1000) quotedCache.set(s, q);
  }
  return q;
}

export function createLogger(base: LogFields, out: NodeJS.WritableStream = process.stdout): Logger & { error: Logger } {
  let lines: string[] = [];
  const flush = (): void => {
    unwritten.delete(flush);
    if (lines.length === 0) return;
    const text = lines.join('');
    lines = [];
    out.write(text);
  };
  if (!flushOnExit) {
    flushOnExit = true;
    process.on('exit', flushLogs);
  }
  // The line is {t, level, msg, ...base, ...fields}. Built from parts: one
  // JSON.stringify of `fields` and a timestamp made once per millisecond, not
  // a merged object per line (a line per transition is on every hot path).
  const baseText = JSON.stringify(base).slice(1, -1);
  const reserved = ['t', 'level', 'msg', ...Object.keys(base)];
  const overrides = (fields: LogFields): boolean => {
    for (const k of reserved) if (k in fields) return true;
    return false;
  };
  let stampMs = -1;
  let stamp = '';
  const write = (level: string, msg: string, fields?: LogFields): void => {
    if (lines.length === 0) {
      unwritten.add(flush);
      process.nextTick(flush);
    }
    const now = Date.now();
    if (now !== stampMs) {
      stampMs = now;
      stamp = new Date(now).toISOString();
    }
    if (fields !== undefined && overrides(fields)) {
      // A field that overrides another: let the merge decide, as it always has.
      lines.push(`${JSON.stringify({ t: stamp, level, msg, ...base, ...fields })}\n`);
      return;
    }
    const rest = fields === undefined ? '{}' : JSON.stringify(fields);
    const tail = rest.length > 2 ? `,${rest.slice(1)}` : '}';
    lines.push(`{"t":"${stamp}","level":${quoted(level)},"msg":${quoted(msg)}${baseText === '' ? '' : `,${baseText}`}${tail}\n`);
  };
  const log = ((msg: string, fields?: LogFields) => write('info', msg, fields)) as Logger & { error: Logger };
  log.error = (msg, fields) => write('error', msg, fields);
  return log;
}
