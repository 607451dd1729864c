// Runs every tests/*.test.ts file in its own Node process (crash tests kill
// children and set env vars; isolation keeps one file's leftovers from
// another), two at a time, then prints `N passed, N failed`. Browser tests
// (*.browser.test.ts) run when a Chromium is found; without one they are
// left out, said so in one line, and not counted.
//   node --import tsx tests/run.ts [name-filter ...]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { findChromium, NO_CHROMIUM } from './support/chromium.ts';

const dir = path.dirname(new URL(import.meta.url).pathname);
const filters = process.argv.slice(2);
const chosen = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.test.ts'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
const browserless = findChromium() === undefined;
const files = chosen.filter((f) => !(browserless && f.endsWith('.browser.test.ts')));
if (files.length < chosen.length) process.stdout.write(`${NO_CHROMIUM} (${chosen.length - files.length} file(s))\n`);
const parallel = Number(process.env.KEEL_TEST_JOBS ?? 2);
// A file that hangs must not hang the run (CI has a time limit): past this it
// is killed, with every process it started, and counted as failed.
const fileTimeoutMs = Number(process.env.KEEL_TEST_FILE_TIMEOUT_S ?? 600) * 1000;

let passed = 0;
let failed = 0;
const failures: string[] = [];

function runFile(file: string): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(dir, file)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FORCE_COLOR: '0' },
      detached: true, // its own process group, so a timeout can kill what it started too
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, fileTimeoutMs);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) out += `\n(killed after ${fileTimeoutMs / 1000}s: KEEL_TEST_FILE_TIMEOUT_S)`;
      const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? NaN);
      const ok = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? NaN);
      const skipped = Number(/Skipped:\s+(\d+)/.exec(out)?.[1] ?? 0);
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      if (Number.isNaN(total)) {
        failed++;
        failures.push(file);
        process.stdout.write(`✘ ${file} did not finish (exit ${code}) ${secs}s\n${indent(out)}\n`);
      } else {
        const bad = total - ok - skipped + ((code !== 0 || timedOut) && total === ok ? 1 : 0);
        passed += ok;
        failed += bad;
        if (bad > 0) failures.push(file);
        process.stdout.write(`${bad > 0 ? '✘' : '✔'} ${file}: ${ok}/${total} passed ${secs}s\n`);
        if (bad > 0) process.stdout.write(`${indent(out)}\n`);
      }
      resolve();
    });
  });
}

function indent(s: string): string {
  return s.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
}

const queue = [...files];
await Promise.all(
  Array.from({ length: Math.min(parallel, queue.length) }, async () => {
    for (let f = queue.shift(); f; f = queue.shift()) await runFile(f);
  }),
);
if (failures.length) process.stdout.write(`\nfailed files: ${failures.join(', ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
