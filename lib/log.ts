// Logs are JSON lines on stdout, one per transition and per error, each with
// the command id where there is one, so `grep <id>` tells a command's story.

export type LogFields = Record<string, unknown>;
export type Logger = (msg: string, fields?: LogFields) => void;

export function createLogger(base: LogFields, out: NodeJS.WritableStream = process.stdout): Logger & { error: Logger } {
  const write = (level: string, msg: string, fields?: LogFields): void => {
    out.write(`${JSON.stringify({ t: new Date().toISOString(), level, msg, ...base, ...fields })}\n`);
  };
  const log = ((msg: string, fields?: LogFields) => write('info', msg, fields)) as Logger & { error: Logger };
  log.error = (msg, fields) => write('error', msg, fields);
  return log;
}
