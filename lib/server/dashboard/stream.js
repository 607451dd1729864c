// GET /events over fetch, not EventSource: an EventSource cannot send the
// Authorization header, and the token must never go into the URL. Reconnects
// with Last-Event-ID, so nothing is missed while the server still holds it.
import { headers, refused, reportUnauthorized } from './api.js';

/**
 * Follow `path`. onFrame({id, event, data}) gets every event, `reset`
 * included; onState(state) hears 'live', 'reconnecting' and 'unauthorized'.
 * Resolves `opened` once the first connection is up.
 */
export function follow(path, { onFrame, onState }) {
  let lastId = null;
  let stopped = false;
  let abort = null;
  let opened;
  const openedPromise = new Promise((resolve) => (opened = resolve));

  async function run() {
    let delay = 500;
    while (!stopped) {
      abort = new AbortController();
      try {
        const res = await fetch(path, {
          headers: headers(lastId === null ? { accept: 'text/event-stream' } : { accept: 'text/event-stream', 'last-event-id': lastId }),
          signal: abort.signal,
          cache: 'no-store',
        });
        if (refused(res.status)) {
          reportUnauthorized(res.status);
          onState('unauthorized');
          return;
        }
        if (res.ok) {
          onState('live');
          opened();
          delay = 500;
          await readFrames(res.body, (f) => {
            if (f.id !== undefined) lastId = f.id;
            onFrame(f);
          });
        }
      } catch {
        // the connection dropped or was stopped: retry below unless stopped
      }
      if (stopped) return;
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  }
  void run();
  return {
    opened: openedPromise,
    stop() {
      stopped = true;
      abort?.abort();
    },
  };
}

async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = parse(buf.slice(0, end));
      buf = buf.slice(end + 2);
      if (frame) onFrame(frame);
    }
  }
}

function parse(block) {
  const f = { event: 'message', data: '' };
  const data = [];
  let any = false;
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue; // comments keep the stream open, nothing more
    const i = line.indexOf(':');
    const name = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    any = true;
    if (name === 'id') f.id = value;
    else if (name === 'event') f.event = value;
    else if (name === 'data') data.push(value);
  }
  if (!any) return null;
  f.data = data.join('\n');
  return f;
}
