/**
 * The local mesh's API server, scheduler and controllers: it keeps what `apply` asked for
 * (Namespaces, Deployments, Pods, Services, policies), writes what istiod and the istio-cni agents
 * read into the manifests directory, schedules pods onto nodes (`spec.nodeName`, or the node with
 * the fewest pods of the same owner, round robin among equals), keeps each Deployment at its
 * replica count and template, and hands pods to the kubelet (kubelet.ts) to run.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '@ambient/common/log';
import type { MeshNode } from '@ambient/test/harness';
import { AmbientctlError } from '../errors.ts';
import { ClusterIpPool } from './ip-pools.ts';
import { Kubelet, type PodOwner, type PodStatus, type RunningPod, sleep } from './kubelet.ts';
import type { MeshLayout } from './layout.ts';
import type { ManifestStore, StoredObject } from './manifest-store.ts';
import {
  DEFAULT_NAMESPACE,
  describeResource,
  type KubeDoc,
  type RejectedDocument,
  type Resource,
  type SupportedKind,
  stringMap,
  type WorkloadSpec,
} from './resources.ts';

export interface ApplyResult {
  readonly kind: string;
  readonly namespace: string | undefined;
  readonly name: string;
  readonly action: 'created' | 'configured' | 'unchanged';
}

/** A rollout deletes the old pods once the new ones are ready, or after this long regardless. */
const ROLLOUT_MAX_WAIT_MS = 60_000;
/** k8s's alphabet for generated name parts: no vowels (no words), no look-alikes. */
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

const APPLY_ORDER: readonly SupportedKind[] = [
  'Namespace',
  'Service',
  'AuthorizationPolicy',
  'PeerAuthentication',
  'Pod',
  'Deployment',
];

/** The kind names `delete` accepts, kubectl style. */
const KIND_ALIASES: Readonly<Record<string, SupportedKind>> = {
  namespace: 'Namespace',
  namespaces: 'Namespace',
  ns: 'Namespace',
  pod: 'Pod',
  pods: 'Pod',
  po: 'Pod',
  deployment: 'Deployment',
  deployments: 'Deployment',
  deploy: 'Deployment',
  service: 'Service',
  services: 'Service',
  svc: 'Service',
  authorizationpolicy: 'AuthorizationPolicy',
  authorizationpolicies: 'AuthorizationPolicy',
  peerauthentication: 'PeerAuthentication',
  peerauthentications: 'PeerAuthentication',
  pa: 'PeerAuthentication',
};

export function normalizeKind(kind: string): SupportedKind | undefined {
  return KIND_ALIASES[kind.toLowerCase()];
}

/** JSON with sorted keys: equal objects give equal text. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function nameSuffix(length: number, seed?: Buffer): string {
  const bytes = seed ?? randomBytes(length);
  let out = '';
  for (let i = 0; i < length; i++) out += NAME_ALPHABET[(bytes[i] ?? 0) % NAME_ALPHABET.length];
  return out;
}

function matches(
  labels: Readonly<Record<string, string>>,
  selector: Readonly<Record<string, string>>,
): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

interface DeploymentEntry {
  readonly resource: Resource;
  readonly hash: string;
  readonly replicas: number;
  /** ReplicaSet uid per template hash. */
  readonly replicaSets: Map<string, string>;
}

interface ServiceEntry {
  readonly applied: string;
  readonly clusterIP: string | undefined;
}

export interface PodRunnerOptions {
  /** The worker nodes pods are scheduled on. */
  readonly nodes: readonly MeshNode[];
  readonly store: ManifestStore;
  readonly layout: MeshLayout;
  readonly log: Logger;
}

