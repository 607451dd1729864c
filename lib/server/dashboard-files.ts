// The dashboard's files: GET / is its page, GET /dashboard/NAME the CSS, the
// ES modules and the icon beside it in lib/server/dashboard/. They are served
// as they lie in the repo (no build step) and hold no data, so they need no
// token: the page asks for one and sends it with every API call it makes.
import fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { flushLogs } from '../log.ts';
import { HttpError } from './http-io.ts';

const DIR = path.join(path.dirname(new URL(import.meta.url).pathname), 'dashboard');
const NAME_RE = /^[a-z][a-z0-9-]*\.(html|css|js|svg)$/;
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  svg: 'image/svg+xml',
};
// Everything the page loads comes from this server; nothing inline runs.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export async function page(_ctx: unknown, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  send(res, 'index.html');
}

export async function file(_ctx: unknown, _req: IncomingMessage, res: ServerResponse, params: string[]): Promise<void> {
  const name = params[0] ?? '';
  if (!NAME_RE.test(name) || name === 'index.html') throw new HttpError(404, `no dashboard file ${name}`, { field: 'path' });
  send(res, name);
}

function send(res: ServerResponse, name: string): void {
  let body: Buffer;
  try {
    body = fs.readFileSync(path.join(DIR, name));
  } catch {
    throw new HttpError(404, `no dashboard file ${name}`, { field: 'path' });
  }
  flushLogs();
  res.writeHead(200, {
    'content-type': TYPES[name.slice(name.lastIndexOf('.') + 1)]!,
    'content-length': body.length,
    // Small files, read fresh: an upgraded server never serves yesterday's page.
    'cache-control': 'no-cache',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(body);
}
