// The subcommands that change things: submit, cancel and retry. Options the
// server validates (durations, ranges, times) go through as typed; its 400
// names the field, and the CLI exits 2 with that sentence.
import { UsageError } from '../flags.ts';
import { COMMAND_TYPES, type CommandView, type SubmitResponse } from '../protocol.ts';
import { EXIT, type ExitCode } from './errors.ts';
import { idArg, integerValue, stringValue, type Invocation } from './invocation.ts';
import { jsonDoc } from './output.ts';
import { finalOutcome, waitForFinal } from './watch.ts';

const PAYLOAD_FLAGS: Record<string, string> = { ms: 'DELAY', url: 'HTTP_GET_JSON', 'expect-status': 'HTTP_GET_JSON' };

function payloadOf(inv: Invocation, type: string): Record<string, unknown> {
  const given = Object.keys(PAYLOAD_FLAGS).filter((f) => inv.values[f] !== undefined);
  const raw = stringValue(inv, 'payload');
  if (raw !== undefined) {
    if (given.length > 0) throw new UsageError(`--payload is the whole payload; leave out --${given[0]}`);
    let p: unknown;
    try {
      p = JSON.parse(raw);
    } catch {
      throw new UsageError(`--payload must be a JSON object; got ${JSON.stringify(raw)}`);
    }
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new UsageError('--payload must be a JSON object');
    return p as Record<string, unknown>;
  }
  const wrong = given.find((f) => PAYLOAD_FLAGS[f] !== type);
  if (wrong) throw new UsageError(`--${wrong} is for ${PAYLOAD_FLAGS[wrong]} commands, not ${type}`);
  if (type === 'DELAY') {
    const ms = integerValue(inv, 'ms', 0);
    if (ms === undefined) throw new UsageError('DELAY needs --ms N (or --payload JSON)');
    return { ms };
  }
  if (type === 'HTTP_GET_JSON') {
    const url = stringValue(inv, 'url');
    if (url === undefined) throw new UsageError('HTTP_GET_JSON needs --url URL (or --payload JSON)');
    const expect = stringValue(inv, 'expect-status');
    if (expect === undefined) return { url };
    // "2xx" stays a pattern; "200" or "200,204" is a list of statuses.
    return { url, expectStatus: /^\d+(,\d+)*$/.test(expect) ? expect.split(',').map(Number) : expect };
  }
  throw new UsageError(`${type} needs --payload JSON`);
}

/** The job options of a submit, each only when its flag was given. */
function optionsOf(inv: Invocation): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const priority = integerValue(inv, 'priority');
  if (priority !== undefined) o.priority = priority;
  for (const [flag, field] of [['run-at', 'runAt'], ['delay', 'delay'], ['timeout', 'timeout']] as const) {
    const v = stringValue(inv, flag);
    if (v !== undefined) o[field] = v;
  }
  const retry: Record<string, unknown> = {};
  const attempts = integerValue(inv, 'attempts');
  if (attempts !== undefined) retry.attempts = attempts;
  for (const [flag, field] of [['backoff', 'backoff'], ['retry-delay', 'delay'], ['max-delay', 'maxDelay']] as const) {
    const v = stringValue(inv, flag);
    if (v !== undefined) retry[field] = v;
  }
  if (Object.keys(retry).length > 0) o.retry = retry;
  return o;
}

function idempotencyHeader(inv: Invocation): Record<string, string> {
  const key = stringValue(inv, 'idempotency-key');
  return key === undefined ? {} : { 'idempotency-key': key };
}

/** After a submit or retry: the id, or with --wait the final command. */
async function created(inv: Invocation, commandId: string): Promise<ExitCode> {
  if (!inv.values.wait) {
    inv.stdout.write(inv.json ? jsonDoc({ commandId }) : `${commandId}\n`);
    return EXIT.OK;
  }
  const view = await waitForFinal(inv, encodeURIComponent(commandId), undefined);
  return finalOutcome(inv, view!);
}

export async function submit(inv: Invocation): Promise<ExitCode> {
  const type = inv.args[0]!.toUpperCase();
  if (!(COMMAND_TYPES as readonly string[]).includes(type)) throw new UsageError(`TYPE must be one of ${COMMAND_TYPES.join(', ')}; got ${JSON.stringify(inv.args[0])}`);
  const body = { type, payload: payloadOf(inv, type), ...optionsOf(inv) };
  const r = await inv.client().request<SubmitResponse>('POST', '/commands', { body, headers: idempotencyHeader(inv) });
  return created(inv, r.body.commandId);
}

export async function retry(inv: Invocation): Promise<ExitCode> {
  const r = await inv.client().request<SubmitResponse>('POST', `/commands/${idArg(inv)}/retry`, { headers: idempotencyHeader(inv) });
  return created(inv, r.body.commandId);
}

export async function cancel(inv: Invocation): Promise<ExitCode> {
  const r = await inv.client().request<CommandView>('POST', `/commands/${idArg(inv)}/cancel`);
  const c = r.body;
  if (inv.json) inv.stdout.write(jsonDoc(c));
  else if (r.status === 202) inv.stdout.write(`${c.id} is RUNNING${c.agentId ? ` on ${c.agentId}` : ''}: cancel requested, its agent aborts it\n`);
  else inv.stdout.write(`${c.id} canceled: ${c.status}${c.error ? ` ${c.error}` : ''}\n`);
  return EXIT.OK;
}