export class PodRunner {
  readonly #nodes: readonly MeshNode[];
  readonly #store: ManifestStore;
  readonly #namespaces = new Map<string, string>();
  readonly #deployments = new Map<string, DeploymentEntry>();
  readonly #services = new Map<string, ServiceEntry>();
  /** `Kind/namespace/name` → applied object. */
  readonly #policies = new Map<string, string>();
  readonly #pods = new Map<string, RunningPod>();
  /** Pods applied directly: the applied object, to tell `unchanged` from `configured`. */
  readonly #appliedPods = new Map<string, string>();
  readonly #kubelet: Kubelet;
  readonly #clusterIps = new ClusterIpPool();
  #cursor = 0;
  #closed = false;

  constructor(options: PodRunnerOptions) {
    this.#nodes = options.nodes;
    this.#store = options.store;
    this.#kubelet = new Kubelet({ ...options, onRemoved: (pod) => this.#onRemoved(pod) });
  }

  // ---------------------------------------------------------------------------------------------
  // apply / delete

  /**
   * Applies valid resources, Namespaces first and workloads last. A resource that cannot be applied
   * (its namespace does not exist, a pod spec change the API server would refuse) is reported in
   * `rejected` and the others still apply.
   */
  async apply(
    resources: readonly Resource[],
  ): Promise<{ results: ApplyResult[]; rejected: RejectedDocument[] }> {
    this.#assertOpen();
    const ordered = [...resources].sort((a, b) => APPLY_ORDER.indexOf(a.kind) - APPLY_ORDER.indexOf(b.kind));
    const results: ApplyResult[] = [];
    const rejected: RejectedDocument[] = [];
    for (const r of ordered) {
      try {
        const action = await this.#applyOne(r);
        results.push({ kind: r.kind, namespace: r.namespace, name: r.name, action });
      } catch (err) {
        if (!(err instanceof AmbientctlError)) throw err;
        rejected.push({ line: r.line, ref: describeResource(r), reason: err.message });
      }
    }
    return { results, rejected };
  }

