// keel control server: flags -> recover the state directory -> serve HTTP.
import { parseOrExit } from './lib/flags.ts';
import { createLogger } from './lib/log.ts';
import { startServer } from './lib/server/app.ts';
import { parseServerFlags, SERVER_USAGE } from './lib/server/config.ts';
import { startupFailure } from './lib/startup.ts';

const config = parseOrExit(SERVER_USAGE, () => parseServerFlags(process.argv.slice(2), process.env));
if (config === 'help') {
  process.stdout.write(SERVER_USAGE);
  process.exit(0);
}
const log = createLogger({ role: 'server' });
const keel = await startServer(config, log).catch((err) => startupFailure(log, err, config.stateDir));
log('listening', { url: keel.url, ...keel.ctx.backend.where, leaseTimeoutMs: config.leaseTimeoutMs, auth: config.token !== undefined || config.clientToken !== undefined || config.agentToken !== undefined, tls: config.tls !== undefined });

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    log('shutting down', { signal });
    void keel.close().then(() => process.exit(0));
  });
}
