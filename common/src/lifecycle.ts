import { EventEmitter, once } from 'node:events';
import { errorMessage, MeshError } from './errors.ts';
import type { Logger } from './log.ts';

export type LifecycleErrorCode = 'START_FAILED' | 'STOP_TIMEOUT' | 'ALREADY_STARTED';
export class LifecycleError extends MeshError<LifecycleErrorCode> {}

/**
 * How a stop proceeds. A component stops accepting new work at once, lets work in flight finish,
 * and force-closes what is left when `force` aborts (the drain deadline has passed).
 */
export interface StopContext {
  /** `graceful` drains up to the deadline; `immediate` asks for a forced close right away. */
  readonly mode: 'graceful' | 'immediate';
  /** Aborted at the deadline (at once in immediate mode): close everything that is left now. */
  readonly force: AbortSignal;
  /** Epoch milliseconds of the deadline. */
  readonly deadline: number;
}

/** A long-lived part of a binary: a server, a watcher, a client connection. */
export interface Component {
  readonly name: string;
  start(): Promise<void> | void;
  stop(ctx: StopContext): Promise<void> | void;
}

/**
 * Tracks the work a component has in flight (connections, streams, requests) so its stop can
 * wait for it: {@link Drain.hold} returns a release function; {@link Drain.drain} signals
 * `draining`, waits until every hold is released or the deadline passes, then signals `force`
 * and waits a short grace period for the forced closes to land. Mirrors ztunnel's `drain.rs`.
 */
export class Drain {
  readonly #holds = new Map<number, string>();
  readonly #draining = new AbortController();
  readonly #force = new AbortController();
  readonly #events = new EventEmitter();
  #nextId = 0;

  /** Aborted when draining starts: stop accepting new work. */
  get draining(): AbortSignal {
    return this.#draining.signal;
  }

  /** Aborted at the deadline: close what is left. */
  get force(): AbortSignal {
    return this.#force.signal;
  }

  get inFlight(): number {
    return this.#holds.size;
  }