  async #applyOne(r: Resource): Promise<ApplyResult['action']> {
    if (r.kind !== 'Namespace') this.#requireNamespace(r);
    const applied = canonical(r.object);
    switch (r.kind) {
      case 'Namespace': {
        const prev = this.#namespaces.get(r.name);
        if (prev === applied) return 'unchanged';
        this.#namespaces.set(r.name, applied);
        await this.#store.write(r.object as unknown as StoredObject);
        return prev === undefined ? 'created' : 'configured';
      }
      case 'AuthorizationPolicy':
      case 'PeerAuthentication': {
        const key = `${r.kind}/${r.namespace}/${r.name}`;
        const prev = this.#policies.get(key);
        if (prev === applied) return 'unchanged';
        this.#policies.set(key, applied);
        await this.#store.write(r.object as unknown as StoredObject);
        return prev === undefined ? 'created' : 'configured';
      }
      case 'Service':
        return this.#applyService(r, applied);
      case 'Pod':
        return this.#applyPod(r, applied);
      case 'Deployment':
        return this.#applyDeployment(r, applied);
    }
  }

  #requireNamespace(r: Resource): void {
    const ns = r.namespace ?? DEFAULT_NAMESPACE;
    if (!this.#namespaces.has(ns)) {
      throw new AmbientctlError(
        'MANIFEST_INVALID',
        `namespace ${ns} does not exist; apply a Namespace ${ns} first (in the same file is fine)`,
      );
    }
  }

  async #applyService(r: Resource, applied: string): Promise<ApplyResult['action']> {
    const key = `${r.namespace}/${r.name}`;
    const prev = this.#services.get(key);
    if (prev?.applied === applied) return 'unchanged';
    const spec = { ...((r.object.spec as Record<string, unknown> | undefined) ?? {}) };
    const wanted = typeof spec.clusterIP === 'string' && spec.clusterIP !== '' ? spec.clusterIP : undefined;
    let clusterIP: string | undefined;
    if (wanted === 'None') {
      clusterIP = undefined;
    } else if (wanted !== undefined) {
      if (prev?.clusterIP !== undefined && prev.clusterIP !== wanted) {
        throw new AmbientctlError(
          'MANIFEST_INVALID',
          `spec.clusterIP: may not change (is ${prev.clusterIP}); delete the Service to give it another`,
        );
      }
      if (
        prev?.clusterIP !== wanted &&
        !this.#clusterIps.reserve(wanted) &&
        this.#clusterIps.contains(wanted)
      ) {
        throw new AmbientctlError('MANIFEST_INVALID', `spec.clusterIP: ${wanted} is already allocated`);
      }
      clusterIP = wanted;
    } else {
      clusterIP = prev?.clusterIP ?? this.#clusterIps.allocate();
      if (clusterIP === undefined)
        throw new AmbientctlError('MANIFEST_INVALID', 'the service CIDR is exhausted');
    }
    if (prev?.clusterIP !== undefined && prev.clusterIP !== clusterIP)
      this.#clusterIps.release(prev.clusterIP);
    this.#services.set(key, { applied, clusterIP });
    const effective = {
      ...r.object,
      spec: {
        type: 'ClusterIP',
        ...spec,
        clusterIP: clusterIP ?? 'None',
        clusterIPs: clusterIP === undefined ? ['None'] : [clusterIP],
      },
    };
    await this.#store.write(effective as unknown as StoredObject);
    return prev === undefined ? 'created' : 'configured';
  }

  async #applyPod(r: Resource, applied: string): Promise<ApplyResult['action']> {
    const key = `${r.namespace}/${r.name}`;
    const workload = r.workload as WorkloadSpec;
    if (workload.nodeName !== undefined) this.#node(workload.nodeName);
    let existing = this.#pods.get(key);
    if (existing?.deleting) {
      await existing.deleting;
      existing = this.#pods.get(key);
    }
    if (existing !== undefined) {
      if (existing.owner !== undefined) {
        throw new AmbientctlError(
          'MANIFEST_INVALID',
          `pod ${key} belongs to Deployment ${existing.owner.deployment}; change the Deployment instead`,
        );
      }
      if (this.#appliedPods.get(key) === applied) return 'unchanged';
      const spec = r.object.spec as Record<string, unknown>;
      if (canonical(spec) !== canonical(existing.specDoc)) {
        throw new AmbientctlError(
          'MANIFEST_INVALID',
          'spec: a pod may not change other than its labels and annotations; delete it and apply it again',
        );
      }
      // Labels and annotations are the only mutable fields; the agent's annotation is kept.
      const meta = r.object.metadata;
      this.#appliedPods.set(key, applied);
      await this.#kubelet.relabel(existing, stringMap(meta.labels), stringMap(meta.annotations));
      return 'configured';
    }
    const meta = r.object.metadata;
    this.#createPod({
      namespace: r.namespace as string,
      name: r.name,
      labels: stringMap(meta.labels),
      annotations: stringMap(meta.annotations),
      specDoc: r.object.spec as Record<string, unknown>,
      workload,
      owner: undefined,
      applied,
    });
    return 'created';
  }

  async #applyDeployment(r: Resource, applied: string): Promise<ApplyResult['action']> {
    const key = `${r.namespace}/${r.name}`;
    const prev = this.#deployments.get(key);
    if (prev !== undefined && canonical(prev.resource.object) === applied) return 'unchanged';
    const workload = r.workload as WorkloadSpec;
    if (workload.nodeName !== undefined) this.#node(workload.nodeName);
    const spec = r.object.spec as Record<string, unknown>;
    const template = spec.template as Record<string, unknown>;
    const hashBytes = createHash('sha256').update(canonical(template)).digest();
    const hash = nameSuffix(10, hashBytes);
    const entry: DeploymentEntry = {
      resource: r,
      hash,
      replicas: typeof spec.replicas === 'number' ? spec.replicas : 1,
      replicaSets: prev?.replicaSets ?? new Map(),
    };
    if (!entry.replicaSets.has(hash)) entry.replicaSets.set(hash, randomUUID());
    this.#deployments.set(key, entry);
    this.#reconcileDeployment(key);
    return prev === undefined ? 'created' : 'configured';
  }

  /**
   * Deletes one object; false when there is none. Deleting a Namespace deletes everything in it;
   * a Deployment its pods. A Deployment's pod is replaced by a new one, as its ReplicaSet would.
   */
  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    this.#assertOpen();
    const k = normalizeKind(kind);
    if (k === undefined) {
      throw new AmbientctlError(
        'USAGE',
        `unknown kind ${JSON.stringify(kind)}; one of namespace, pod, deployment, service, authorizationpolicy, peerauthentication`,
      );
    }
    const ns = namespace ?? DEFAULT_NAMESPACE;
    const key = `${ns}/${name}`;
    switch (k) {
      case 'Namespace':
        return this.#deleteNamespace(name);
      case 'Deployment': {
        const d = this.#deployments.get(key);
        if (d === undefined) return false;
        this.#deployments.delete(key);
        await Promise.all(this.#ownedPods(ns, name).map((p) => this.#deletePod(p, 'deployment deleted')));
        return true;
      }
      case 'Pod': {
        const p = this.#pods.get(key);
        if (p === undefined || p.deleting) return p !== undefined;
        const deleted = this.#deletePod(p, 'deleted');
        if (p.owner !== undefined) this.#reconcileDeployment(`${ns}/${p.owner.deployment}`);
        await deleted;
        return true;
      }
      case 'Service': {
        const s = this.#services.get(key);
        if (s === undefined) return false;
        this.#services.delete(key);
        if (s.clusterIP !== undefined) this.#clusterIps.release(s.clusterIP);
        await this.#store.remove('Service', ns, name);
        return true;
      }
      case 'AuthorizationPolicy':
      case 'PeerAuthentication': {
        if (!this.#policies.delete(`${k}/${key}`)) return false;
        await this.#store.remove(k, ns, name);
        return true;
      }
    }
  }

  async #deleteNamespace(name: string): Promise<boolean> {
    if (!this.#namespaces.has(name)) return false;
    for (const key of [...this.#deployments.keys()])
      if (key.startsWith(`${name}/`)) this.#deployments.delete(key);
    const pods = [...this.#pods.values()].filter((p) => p.namespace === name);
    await Promise.all(pods.map((p) => this.#deletePod(p, 'namespace deleted')));
    for (const key of [...this.#services.keys()]) {
      if (key.startsWith(`${name}/`)) await this.delete('Service', name, key.slice(name.length + 1));
    }
    for (const key of [...this.#policies.keys()]) {
      const [kind, ns, n] = key.split('/');
      if (ns === name && kind !== undefined && n !== undefined) await this.delete(kind, ns, n);
    }
    this.#namespaces.delete(name);
    await this.#store.remove('Namespace', undefined, name);
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // status

  pods(): PodStatus[] {
    return [...this.#pods.values()]
      .map((p) => this.#kubelet.status(p))
      .sort((a, b) => (a.namespace + a.name < b.namespace + b.name ? -1 : 1));
  }

  /** The ClusterIP of a Service, and its ports (`port` → `targetPort`). */
  service(namespace: string, name: string): { clusterIP: string | undefined } | undefined {
    const s = this.#services.get(`${namespace}/${name}`);
    return s === undefined ? undefined : { clusterIP: s.clusterIP };
  }

  /**
   * Waits until every pod of `namespace` matching `selector` is Running and ready, and every
   * Deployment there whose pods match has its replicas of the current template (rollout done).
   */
  async waitRunning(
    namespace: string,
    selector: Readonly<Record<string, string>>,
    timeoutMs: number,
  ): Promise<PodStatus[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pods = [...this.#pods.values()].filter(
        (p) => p.namespace === namespace && matches(p.labels, selector),
      );
      const problems: string[] = [];
      for (const [key, d] of this.#deployments) {
        if (!key.startsWith(`${namespace}/`)) continue;
        const tmplLabels = stringMap(
          (
            (d.resource.object.spec as Record<string, unknown>).template as {
              metadata?: { labels?: unknown };
            }
          ).metadata?.labels,
        );
        if (!matches(tmplLabels, selector)) continue;
        const owned = this.#ownedPods(namespace, d.resource.name);
        const current = owned.filter((p) => p.owner?.hash === d.hash);
        if (current.length !== d.replicas || owned.length !== current.length) {
          problems.push(
            `deployment ${key}: ${current.length}/${d.replicas} pods of the current template, ${owned.length - current.length} old`,
          );
        }
      }
      for (const p of pods) {
        if (p.deleting) problems.push(`pod ${p.namespace}/${p.name}: terminating`);
        else if (!this.#kubelet.ready(p)) {
          problems.push(
            `pod ${p.namespace}/${p.name}: ${p.phase}, not ready${p.message ? ` (${p.message})` : ''}`,
          );
        }
      }
      if (problems.length === 0) return pods.map((p) => this.#kubelet.status(p));
      if (Date.now() > deadline) {
        throw new AmbientctlError(
          'TIMEOUT',
          `pods in namespace ${namespace} not running after ${timeoutMs} ms: ${problems.join('; ')}`,
        );
      }
      await sleep(100);
    }
  }

  /** Runs `argv` in the pod's netns and cgroup. */
  exec(
    namespace: string,
    name: string,
    argv: readonly string[],
    opts: { timeoutMs?: number; check?: boolean } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const p = this.#pods.get(`${namespace}/${name}`);
    if (p === undefined)
      return Promise.reject(new AmbientctlError('POD_NOT_FOUND', `no pod ${namespace}/${name}`));
    return this.#kubelet.exec(p, argv, opts);
  }

  /** Namespaces the mesh itself needs (istio-system, default), known without an apply. */
  async ensureNamespace(object: KubeDoc): Promise<void> {
    const name = object.metadata.name as string;
    this.#namespaces.set(name, canonical(object));
    await this.#store.write(object as unknown as StoredObject);
  }

  /**
   * Stops every pod's processes and timers without the graceful deletion steps, for `down`: the
   * harness teardown that follows removes sandboxes wholesale.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#kubelet.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new AmbientctlError('MESH_STOPPED', 'the local mesh is shut down');
  }

  // ---------------------------------------------------------------------------------------------
  // deployments

  #ownedPods(namespace: string, deployment: string): RunningPod[] {
    return [...this.#pods.values()].filter(
      (p) => p.namespace === namespace && p.owner?.deployment === deployment && p.deleting === undefined,
    );
  }

  /** Brings a Deployment's pods to its replica count and template (new pods first, then the old go). */
  #reconcileDeployment(key: string): void {
    const d = this.#deployments.get(key);
    if (d === undefined || this.#closed) return;
    const { namespace, name } = d.resource as { namespace: string; name: string };
    const owned = this.#ownedPods(namespace, name);
    const current = owned.filter((p) => p.owner?.hash === d.hash);
    const stale = owned.filter((p) => p.owner?.hash !== d.hash);
    const template = (d.resource.object.spec as Record<string, unknown>).template as Record<string, unknown>;
    const tmeta = (template.metadata ?? {}) as Record<string, unknown>;
    for (let i = current.length; i < d.replicas; i++) {
      const replicaSet = `${name}-${d.hash}`;
      this.#createPod({
        namespace,
        name: this.#freshPodName(namespace, replicaSet),
        labels: { ...stringMap(tmeta.labels), 'pod-template-hash': d.hash },
        annotations: stringMap(tmeta.annotations),
        specDoc: template.spec as Record<string, unknown>,
        workload: d.resource.workload as WorkloadSpec,
        owner: {
          deployment: name,
          replicaSet,
          replicaSetUid: d.replicaSets.get(d.hash) ?? randomUUID(),
          hash: d.hash,
        },
        applied: undefined,
      });
    }
    // Scale down: the newest go first, as a ReplicaSet prefers.
    const surplus = current.length - d.replicas;
    if (surplus > 0) {
      const newestFirst = [...current].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
      for (const p of newestFirst.slice(0, surplus)) void this.#deletePod(p, 'scaled down');
    }
    if (stale.length > 0) void this.#retireAfterRollout(key, stale);
  }

  async #retireAfterRollout(key: string, stale: readonly RunningPod[]): Promise<void> {
    const deadline = Date.now() + ROLLOUT_MAX_WAIT_MS;
    while (Date.now() < deadline && !this.#closed) {
      const d = this.#deployments.get(key);
      if (d === undefined) return;
      const { namespace, name } = d.resource as { namespace: string; name: string };
      const current = this.#ownedPods(namespace, name).filter((p) => p.owner?.hash === d.hash);
      if (current.length >= d.replicas && current.every((p) => this.#kubelet.ready(p))) break;
      await sleep(200);
    }
    await Promise.all(stale.map((p) => this.#deletePod(p, 'replaced by a new template')));
  }

  #freshPodName(namespace: string, replicaSet: string): string {
    for (;;) {
      const name = `${replicaSet}-${nameSuffix(5)}`;
      if (!this.#pods.has(`${namespace}/${name}`)) return name;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // pods

  #node(name: string): MeshNode {
    const n = this.#nodes.find((x) => x.name === name);
    if (n === undefined) {
      throw new AmbientctlError(
        'MANIFEST_INVALID',
        `spec.nodeName: no node ${JSON.stringify(name)} (nodes: ${this.#nodes.map((x) => x.name).join(', ')})`,
      );
    }
    return n;
  }

  /** The node with the fewest pods of this owner; ties go round robin. */
  #schedule(namespace: string, owner: string | undefined): MeshNode {
    const counts = this.#nodes.map(
      (n) =>
        [...this.#pods.values()].filter(
          (p) =>
            p.node === n &&
            p.deleting === undefined &&
            (owner === undefined || (p.namespace === namespace && p.owner?.deployment === owner)),
        ).length,
    );
    const min = Math.min(...counts);
    for (let i = 0; i < this.#nodes.length; i++) {
      const idx = (this.#cursor + i) % this.#nodes.length;
      if (counts[idx] === min) {
        this.#cursor = (idx + 1) % this.#nodes.length;
        return this.#nodes[idx] as MeshNode;
      }
    }
    return this.#nodes[0] as MeshNode;
  }

  #createPod(p: {
    namespace: string;
    name: string;
    labels: Record<string, string>;
    annotations: Record<string, string>;
    specDoc: Record<string, unknown>;
    workload: WorkloadSpec;
    owner: PodOwner | undefined;
    applied: string | undefined;
  }): RunningPod {
    const node =
      p.workload.nodeName !== undefined
        ? this.#node(p.workload.nodeName)
        : this.#schedule(p.namespace, p.owner?.deployment);
    const pod = this.#kubelet.run({ ...p, node });
    const key = `${p.namespace}/${p.name}`;
    this.#pods.set(key, pod);
    if (p.applied !== undefined) this.#appliedPods.set(key, p.applied);
    return pod;
  }

  #deletePod(pod: RunningPod, why: string): Promise<void> {
    return this.#kubelet.delete(pod, why);
  }

  #onRemoved(pod: RunningPod): void {
    const key = `${pod.namespace}/${pod.name}`;
    if (this.#pods.get(key) !== pod) return;
    this.#pods.delete(key);
    this.#appliedPods.delete(key);
  }
}
