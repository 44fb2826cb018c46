import { ZdsError } from './errors.ts';

/**
 * What one connection's snapshot named: the pods added (whether or not their proxy started, as
 * upstream ztunnel records them) and the pods kept (netns not available to the node agent, but the
 * pod still exists). Every proxy outside both sets belongs to a pod deleted while ztunnel was
 * disconnected and must be drained (`statemanager.rs` `reconcile`).
 */
export class ZdsSnapshot {
  readonly added: ReadonlySet<string>;
  readonly kept: ReadonlySet<string>;

  constructor(added: Iterable<string>, kept: Iterable<string>) {
    this.added = new Set(added);
    this.kept = new Set(kept);
  }

  /** Whether the snapshot named `uid` (added or kept). */
  has(uid: string): boolean {
    return this.added.has(uid) || this.kept.has(uid);
  }

  /** The uids among `known` (the proxies the caller runs) that the snapshot did not name: drop these. */
  stale(known: Iterable<string>): string[] {
    const out: string[] = [];
    for (const uid of known) if (!this.has(uid)) out.push(uid);
    return out;
  }
}

/**
 * The client side's snapshot bookkeeping for one connection, with upstream's sequencing rules: Keep
 * only before SnapshotSent, Del only after it, SnapshotSent once. A rule broken is a `ZDS_PROTOCOL`
 * error (ztunnel NACKs and reconnects).
 */
export class ZdsSnapshotTracker {
  #added = new Set<string>();
  #kept = new Set<string>();
  #received = false;

  /** Forgets everything; called on each new connection. */
  reset(): void {
    this.#added = new Set();
    this.#kept = new Set();
    this.#received = false;
  }

  /** True once this connection's SnapshotSent arrived. */
  get received(): boolean {
    return this.#received;
  }

  add(uid: string): void {
    if (!this.#received) this.#added.add(uid);
  }

  keep(uid: string): void {
    if (this.#received) {
      throw new ZdsError('ZDS_PROTOCOL', `keep request for pod ${uid} after the snapshot was sent`);
    }
    this.#kept.add(uid);
  }

  del(uid: string): void {
    if (!this.#received) {
      throw new ZdsError('ZDS_PROTOCOL', `del request for pod ${uid} before the snapshot was sent`);
    }
  }

  /** Marks the snapshot complete and returns what it named. */
  finish(): ZdsSnapshot {
    if (this.#received) throw new ZdsError('ZDS_PROTOCOL', 'snapshot-sent request received twice');
    this.#received = true;
    const snapshot = new ZdsSnapshot(this.#added, this.#kept);
    this.#added = new Set();
    this.#kept = new Set();
    return snapshot;
  }
}
