// An attempt's timeout against the work it limits, in one process: which of
// the two ends first decides the outcome, also for an attempt resumed after
// the agent was down through both ends.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runExecuting, type AgentContext } from '../lib/agent/command-steps.ts';
import type { LedgerEntry } from '../state/ledger.ts';

const test = suite('execution timeout');
// runExecuting reads only ctx.http; the rest of the context plays no part here.
const ctx = { http: { timeoutMs: 1000, maxBodyBytes: 1024 } } as unknown as AgentContext;

function delayEntry(ms: number, timeoutMs: number, startedAgoMs: number): LedgerEntry {
  const now = Date.now();
  return { id: 'c1', lease: 1, type: 'DELAY', payload: { ms }, step: 'executing', claimedAt: now - startedAgoMs, startedAt: now - startedAgoMs, timeoutMs };
}

test('resumed after both ends passed: the earlier one, the timeout, decides', async () => {
  const { exec } = await runExecuting(ctx, delayEntry(3000, 2000, 5000), new AbortController().signal);
  assert.is(exec.outcome, 'FAILED');
  assert.is(exec.error, 'TIMEOUT');
});

test('resumed after the delay ended, the timeout still ahead: it completes', async () => {
  const { exec } = await runExecuting(ctx, delayEntry(3000, 60_000, 5000), new AbortController().signal);
  assert.is(exec.outcome, 'COMPLETED');
});

test('a live attempt past its timeout is aborted at the timeout', async () => {
  const { exec } = await runExecuting(ctx, delayEntry(60_000, 50, 0), new AbortController().signal);
  assert.is(exec.outcome, 'FAILED');
  assert.is(exec.error, 'TIMEOUT');
});

test.run();
