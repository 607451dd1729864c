// Before the first claim, finish every ledger entry a previous run left
// unsettled (docs/design.md, "Recovery: the agent"):
//   done                  -> report it again
//   executing, DELAY      -> resume to startedAt + ms, report the true tookMs
//   executing, HTTP       -> FAILED, not sent again (it may have reached the remote)
//   claimed               -> start it if the lease is still ours, else drop it
import type { LedgerEntry } from '../../state/ledger.ts';
import { failInterrupted, report, runExecuting, settle, startClaimed, type AgentContext, type Executed } from './command-steps.ts';

/** `track` registers each entry's work, so a shutdown during reconciliation waits for it too. */
export async function reconcile(ctx: AgentContext, track: (id: string, work: Promise<void>) => Promise<void>): Promise<void> {
  // Entries are independent; a resumed DELAY must not hold up a report.
  await Promise.all(ctx.ledger.open().map((e) => track(e.id, reconcileOne(ctx, e))));
}

async function reconcileOne(ctx: AgentContext, entry: LedgerEntry): Promise<void> {
  ctx.log('reconcile', { id: entry.id, lease: entry.lease, step: entry.step, type: entry.type });
  let executed: Executed | undefined;
  switch (entry.step) {
    case 'done':
      ctx.leases.hold(entry);
      return report(ctx, entry);
    case 'executing': {
      const signal = ctx.leases.hold(entry);
      executed = entry.type === 'DELAY' ? await runExecuting(ctx, entry, signal) : failInterrupted(entry);
      break;
    }
    case 'claimed':
      executed = await startClaimed(ctx, entry);
      break;
  }
  if (executed) await settle(ctx, executed);
}
