import { teardownRunSync } from './teardown.ts';

/** Runs that are built and not yet destroyed by this process. */
const liveRuns = new Set<string>();

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function teardownAll(): void {
  for (const key of liveRuns) {
    try {
      teardownRunSync(key);
    } catch {
      // Best effort at exit; the next run's sweep removes what is left.
    }
  }
  liveRuns.clear();
}

function onExit(): void {
  teardownAll();
}

function onSignal(signal: NodeJS.Signals): void {
  teardownAll();
  uninstall();
  // With our listener gone the signal's default action (or other listeners) applies again.
  process.kill(process.pid, signal);
}

function install(): void {
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/**
 * Makes sure a run is torn down if this process exits (normally, by an uncaught error, or by
 * SIGINT/SIGTERM/SIGHUP) before `destroy()` finished. The hooks are installed only while some
 * run is live, so an idle harness module does not change how the process handles signals.
 * SIGKILL cannot be hooked; the next harness's sweep handles that case. Returns the unregister
 * function.
 */
export function guardRun(key: string): () => void {
  if (liveRuns.size === 0) install();
  liveRuns.add(key);
  return () => {
    if (liveRuns.delete(key) && liveRuns.size === 0) uninstall();
  };
}
