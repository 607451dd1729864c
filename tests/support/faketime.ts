// libfaketime (Debian's faketime package) for processes whose wall clock a
// test steps while they run: the offset is read from a file on every call,
// and the monotonic clock is left alone, as NTP or an operator would.
import fs from 'node:fs';
import path from 'node:path';

const CANDIDATES = ['/usr/lib/x86_64-linux-gnu/faketime', '/usr/lib/aarch64-linux-gnu/faketime', '/usr/lib/faketime', '/usr/local/lib/faketime'];

function library(): string {
  for (const dir of CANDIDATES) {
    for (const name of ['libfaketimeMT.so.1', 'libfaketime.so.1']) {
      const file = path.join(dir, name);
      if (fs.existsSync(file)) return file;
    }
  }
  throw new Error(`libfaketime not found in ${CANDIDATES.join(', ')}: install Debian's faketime package (.ci/run does)`);
}

/** A wall clock to step: pass env to the processes, then call step('+2h'), step('-2h'), ... */
export class FakeWallClock {
  readonly file: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(dir: string) {
    this.file = path.join(dir, 'faketime.rc');
    fs.writeFileSync(this.file, '+0\n');
    this.env = {
      LD_PRELOAD: library(),
      FAKETIME_TIMESTAMP_FILE: this.file,
      FAKETIME_NO_CACHE: '1',
      DONT_FAKE_MONOTONIC: '1',
    };
  }

  /** Set the offset from the real time, libfaketime's syntax: '+2h', '-30m', '+0'. */
  step(offset: string): void {
    fs.writeFileSync(this.file, `${offset}\n`);
  }
}
