// keel: the command-line client for a keel server (see lib/cli/usage.ts, or `keel --help`).
import { guardProcess, main } from './lib/cli/main.ts';

guardProcess();
const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
process.exit(code);
