// Open the agent's ledger and settle who this agent is: the id is chosen once
// (from --id, or generated) and journaled as the ledger's `identity` record, so
// a restarted agent comes back as itself and the server's leases still match.
import { randomBytes } from 'node:crypto';
import { LockedError } from '../../state/lock.ts';
import { CorruptionError } from '../../state/journal.ts';
import { Ledger } from '../../state/ledger.ts';
import type { Logger } from '../log.ts';

/** A problem the operator must fix; the agent prints it and exits 1. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

export async function openLedger(stateDir: string, log: Logger): Promise<Ledger> {
  try {
    return await Ledger.open(stateDir, { log });
  } catch (err) {
    if (err instanceof LockedError || err instanceof CorruptionError) throw new StartupError(err.message);
    throw err;
  }
}

export async function settleIdentity(ledger: Ledger, wanted: string | undefined): Promise<string> {
  const have = ledger.agentId;
  if (have !== undefined && wanted !== undefined && have !== wanted) {
    throw new StartupError(`the ledger in this state directory belongs to agent ${have}, not ${wanted}; drop --id, or give agent ${wanted} its own --state-dir`);
  }
  if (have !== undefined) return have;
  const id = wanted ?? `agent-${randomBytes(6).toString('hex')}`;
  await ledger.write({ t: 'identity', agentId: id });
  return id;
}
