// keel's command line: find the subcommand, parse its flags with the global
// ones, run it, and turn whatever ends it into one line and an exit code.
import { parseArgs } from 'node:util';
import { UsageError } from '../flags.ts';
import { KeelClient } from './client.ts';
import { GLOBAL_OPTIONS, SUBCOMMANDS, type Options } from './commands.ts';
import { CliError, EXIT, type ExitCode } from './errors.ts';
import type { Invocation } from './invocation.ts';
import { KEEL_USAGE } from './usage.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:3000';

export interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

/** The index of the subcommand in argv: the first word that is not a flag or a global flag's value. */
function subcommandIndex(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return i + 1 < argv.length ? i + 1 : -1;
    if (!a.startsWith('-')) return i;
    const name = a.replace(/^--?/, '').split('=')[0]!;
    if (!a.includes('=') && GLOBAL_OPTIONS[name]?.type === 'string') i++;
  }
  return -1;
}

/** `--priority -5` as `--priority=-5`: parseArgs takes a value starting with '-' for a flag. */
function joinNegativeValues(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a.startsWith('--') && !a.includes('=') && options[a.slice(2)]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

function parse(argv: string[], options: Options): { values: Invocation['values']; positionals: string[] } {
  try {
    const r = parseArgs({ args: joinNegativeValues(argv, options), options, strict: true, allowPositionals: true });
    return { values: r.values as Invocation['values'], positionals: r.positionals };
  } catch (err) {
    // parseArgs explains at length; the first sentence says what is wrong.
    throw new UsageError((err as Error).message.split('\n')[0]!.replace(/\.( .*)?$/, ''));
  }
}

/**
 * For the process running the CLI: a reader that goes away (`keel tail | head`)
 * ends it quietly, as it would a shell tool, and nothing else ends it with a
 * stack trace.
 */
export function guardProcess(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.OK);
    process.stderr.write(`keel: cannot write the output: ${err.message}\n`);
    process.exit(EXIT.FAILED);
  });
  process.on('uncaughtException', (err) => {
    process.stderr.write(`keel: unexpected error: ${err?.message ?? String(err)}\n`);
    process.exit(EXIT.FAILED);
  });
}

export async function main(argv: string[], io: Io): Promise<ExitCode> {
  let command = 'keel';
  try {
    const at = subcommandIndex(argv);
    if (at < 0) {
      const { values } = parse(argv, GLOBAL_OPTIONS);
      if (values.help) {
        io.stdout.write(KEEL_USAGE);
        return EXIT.OK;
      }
      io.stderr.write(KEEL_USAGE);
      return EXIT.USAGE;
    }
    const name = argv[at]!;
    const sub = Object.hasOwn(SUBCOMMANDS, name) ? SUBCOMMANDS[name]! : undefined;
    if (!sub) throw new UsageError(`unknown command "${name}"; the commands are ${Object.keys(SUBCOMMANDS).join(', ')}`);
    command = `keel ${name}`;
    const { values, positionals } = parse([...argv.slice(0, at), ...argv.slice(at + 1)], { ...GLOBAL_OPTIONS, ...sub.options });
    if (values.help) {
      io.stdout.write(sub.usage);
      return EXIT.OK;
    }
    if (positionals.length < sub.positionals.length) throw new UsageError(`missing ${sub.positionals.slice(positionals.length).join(' ')}`);
    if (positionals.length > sub.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[sub.positionals.length])}`);
    let client: KeelClient | undefined;
    const inv: Invocation = {
      command: name,
      values,
      args: positionals,
      json: values.json === true,
      client: () =>
        (client ??= new KeelClient({
          server: typeof values.server === 'string' ? values.server : io.env.KEEL_SERVER || DEFAULT_SERVER,
          token: typeof values.token === 'string' ? values.token : io.env.KEEL_TOKEN || undefined,
          caFile: typeof values.ca === 'string' ? values.ca : undefined,
        })),
      stdout: io.stdout,
      stderr: io.stderr,
    };
    return await sub.run(inv);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`${command}: ${err.message} (${command} --help shows the usage)\n`);
      return EXIT.USAGE;
    }
    if (err instanceof CliError) {
      io.stderr.write(`${command}: ${err.message}\n`);
      return err.code;
    }
    // A bug: still one line, never a stack trace.
    io.stderr.write(`${command}: unexpected error: ${(err as Error)?.message ?? String(err)}\n`);
    return EXIT.FAILED;
  }
}
