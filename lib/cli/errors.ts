// How the keel CLI ends: the exit codes it documents, and the one error type
// that carries one of them together with the one line a user reads.

export const EXIT = {
  /** Success; for wait and submit --wait, the command COMPLETED. */
  OK: 0,
  /** The command FAILED, or the server refused the request (unknown id, cancel of a final command...). */
  FAILED: 1,
  /** Bad command line, or a request the server rejected as invalid (400). */
  USAGE: 2,
  /** The server could not be reached, or refused the token (401, 403). */
  UNREACHABLE: 3,
  /** wait --timeout ran out while the command was not yet final. */
  TIMEOUT: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Ends the CLI with `code`, printing `message` (one line) to stderr. */
export class CliError extends Error {
  readonly code: ExitCode;

  constructor(code: ExitCode, message: string) {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}

/** No (whole) answer from the server: worth trying again, unlike a refusal. */
export class ServerUnreachable extends CliError {
  constructor(message: string) {
    super(EXIT.UNREACHABLE, message);
    this.name = 'ServerUnreachable';
  }
}
