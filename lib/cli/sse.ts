// A text/event-stream reader (the WHATWG "event stream interpretation"): bytes
// in, events out. Lines end in CRLF, LF or CR; a blank line ends an event; a
// line starting with ':' is a comment (the server's keep-alives); `data`
// lines join with '\n'; `id` is remembered across events, as an EventSource
// does, so a reconnect can send it back as Last-Event-ID.

export interface SseEvent {
  /** `message` when the event named none. */
  event: string;
  data: string;
  /** The last id the stream set, at or before this event; '' when none. */
  id: string;
}

export async function* readEvents(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  let lastId = '';
  let event = '';
  let data: string[] = [];
  // A CR at the very end of a chunk may be the first half of a CRLF.
  let pendingCr = false;

  const line = (text: string): SseEvent | undefined => {
    if (text === '') {
      const out = data.length > 0 ? { event: event || 'message', data: data.join('\n'), id: lastId } : undefined;
      event = '';
      data = [];
      return out;
    }
    if (text.startsWith(':')) return undefined;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) lastId = value;
    // `retry` and unknown fields are ignored: reconnecting is the caller's policy.
    return undefined;
  };

  for await (const chunk of body) {
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    if (pendingCr && buf.startsWith('\n')) buf = buf.slice(1);
    pendingCr = false;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const ev = line(buf.slice(start, i));
      if (c === 13) {
        if (i + 1 === buf.length) pendingCr = true;
        else if (buf.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      if (ev) yield ev;
    }
    buf = buf.slice(start);
  }
  // A stream that ends mid-event drops that event (the spec says the same).
}
