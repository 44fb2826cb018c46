import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Every name the harness creates (netns, cgroup directory, temp dir) starts with this prefix
 * followed by the run key's remaining parts, so a sweep can find them and tell whose they are.
 */
export const HARNESS_PREFIX = 'ambh';

/**
 * Identifies one harness instance and the process that owns it. The key
 * `ambh-<pid>-<start>-<seq>` embeds the owner's pid and its start time (clock ticks since boot,
 * base 36) so a recycled pid is not mistaken for the owner, and a per-process sequence number so
 * one process can run several harnesses at once.
 */
export interface RunId {
  readonly pid: number;
  readonly startTicks: number;
  readonly seq: number;
  /** `ambh-<pid>-<start36>-<seq>`; every harness-created name is this key or starts with `key-`. */
  readonly key: string;
}

const RUN_KEY = new RegExp(`^${HARNESS_PREFIX}-(\\d+)-([0-9a-z]+)-(\\d+)(?=-|$)`);

// On globalThis so two instances of this module in one process (loaded under different URLs)
// still never hand out the same key.
const SEQ = Symbol.for('ambient.test.harness.runSeq');
const seqHolder = globalThis as { [SEQ]?: number };

/** A fresh run id owned by this process. */
export function newRunId(): RunId {
  const startTicks = processStartTicks(process.pid);
  if (startTicks === undefined) throw new Error(`cannot read /proc/${process.pid}/stat for this process`);
  const seq = seqHolder[SEQ] ?? 0;
  seqHolder[SEQ] = seq + 1;
  return {
    pid: process.pid,
    startTicks,
    seq,
    key: `${HARNESS_PREFIX}-${process.pid}-${startTicks.toString(36)}-${seq}`,
  };
}

/** The run id a harness-created name belongs to, or undefined for a name the harness did not make. */
export function parseRunKey(name: string): RunId | undefined {
  const m = RUN_KEY.exec(name);
  if (m === null) return undefined;
  const [key, pid, start, seq] = m;
  if (key === undefined || pid === undefined || start === undefined || seq === undefined) return undefined;
  return { pid: Number(pid), startTicks: Number.parseInt(start, 36), seq: Number(seq), key };
}

/**
 * The start time of a live process in clock ticks since boot (field 22 of /proc/<pid>/stat), or
 * undefined when there is no such process or it is a zombie (it has exited; only its parent has
 * not reaped it yet).
 */
export function processStartTicks(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) is in parentheses and may itself contain spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19];
  if (state === undefined || start === undefined || state === 'Z' || state === 'X') return undefined;
  return Number(start);
}

/** True when the process that created this run is still running (same pid and start time). */
export function isRunOwnerAlive(run: RunId): boolean {
  return processStartTicks(run.pid) === run.startTicks;
}

/** The run's temp directory (host-local IPAM state, CNI result cache, test files). */
export function runTempDir(key: string): string {
  return join(tmpdir(), key);
}
