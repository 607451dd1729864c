// A fresh headless Chromium (the system's, see chromium.ts) driven by
// playwright-core, with its own profile directory; console errors collected.
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { findChromium, NO_CHROMIUM } from './chromium.ts';
import { tempDir } from './processes.ts';

export interface TestBrowser {
  context: BrowserContext;
  page: Page;
  /** Console errors and page errors seen so far. */
  errors: string[];
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  const executablePath = findChromium();
  if (!executablePath) throw new Error(NO_CHROMIUM);
  const context = await chromium.launchPersistentContext(tempDir('keel-chromium-'), {
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1360, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, errors, close: () => context.close() };
}
