import { callNative } from './binding.ts';

/** glibc malloc parameters (mallopt(3)); see {@link tuneMalloc}. */
export interface MallocTuning {
  /** Allocations at least this large get their own mapping (M_MMAP_THRESHOLD; max 32 MiB on 64-bit). */
  readonly mmapThreshold: number;
  /** Free memory at the heap top beyond this is returned to the kernel (M_TRIM_THRESHOLD). */
  readonly trimThreshold: number;
  /** Extra bytes taken from the kernel whenever the heap grows (M_TOP_PAD). */
  readonly topPad: number;
}

/**
 * Keeps multi-megabyte buffers (xDS responses, HTTP/2 message reassembly) on the malloc heap
 * instead of a fresh mapping each, whose pages the kernel faults in and zeroes every time: in
 * `npm run bench:istiod` that was 40% of the full push's CPU. Returns false when glibc refused a
 * value (or the C library is not glibc-compatible).
 */
export function tuneMalloc(tuning: MallocTuning): boolean {
  for (const [name, v] of Object.entries(tuning)) {
    if (!Number.isInteger(v) || v < 0 || v > 2 ** 30) {
      throw new RangeError(`malloc tuning ${name} ${v} is not an integer from 0 to 2^30`);
    }
  }
  return callNative((n) => n.tuneMalloc(tuning.mmapThreshold, tuning.trimThreshold, tuning.topPad));
}
