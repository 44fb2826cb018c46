/*
 * INVARIANT: there is no `await` (and no callback into foreign code) between the first and the
 * last mutation of a push. Every resource of a push is converted first; the good ones are then
 * applied in one synchronous block. JavaScript runs that block to completion, so no reader, timer
 * or I/O callback can observe half a push; this replaces ztunnel's write lock. Waiters and event
 * listeners run only after the block.
 */
import type { Authorization as PbAuthorization } from '@ambient/common/gen/istio/security/authorization_pb';
import type { Address as PbAddress } from '@ambient/common/gen/istio/workload/workload_pb';
import { type Logger, logger } from '../log.ts';
import { type Authorization, authorizationFromProto } from './authorization.ts';
import { ModelError } from './errors.ts';
import { claimStateWriter, type ProxyState, type ProxyStateWriter } from './proxy-state.ts';
import { type Service, serviceFromProto } from './service.ts';
import { type Workload, workloadFromProto } from './workload.ts';

/** One resource of a delta xDS response: its name and, for an upsert, its body. */
export interface ResourceUpdate<T> {
  readonly name: string;
  readonly resource?: T;
}

/** A resource the updater refused; the xDS client NACKs with the reasons. */
export interface Rejected {
  readonly name: string;
  readonly reason: string;
  readonly error: ModelError;
}

export interface WorkloadsChanged {
  /** Inserted or replaced workloads, as now stored (prefetch certificates for local ones). */
  readonly upserted: readonly Workload[];
  /** Workloads removed by name, as they were. */
  readonly removed: readonly Workload[];
}

export interface ServicesChanged {
  readonly upserted: readonly Service[];
  readonly removed: readonly Service[];
}

export interface PoliciesChanged {
  /** `ns/name` keys inserted or replaced. */
  readonly upserted: readonly string[];
  /** `ns/name` keys removed. */
  readonly removed: readonly string[];
}

/** Events emitted after a push is applied; only non-empty changes are emitted. */
export interface ProxyStateEvents {
  readonly workloadsChanged: WorkloadsChanged;
  readonly servicesChanged: ServicesChanged;
  /** Re-check live connections' authorization when this fires (spec §3.6). */
  readonly policiesChanged: PoliciesChanged;
}

export interface ProxyStateUpdaterOptions {
  readonly log?: Logger;
}

type Listener<E extends keyof ProxyStateEvents> = (event: ProxyStateEvents[E]) => void;

type ConvertedAddress =
  | { readonly kind: 'workload'; readonly workload: Workload }
  | { readonly kind: 'service'; readonly service: Service };

function convertAddress(update: ResourceUpdate<PbAddress>): ConvertedAddress {
  const body = update.resource;
  if (body === undefined) {
    throw new ModelError('MISSING_RESOURCE', `address ${JSON.stringify(update.name)} has no resource body`);
  }
  switch (body.type.case) {
    case 'workload': {
      const workload = workloadFromProto(body.type.value);
      if (workload.uid !== update.name) {
        throw new ModelError(
          'RESOURCE_NAME_MISMATCH',
          `address ${JSON.stringify(update.name)} carries workload uid ${JSON.stringify(workload.uid)}; a workload resource must be named by its uid`,
        );
      }
      return { kind: 'workload', workload };
    }
    case 'service': {
      const service = serviceFromProto(body.type.value);
      if (service.key !== update.name) {
        throw new ModelError(
          'RESOURCE_NAME_MISMATCH',
          `address ${JSON.stringify(update.name)} carries service ${JSON.stringify(service.key)}; a service resource must be named namespace/hostname`,
        );
      }
      return { kind: 'service', service };
    }
    default:
      throw new ModelError(
        'EMPTY_ADDRESS',
        `address ${JSON.stringify(update.name)} holds neither a workload nor a service`,
      );
  }
}

function convertAuthorization(update: ResourceUpdate<PbAuthorization>): Authorization {
  if (update.resource === undefined) {
    throw new ModelError(
      'MISSING_RESOURCE',
      `authorization ${JSON.stringify(update.name)} has no resource body`,
    );
  }
  const policy = authorizationFromProto(update.resource);
  if (policy.key !== update.name) {
    throw new ModelError(
      'RESOURCE_NAME_MISMATCH',
      `authorization ${JSON.stringify(update.name)} carries policy ${JSON.stringify(policy.key)}; it must be named namespace/name`,
    );
  }
  return policy;
}

/** Converts every update, collecting conversion failures instead of stopping at the first. */
function convertAll<T, M>(
  updates: readonly ResourceUpdate<T>[],
  convert: (u: ResourceUpdate<T>) => M,
): { converted: M[]; rejected: Rejected[] } {
  const converted: M[] = [];
  const rejected: Rejected[] = [];
  for (const u of updates) {
    try {
      converted.push(convert(u));
    } catch (err) {
      // Anything but a ModelError is a bug; nothing has been mutated yet, so let it surface.
      if (!(err instanceof ModelError)) throw err;
      rejected.push({ name: u.name, reason: err.message, error: err });
    }
  }
  return { converted, rejected };
}

