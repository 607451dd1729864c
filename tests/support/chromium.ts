// Where the browser tests find a Chromium (no download: the system's), and
// the one line printed when there is none. No imports, so tests/run.ts can ask.
import fs from 'node:fs';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/** The browser to test with: $KEEL_CHROMIUM, else a system Chromium; undefined if none. */
export function findChromium(): string | undefined {
  const own = process.env.KEEL_CHROMIUM;
  if (own) return fs.existsSync(own) ? own : undefined;
  return CANDIDATES.find((p) => fs.existsSync(p));
}

export const NO_CHROMIUM =
  'browser tests not run: no Chromium found; install it (apt-get install chromium) or set KEEL_CHROMIUM=/path/to/chromium';
