import * as assert from 'uvu/assert';

/** The message a promise rejects with; fails the test if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  assert.unreachable('resolved, expected a rejection');
  return '';
}
