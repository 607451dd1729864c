// A real small file system to fill: a tmpfs of a few MiB mounted for one test
// (needs root, as CI runs). fill() takes every free block, free() gives them back.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const mounted = new Set<SmallDisk>();
// A test file that dies (an uncaught error) must not leave its mount behind.
process.on('exit', () => {
  for (const d of mounted) d.remove();
});

export class SmallDisk {
  readonly dir: string;
  private readonly filler: string;
  private mounted = false;

  constructor(sizeMiB = 4) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-small-disk-'));
    this.filler = path.join(this.dir, 'filler');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', this.dir], { stdio: 'pipe' });
    } catch (err) {
      fs.rmdirSync(this.dir);
      throw new Error(`cannot mount a ${sizeMiB} MiB tmpfs (these tests need root, as CI runs): ${(err as Error).message}`);
    }
    this.mounted = true;
    mounted.add(this);
  }

  /** Take every free block: grow a filler file until the file system refuses. */
  fill(): void {
    const fd = fs.openSync(this.filler, 'a');
    try {
      for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
        const buf = Buffer.alloc(size, 0x78);
        try {
          for (;;) fs.writeSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  free(): void {
    fs.rmSync(this.filler, { force: true });
  }

  /** Unmount and remove the mount point; stop every process using it first. */
  remove(): void {
    mounted.delete(this);
    // Lazily: a process killed with it may still hold a file open for a moment.
    if (this.mounted) execFileSync('umount', ['-l', this.dir], { stdio: 'pipe' });
    this.mounted = false;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