  /** Registers one piece of work; the returned function releases it (idempotent). */
  hold(what = 'work'): () => void {
    const id = this.#nextId++;
    this.#holds.set(id, what);
    return () => {
      if (this.#holds.delete(id) && this.#holds.size === 0) this.#events.emit('idle');
    };
  }

  /**
   * Drains: graceful until `deadline`, then forced. Resolves with what was still held when the
   * deadline passed (empty when the drain was graceful) and what was still held after the grace.
   */
  async drain(deadline: number, forceGraceMs = 1000): Promise<{ forced: string[]; leaked: string[] }> {
    this.#draining.abort();
    const forced = await this.#waitIdle(deadline);
    if (forced.length === 0) return { forced, leaked: [] };
    this.#force.abort();
    const leaked = await this.#waitIdle(Date.now() + forceGraceMs);
    return { forced, leaked };
  }

  async #waitIdle(deadline: number): Promise<string[]> {
    if (this.#holds.size === 0) return [];
    const remaining = deadline - Date.now();
    if (remaining > 0) {
      const timeout = AbortSignal.timeout(remaining);
      try {
        await once(this.#events, 'idle', { signal: timeout });
        return [];
      } catch {
        // The deadline passed with work still held.
      }
    }
    return [...this.#holds.values()];
  }
}

/**
 * Starts components in order and stops them in reverse. A failed start stops what already
 * started and rethrows; a stop that overruns its deadline plus the force grace is logged and
 * abandoned so one stuck component never blocks the others.
 */
export class Lifecycle {
  readonly #components: Component[] = [];
  readonly #started: Component[] = [];
  readonly #log: Logger | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: { log?: Logger } = {}) {
    this.#log = options.log;
  }

  add(component: Component): this {
    if (this.#started.length > 0) {
      throw new LifecycleError(
        'ALREADY_STARTED',
        `cannot add ${component.name}: the lifecycle already started`,
      );
    }
    this.#components.push(component);
    return this;
  }

  /** Starts each component in the order added. */
  async start(): Promise<void> {
    for (const c of this.#components) {
      try {
        await c.start();
        this.#started.push(c);
        this.#log?.debug({ component: c.name }, 'started');
      } catch (err) {
        this.#log?.error({ component: c.name, err }, 'start failed; stopping what started');
        await this.stop({ mode: 'immediate' });
        throw new LifecycleError('START_FAILED', `${c.name} failed to start: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    }
  }

  /**
   * Stops the started components in reverse order, sharing one deadline. Calling it again while
   * a stop runs returns the same promise, except that an immediate stop forces the running one.
   */
  stop(
    options: { mode?: 'graceful' | 'immediate'; deadlineMs?: number; forceGraceMs?: number } = {},
  ): Promise<void> {
    const mode = options.mode ?? 'graceful';
    if (this.#stopping && mode === 'immediate') this.#forceAll.abort();
    this.#stopping ??= this.#stopAll(mode, options.deadlineMs ?? 30_000, options.forceGraceMs ?? 2_000);
    return this.#stopping;
  }

  readonly #forceAll = new AbortController();

  async #stopAll(mode: 'graceful' | 'immediate', deadlineMs: number, forceGraceMs: number): Promise<void> {
    const deadline = Date.now() + (mode === 'immediate' ? 0 : deadlineMs);
    const force = AbortSignal.any([
      this.#forceAll.signal,
      AbortSignal.timeout(Math.max(0, deadline - Date.now())),
    ]);
    if (mode === 'immediate') this.#forceAll.abort();
    const ctx: StopContext = { mode, force, deadline };
    for (const c of this.#started.reverse()) {
      const budget = Math.max(0, deadline - Date.now()) + forceGraceMs;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve(c.stop(ctx)),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new LifecycleError('STOP_TIMEOUT', `${c.name} did not stop within ${budget}ms`)),
              budget,
            );
          }),
        ]);
        this.#log?.debug({ component: c.name }, 'stopped');
      } catch (err) {
        this.#log?.error({ component: c.name, err }, 'stop failed');
      } finally {
        clearTimeout(timer);
      }
    }
    this.#started.length = 0;
  }
}

/**
 * Readiness as the set of named tasks that have not finished (ztunnel's `readiness`): ready when
 * the set is empty. A task can come back (a control-plane connection lost) by registering again.
 */
export class Readiness {
  readonly #pending = new Map<string, number>();
  readonly #events = new EventEmitter();

  /** Marks `name` pending; the returned function marks it done (idempotent). */
  register(name: string): () => void {
    this.#pending.set(name, (this.#pending.get(name) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.#pending.get(name) ?? 1) - 1;
      if (n <= 0) this.#pending.delete(name);
      else this.#pending.set(name, n);
      if (this.#pending.size === 0) this.#events.emit('ready');
    };
  }

  get ready(): boolean {
    return this.#pending.size === 0;
  }

  /** The names still pending, sorted, for `/healthz/ready` bodies and logs. */
  pending(): string[] {
    return [...this.#pending.keys()].sort();
  }

  /** Resolves once ready; rejects when the signal aborts first. */
  async whenReady(signal?: AbortSignal): Promise<void> {
    if (this.ready) return;
    await once(this.#events, 'ready', signal ? { signal } : {});
  }
}

/**
 * Stops the lifecycle on SIGTERM or SIGINT (graceful), and forces it on a second signal, like
 * Kubernetes' termination followed by an operator's Ctrl-C. Returns a function that removes the
 * handlers.
 */
export function stopOnSignals(
  lifecycle: Lifecycle,
  options: { deadlineMs: number; onStopped?: () => void; log?: Logger },
): () => void {
  let signalled = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (signalled) {
      options.log?.warn({ signal }, 'second signal: forcing stop');
      void lifecycle.stop({ mode: 'immediate' });
      return;
    }
    signalled = true;
    options.log?.info({ signal, deadlineMs: options.deadlineMs }, 'draining');
    void lifecycle
      .stop({ mode: 'graceful', deadlineMs: options.deadlineMs })
      .then(() => options.onStopped?.());
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}
