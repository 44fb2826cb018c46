import type { Pod } from '@ambient/common/config/objects';
import type { ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { errorMessage } from '@ambient/common/errors';
import { DEFAULT_SERVICE_ACCOUNT, type Identity, parseIdentity } from '@ambient/common/identity';
import type { Caller } from '../security/authenticate.ts';
import { ImpersonationError } from './errors.ts';

/** A `namespace/serviceaccount` allowed to request certificates for the pods on its node. */
export interface NodeAccount {
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** The chart's `CA_TRUSTED_NODE_ACCOUNTS` value: the ztunnel DaemonSet's account. */
export const DEFAULT_TRUSTED_NODE_ACCOUNTS: readonly NodeAccount[] = [
  { namespace: 'istio-system', serviceAccount: 'ztunnel' },
];

/**
 * Parses `CA_TRUSTED_NODE_ACCOUNTS`: comma-separated `namespace/serviceaccount`. Empty entries are
 * skipped; an entry without exactly one `/` throws RangeError naming it.
 */
export function parseTrustedNodeAccounts(value: string): NodeAccount[] {
  const accounts: NodeAccount[] = [];
  for (const raw of value.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const parts = entry.split('/');
    if (parts.length !== 2 || !parts[0] || !parts[1]) {
      throw new RangeError(
        `trusted node account ${JSON.stringify(entry)} is not <namespace>/<serviceaccount>`,
      );
    }
    accounts.push({ namespace: parts[0], serviceAccount: parts[1] });
  }
  return accounts;
}

/** Decides whether a caller may obtain a certificate for another identity. */
export interface ImpersonationAuthorizer {
  /** The identity to certify; throws ImpersonationError (logged, answered opaquely) when refused. */
  authorize(caller: Caller, requested: string): Identity;
}

export interface NodeAuthorizerOptions {
  readonly store: ConfigStore;
  /** The mesh trust domain; a requested identity in another one is refused. */
  readonly trustDomain: string;
  /** `CA_TRUSTED_NODE_ACCOUNTS`; empty refuses every impersonation. */
  readonly trustedNodeAccounts: readonly NodeAccount[];
}

const SEP = '\u0000';

/**
 * Node authorization for `ImpersonatedIdentity` (spec §4.3, upstream `ClusterNodeAuthorizer`): a
 * trusted node account (ztunnel) may get a certificate for a namespace/service account only when a
 * pod that is not Failed runs it on the caller pod's own node. So a compromised ztunnel reaches
 * only the identities co-located with it.
 *
 * The lookup is an index node + namespace/service account → pod count, kept current from the
 * ConfigStore's change events; a request costs two map reads, never a scan of the pods.
 */
export class NodeAuthorizer implements ImpersonationAuthorizer {
  readonly #store: ConfigStore;
  readonly #trustDomain: string;
  readonly #trusted: ReadonlySet<string>;
  /** `node\0ns\0sa` → number of non-Failed pods. */
  readonly #counts = new Map<string, number>();
  /** pod key (`ns/name`) → the index key it counts under, so updates never rely on the old object. */
  readonly #contribution = new Map<string, string>();
  readonly #onChanges = (changes: readonly ConfigChange[]): void => {
    for (const c of changes) if (c.kind === 'Pod') this.#index(c.key, c.new as Pod | undefined);
  };
  #closed = false;

  constructor(options: NodeAuthorizerOptions) {
    this.#store = options.store;
    this.#trustDomain = options.trustDomain;
    this.#trusted = new Set(options.trustedNodeAccounts.map((a) => `${a.namespace}/${a.serviceAccount}`));
    this.#store.on('changes', this.#onChanges);
    for (const pod of this.#store.list('Pod')) {
      this.#index(`${pod.metadata.namespace ?? ''}/${pod.metadata.name}`, pod);
    }
  }

  /** Stops following the store. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#store.off('changes', this.#onChanges);
  }

  /** Non-Failed pods running `namespace/serviceAccount` on `node` (for tests and debug endpoints). */
  podCount(node: string, namespace: string, serviceAccount: string): number {
    return this.#counts.get(indexKey(node, namespace, serviceAccount)) ?? 0;
  }

  authorize(caller: Caller, requested: string): Identity {
    if (this.#trusted.size === 0) {
      throw new ImpersonationError(
        'IMPERSONATION_DISABLED',
        'no trusted node accounts are configured; impersonation is off',
      );
    }
    const account = `${caller.namespace}/${caller.serviceAccount}`;
    if (!this.#trusted.has(account)) {
      throw new ImpersonationError(
        'CALLER_NOT_TRUSTED',
        `caller ${account} is not a trusted node account and may not impersonate`,
      );
    }
    let id: Identity;
    try {
      id = parseIdentity(requested);
    } catch (err) {
      throw new ImpersonationError(
        'REQUESTED_IDENTITY_INVALID',
        `impersonated identity: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    if (id.trustDomain !== this.#trustDomain) {
      throw new ImpersonationError(
        'REQUESTED_TRUST_DOMAIN',
        `impersonated identity ${JSON.stringify(requested)} is not in trust domain ${JSON.stringify(this.#trustDomain)}`,
      );
    }
    if (!caller.podName || !caller.podUid) {
      throw new ImpersonationError(
        'CALLER_POD_UNKNOWN',
        `caller ${account} authenticated without a pod name and uid`,
      );
    }
    const pod = this.#store.get('Pod', caller.namespace, caller.podName);
    if (!pod) {
      throw new ImpersonationError(
        'CALLER_POD_UNKNOWN',
        `caller pod ${caller.namespace}/${caller.podName} is not known`,
      );
    }
    if (pod.metadata.uid !== caller.podUid) {
      throw new ImpersonationError(
        'CALLER_POD_UID_MISMATCH',
        `caller pod ${caller.namespace}/${caller.podName} has uid ${pod.metadata.uid ?? '(none)'}, the credential names ${caller.podUid}`,
      );
    }
    const podAccount = pod.spec?.serviceAccountName || DEFAULT_SERVICE_ACCOUNT;
    if (podAccount !== caller.serviceAccount) {
      throw new ImpersonationError(
        'CALLER_POD_ACCOUNT_MISMATCH',
        `caller pod ${caller.namespace}/${caller.podName} runs as ${podAccount}, the credential as ${caller.serviceAccount}`,
      );
    }
    const node = pod.spec?.nodeName;
    if (!node) {
      throw new ImpersonationError(
        'CALLER_POD_NO_NODE',
        `caller pod ${caller.namespace}/${caller.podName} is not on a node`,
      );
    }
    if (this.podCount(node, id.namespace, id.serviceAccount) === 0) {
      throw new ImpersonationError(
        'IDENTITY_NOT_ON_NODE',
        `no running pod of ${id.namespace}/${id.serviceAccount} is on node ${node} of caller ${caller.namespace}/${caller.podName}`,
      );
    }
    return id;
  }

  #index(podKey: string, pod: Pod | undefined): void {
    const previous = this.#contribution.get(podKey);
    if (previous !== undefined) {
      const n = (this.#counts.get(previous) ?? 1) - 1;
      if (n <= 0) this.#counts.delete(previous);
      else this.#counts.set(previous, n);
      this.#contribution.delete(podKey);
    }
    // Upstream's pod informer is filtered with status.phase!=Failed; other phases count.
    if (!pod || pod.status?.phase === 'Failed' || !pod.spec?.nodeName || !pod.metadata.namespace) return;
    const key = indexKey(
      pod.spec.nodeName,
      pod.metadata.namespace,
      pod.spec.serviceAccountName || DEFAULT_SERVICE_ACCOUNT,
    );
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    this.#contribution.set(podKey, key);
  }
}

function indexKey(node: string, namespace: string, serviceAccount: string): string {
  return `${node}${SEP}${namespace}${SEP}${serviceAccount}`;
}
