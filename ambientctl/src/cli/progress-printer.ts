import type { ProgressEvent } from '../host/hosted-mesh.ts';

/**
 * Prints each step of `up` as it starts and ends: `  ▸ istiod` when it starts, then
 * `  ✓ istiod (2.1s) https://…` or `  ✗ istiod: why`. Steps may overlap (each node's components
 * start in parallel), so each gets whole lines of its own.
 */
export function progressPrinter(out: (line: string) => void): (e: ProgressEvent, atMs?: number) => void {
  const started = new Map<string, number>();
  return (e, atMs = Date.now()) => {
    if (e.state === 'start') {
      started.set(e.step, atMs);
      out(`  ▸ ${e.step}${e.detail ? ` ${e.detail}` : ''}`);
      return;
    }
    const t0 = started.get(e.step);
    const took = t0 === undefined ? '' : ` (${((atMs - t0) / 1000).toFixed(1)}s)`;
    if (e.state === 'done') out(`  ✓ ${e.step}${took}${e.detail ? ` ${e.detail}` : ''}`);
    else out(`  ✗ ${e.step}${took}: ${e.detail ?? 'failed'}`);
  };
}