/**
 * The only writer of a ProxyState (ztunnel `ProxyStateUpdater`): turns delta xDS pushes of
 * `istio.workload.Address` and `istio.security.Authorization` into model changes. A bad resource
 * is rejected on its own; the rest of its push still applies (checklist 27), and a rejected
 * update leaves the previous version of that resource in place.
 */
export class ProxyStateUpdater {
  readonly #writer: ProxyStateWriter;
  readonly #log: Logger;
  readonly #listeners: { [E in keyof ProxyStateEvents]: Set<Listener<E>> } = {
    workloadsChanged: new Set(),
    servicesChanged: new Set(),
    policiesChanged: new Set(),
  };

  /** Claims the state's write side; a second updater for the same state throws WRITER_ALREADY_CLAIMED. */
  constructor(state: ProxyState, options: ProxyStateUpdaterOptions = {}) {
    this.#writer = claimStateWriter(state);
    this.#log = options.log ?? logger('xds');
  }

  /** Subscribes to change events; returns the unsubscribe function. */
  on<E extends keyof ProxyStateEvents>(event: E, listener: Listener<E>): () => void {
    const set = this.#listeners[event] as Set<Listener<E>>;
    set.add(listener);
    return () => set.delete(listener);
  }

  /**
   * Applies one Address push: upserts keyed by workload uid or service `ns/hostname`, and
   * removals by those names. Returns the rejected resources for the NACK.
   */
  handleAddresses(updates: readonly ResourceUpdate<PbAddress>[], removed: readonly string[]): Rejected[] {
    // 1. Convert everything; nothing is touched yet.
    const { converted, rejected } = convertAll(updates, convertAddress);
    const w = this.#writer;
    const upsertedWorkloads = new Map<string, Workload>();
    const removedWorkloads: Workload[] = [];
    const upsertedServices = new Map<string, Service>();
    const removedServices: Service[] = [];

    // 2. Apply in one synchronous block: removals first, so a name both removed and updated in
    //    one push ends up present.
    // A name is a workload uid or a service `namespace/hostname`; they never collide (a uid has
    // several `/`, a service key exactly one), so trying both is safe.
    for (const name of removed) {
      const prevWorkload = w.workloads.remove(name);
      if (prevWorkload !== undefined) {
        w.services.updateWorkloadEndpoints(undefined, prevWorkload);
        removedWorkloads.push(prevWorkload);
        continue;
      }
      const prevService = w.services.remove(name);
      if (prevService !== undefined) removedServices.push(prevService);
    }
    for (const c of converted) {
      if (c.kind === 'workload') {
        const previous = w.workloads.insert(c.workload);
        w.services.updateWorkloadEndpoints(c.workload, previous);
        upsertedWorkloads.set(c.workload.uid, c.workload);
      } else {
        w.services.insert(c.service);
        upsertedServices.set(c.service.key, c.service);
      }
    }

    // 3. After the block: wake waiters, tell listeners.
    w.wakeWaiters();
    if (upsertedWorkloads.size > 0 || removedWorkloads.length > 0) {
      this.#emit('workloadsChanged', {
        upserted: [...upsertedWorkloads.values()],
        removed: removedWorkloads.filter((x) => !upsertedWorkloads.has(x.uid)),
      });
    }
    if (upsertedServices.size > 0 || removedServices.length > 0) {
      this.#emit('servicesChanged', {
        upserted: [...upsertedServices.values()],
        removed: removedServices.filter((x) => !upsertedServices.has(x.key)),
      });
    }
    this.#logRejects('address', rejected);
    return rejected;
  }

  /** Applies one Authorization push (keys `ns/name`); returns the rejected resources. */
  handleAuthorizations(
    updates: readonly ResourceUpdate<PbAuthorization>[],
    removed: readonly string[],
  ): Rejected[] {
    // 1. Convert everything.
    const { converted, rejected } = convertAll(updates, convertAuthorization);
    const store = this.#writer.policies;
    const upserted = new Set<string>();
    const gone: string[] = [];

    // 2. Apply in one synchronous block.
    for (const key of removed) {
      if (store.remove(key) !== undefined) gone.push(key);
    }
    for (const policy of converted) {
      store.insert(policy);
      upserted.add(policy.key);
    }

    // 3. Tell listeners (connection re-checks).
    if (upserted.size > 0 || gone.length > 0) {
      this.#emit('policiesChanged', {
        upserted: [...upserted],
        removed: gone.filter((k) => !upserted.has(k)),
      });
    }
    this.#logRejects('authorization', rejected);
    return rejected;
  }

  #emit<E extends keyof ProxyStateEvents>(event: E, payload: ProxyStateEvents[E]): void {
    for (const listener of this.#listeners[event] as Set<Listener<E>>) {
      try {
        listener(payload);
      } catch (err) {
        // The push is already applied; a failing listener must not hide that from the caller.
        this.#log.error({ err, event }, 'proxy state listener failed');
      }
    }
  }

  #logRejects(kind: string, rejected: readonly Rejected[]): void {
    for (const r of rejected) this.#log.warn({ resource: r.name, code: r.error.code, kind }, r.reason);
  }
}
