// Named crash points: places in the durable sequences where a test (or the
// agent's --random-failures) may SIGKILL the process, exactly like a power cut.
//
//   KEEL_CRASH_AT=name       die the first time `name` is reached
//   KEEL_CRASH_AT=name#3     die the third time
// setRandomCrash(p, rng) makes every point a coin flip with probability p.

let target: { name: string; hit: number } | undefined;
let random: { p: number; rng: () => number } | undefined;
const hits = new Map<string, number>();

const spec = process.env.KEEL_CRASH_AT;
if (spec) {
  const [name, n] = spec.split('#');
  target = { name: name!, hit: n ? Number(n) : 1 };
}

export function setRandomCrash(p: number, rng: () => number): void {
  random = { p, rng };
}

export function crashPoint(name: string): void {
  if (target && target.name === name) {
    const n = (hits.get(name) ?? 0) + 1;
    hits.set(name, n);
    if (n === target.hit) die(name);
  }
  if (random && random.rng() < random.p) die(name);
}

function die(name: string): never {
  process.stderr.write(`${JSON.stringify({ level: 'warn', msg: 'crash point', point: name, pid: process.pid })}\n`);
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL is delivered asynchronously; never run past the point meanwhile.
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}
