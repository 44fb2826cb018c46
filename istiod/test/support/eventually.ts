import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `cond` every 10 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function eventually(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await sleep(10);
  }
}
