// At start, settle every ledger entry a previous run left unsettled
// (docs/design.md, "Recovery: the agent"):
//   done                  -> report it again
//   executing, DELAY      -> resume to startedAt + ms, report the true tookMs
//   executing, HTTP       -> FAILED, not sent again (it may have reached the remote)
//   claimed               -> start it if the lease is still ours, else drop it
// reconcile() resolves once the reports are answered and the claimed entries
// started or dropped: then the first claim may go out. Resumed executions
// hold their slots in the work loop meanwhile, so a long DELAY resumed keeps
// one slot and the others claim at once.
import { confirmStart, failInterrupted, report, runExecuting, type AgentContext, type Executed } from './command-steps.ts';
import type { WorkLoop } from './work-loop.ts';

export async function reconcile(ctx: AgentContext, loop: Pick<WorkLoop, 'track' | 'occupy'>): Promise<void> {
  const beforeClaiming: Array<Promise<unknown>> = [];
  for (const entry of ctx.ledger.open()) {
    ctx.log('reconcile', { id: entry.id, lease: entry.lease, step: entry.step, type: entry.type });
    switch (entry.step) {
      case 'done':
        // Reported before the first claim: the server learns of outcomes first.
        ctx.leases.hold(entry);
        beforeClaiming.push(loop.track(entry.id, report(ctx, entry)));
        break;
      case 'executing': {
        const signal = ctx.leases.hold(entry);
        loop.occupy(entry.id, entry.type === 'DELAY' ? runExecuting(ctx, entry, signal) : Promise.resolve(failInterrupted(entry)));
        break;
      }
      case 'claimed': {
        // Started before the first claim, which would otherwise hand the same
        // ASSIGNED command back while its start is in flight.
        const started = confirmStart(ctx, entry);
        beforeClaiming.push(started.catch(() => {}));
        loop.occupy(entry.id, started.then((s): Promise<Executed | undefined> | undefined => s && runExecuting(ctx, s.entry, s.signal, s.at)));
        break;
      }
    }
  }
  await Promise.all(beforeClaiming);
}

