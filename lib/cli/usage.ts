// Every help text the CLI prints. The README shows each one verbatim
// (tests/readme.test.ts holds it to that).

export const KEEL_USAGE = `usage: keel [--server URL[,URL...]] [--token T] [--ca FILE] [--json] COMMAND [args]

Commands:
  submit TYPE     submit a command: DELAY --ms N, HTTP_GET_JSON --url URL, or --payload JSON
  get ID          show one command
  wait ID         wait until a command is final, then show it
  ls              list commands, newest first
  cancel ID       cancel a command
  retry ID        run a final command again, as a new command
  events ID       a command's transitions (--follow: as they happen)
  tail            every transition as the server journals it
  agents          the agents and what each is running
  stats           commands by status, throughput over the last minute

Flags for every command:
  --server URL    the server (default $KEEL_SERVER, else http://127.0.0.1:3000); or several
                  on one store, URL1,URL2: a server that does not answer is passed for the next
  --token T       bearer token (default $KEEL_TOKEN)
  --ca FILE       trust the CA certificates in this PEM file for an https server
  --json          machine-readable output: one JSON document, or one per line for streams
  --help          this, or one command's usage: keel COMMAND --help

Exit codes:
  0  success; for wait and submit --wait, the command COMPLETED
  1  the command FAILED, or the server refused the request (unknown id, ...)
  2  usage error, or a request the server rejected as invalid (400)
  3  server unreachable, or the token refused (401, 403)
  4  wait --timeout ran out before the command was final
`;

export const SUBMIT_USAGE = `usage: keel submit TYPE [flags]

Submit a command and print its id, once the server has it on disk.

  --ms N                DELAY: how long it runs, in milliseconds
  --url URL             HTTP_GET_JSON: the URL to fetch
  --expect-status S     HTTP_GET_JSON: the statuses that complete it: 2xx, or 200,204
  --payload JSON        the whole payload, for any type
  --idempotency-key K   submitting again with this key returns the same command
  --wait                wait until it is final and show it (exit 0 COMPLETED, 1 FAILED)
  --priority N          -100 to 100, higher is handed out first (default 0)
  --run-at TIME         not before this ISO 8601 time
  --delay D             not before D from now
  --timeout D           limit on one execution; past it the attempt fails with TIMEOUT
  --attempts N          run up to N times in all while attempts fail (at-least-once)
  --backoff KIND        exponential (default) or fixed, between attempts
  --retry-delay D       wait before the first retry
  --max-delay D         cap on the wait between retries

Durations (D): 250ms, 10s, 2m, 1h.
`;

export const GET_USAGE = `usage: keel get ID

Show one command: its status, payload, result or error, agent and times.
`;

export const WAIT_USAGE = `usage: keel wait ID [--timeout D]

Wait until the command is COMPLETED or FAILED, then show it as keel get does.
Exit 0 when it COMPLETED, 1 when it FAILED. On a terminal a status line shows
its progress meanwhile; piped, nothing else is printed.

  --timeout D           give up after D (exit 4); default: wait as long as it takes
`;

export const LS_USAGE = `usage: keel ls [--status S] [--type T] [--limit N]

List commands, newest first.

  --status S            PENDING, RUNNING, COMPLETED or FAILED
  --type T              DELAY or HTTP_GET_JSON
  --limit N             at most N commands (default 20)
`;

export const CANCEL_USAGE = `usage: keel cancel ID

Cancel a command. One not yet running is FAILED CANCELED at once; a RUNNING
one is aborted by its agent within a heartbeat. A final one cannot be
canceled (exit 1).
`;

export const RETRY_USAGE = `usage: keel retry ID [--wait] [--idempotency-key K]

Submit a final command again, as a new command with the same type, payload and
options, and print the new id. The original stays as it is.

  --wait                wait until the new command is final and show it
  --idempotency-key K   retrying again with this key returns the same new command
`;

export const EVENTS_USAGE = `usage: keel events ID [--follow]

A command's transitions, oldest first.

  --follow              keep printing them as they happen, until the command is final
`;

export const TAIL_USAGE = `usage: keel tail [--type T] [--status S] [--since SEQ]

Print every transition as the server journals it, until interrupted. Each line
starts with the journal seq. A line "reset" means some were missed (the
server restarted, or this reader fell behind); keel ls shows where things are.

  --type T              only commands of these types (comma-separated)
  --status S            only transitions that leave a command in these statuses
  --since SEQ           first replay what the server still holds after journal seq SEQ
`;

export const AGENTS_USAGE = `usage: keel agents

The agents the server knows: online (heard from within the lease timeout) or
offline, when each was last seen, the protocol version and command types its
last claim announced, and the commands it holds.
`;

export const STATS_USAGE = `usage: keel stats

Commands by status (and internal state), agents online, and how many commands
completed and failed in the last minute, by the server's clock. Those last
figures are counted from the newest commands in the list, at most 20000 of
each status; past that they are shown as "at least".
`;
