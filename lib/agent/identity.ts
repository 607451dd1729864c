// Settle who this agent is: the id is chosen once
// (from --id, or generated) and journaled as the ledger's `identity` record, so
// a restarted agent comes back as itself and the server's leases still match.
import { randomBytes } from 'node:crypto';
import type { Ledger } from '../../state/ledger.ts';
import { StartupError } from '../startup.ts';

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
