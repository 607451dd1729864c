// At start, settle every ledger entry a previous run left unsettled
// (docs/design.md, "Recovery: the agent"):
//   done                  -> report it again
//   executing, DELAY      -> resume to startedAt + ms, report the true tookMs
//   executing, HTTP       -> FAILED, not sent again (it may have reached the remote)
//   claimed               -> give it back: it never began (ledgers from before claim-and-start)
// A command the server has RUNNING for us with no entry at all never began
// either: the first claim resumes and gives it back (work-loop.ts).
// reconcile() resolves once the reports and releases are answered: then the
// first claim may go out. Resumed executions hold their slots in the work
// loop meanwhile, so a long DELAY resumed keeps one slot and the others claim
// at once.
import { failInterrupted, releaseClaimed, report, runExecuting, type AgentContext } from './command-steps.ts';
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
      case 'claimed':
        // Before the first claim, whose `held` would list it again.
        beforeClaiming.push(loop.track(entry.id, releaseClaimed(ctx, entry)));
        break;
    }
  }
  await Promise.all(beforeClaiming);
}
