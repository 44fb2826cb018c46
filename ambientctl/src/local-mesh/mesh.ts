/**
 * The whole ambient mesh on one Linux machine. `LocalMesh.up` builds, in order:
 * 1. nodes: network namespaces from the netns harness (`node1`…`nodeN` for workloads, plus
 *    `control-plane` for istiod), joined by an underlay bridge; each worker's pod CNI chain is
 *    bridge + host-local + the compiled istio-cni plugin pointing at that node's agent;
 * 2. istiod, local manifests mode, on `control-plane` (the manifests directory is the API server);
 * 3. per worker node, in parallel: the istio-cni node agent (the real one, local config source,
 *    nftables or eBPF redirection, the node netns as its host netns) and ztunnel, each in the node
 *    netns and in its own cgroup;
 * 4. the sample workloads (demo: echo + client, ambient; legacy: client, outside the mesh), run by
 *    the pod runner (pod-runner.ts), until Running and known to every ztunnel.
 * Every component is supervised: an unexpected exit is restarted and counted.
 *
 * Everything created is named after the harness run key (`ambh-<pid>-<start>-<seq>`): netns,
 * cgroups, the temp dir, the eBPF pin root `/sys/fs/bpf/<key>`. `down()` removes it; after a
 * crash, `sweepLocalMeshes()` (or any later harness) removes runs whose owner process is gone and
 * never touches a live one.
 */
import { randomBytes } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  type WriteStream,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { REDIRECT_OBJECT_PATH } from '@ambient/cni/redirect';
import { errorMessage } from '@ambient/common/errors';
import { type Logger, Logging } from '@ambient/common/log';
import type { ConfigDump } from '@ambient/common/model';
import { isSupported as nativeSupported } from '@ambient/native';
import {
  Harness,
  type MeshNode,
  ProcessHost,
  sweepLeftovers,
  unifiedCgroupRoot,
} from '@ambient/test/harness';
import { stringify } from 'yaml';
import { AmbientctlError } from '../errors.ts';
import { SAMPLE_MANIFESTS } from '../samples/manifests.ts';
import { type ComponentName, type ComponentStatus, SupervisedComponent } from './component.ts';
import {
  cniAgentSpec,
  ISTIOD_XDS_PORT,
  istiodSpec,
  type RedirectMode,
  SYSTEM_NAMESPACE,
  ZTUNNEL_ADMIN_PORT,
  ZTUNNEL_STATS_PORT,
  ztunnelPodName,
  ztunnelSpec,
} from './component-specs.ts';
import type { PodStatus } from './kubelet.ts';
import { MeshLayout } from './layout.ts';
import { ManifestStore } from './manifest-store.ts';
import { type HttpAnswer, httpGetInNetns } from './netns-http.ts';
import { type ApplyResult, PodRunner } from './pod-runner.ts';
import { DEFAULT_NAMESPACE, parseResources, type RejectedDocument } from './resources.ts';

export type { ComponentStatus } from './component.ts';
export type { RedirectMode } from './component-specs.ts';
export type { PodPhase, PodStatus } from './kubelet.ts';
export type { ApplyResult } from './pod-runner.ts';

/** The compiled istio-cni plugin (`npm run build` → cni/scripts/build-plugin.ts). */
export const PLUGIN_DIR = fileURLToPath(new URL('../../../cni/build/', import.meta.url));
export const PLUGIN_BINARY = join(PLUGIN_DIR, 'istio-cni');
/** The netns-harness node istiod runs on. */
export const CONTROL_PLANE_NODE = 'control-plane';
const CLUSTER_ID = 'Kubernetes';

export interface ProgressEvent {
  readonly step: string;
  readonly state: 'start' | 'done' | 'fail';
  readonly detail?: string;
}

export interface LocalMeshOptions {
  /** Worker nodes; default 2. */
  readonly nodes?: number;
  readonly redirectMode?: RedirectMode;
  /** Holds manifests/, logs/, per-node dirs; created if missing. */
  readonly stateDir: string;
  /** Default true: apply the sample workloads and wait until they run. */
  readonly samples?: boolean;
  /** Extra environment per component (debugging, or a test breaking a component on purpose). */
  readonly componentEnv?: {
    istiod?: Record<string, string>;
    ztunnel?: Record<string, string>;
    cni?: Record<string, string>;
  };
  readonly onProgress?: (e: ProgressEvent) => void;
  /** The mesh's own log (scheduling, restarts); default `<stateDir>/logs/local-mesh.log`. */
  readonly log?: Logger;
  /** How long each startup wait may take; default 60 s. */
  readonly startTimeoutMs?: number;
}

export interface LocalMeshNode {
  readonly name: string;
  readonly ip: string;
  readonly netnsPath: string;
  readonly podCidr: string;
}

/** `apply` refused some documents; the others were applied (`applied`). */
export class ApplyRejectedError extends AmbientctlError {
  readonly applied: readonly ApplyResult[];
  readonly rejected: readonly RejectedDocument[];

  constructor(applied: readonly ApplyResult[], rejected: readonly RejectedDocument[]) {
    super(
      'MANIFEST_INVALID',
      `${rejected.length} document(s) rejected${applied.length > 0 ? ` (${applied.length} applied)` : ''}:\n${rejected
        .map((r) => `  line ${r.line}: ${r.ref}: ${r.reason}`)
        .join('\n')}`,
    );
    this.applied = applied;
    this.rejected = rejected;
  }
}

const LOG_FILE_PREFIXES = ['istiod', 'ztunnel-', 'istio-cni-', 'local-mesh'];

export class LocalMesh {
  readonly stateDir: string;
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly LocalMeshNode[];
  /** The node istiod runs on. */
  readonly controlPlane: LocalMeshNode;
  readonly istiodAddress: string;
  readonly layout: MeshLayout;
  readonly #harness: Harness;
  readonly #runner: PodRunner;
  readonly #store: ManifestStore;
  readonly #components = new Map<string, SupervisedComponent>();
  readonly #tokens = new Map<string, string>();
  readonly #log: Logger;
  readonly #logStream: WriteStream | undefined;
  readonly #progress: (e: ProgressEvent) => void;
  #down: Promise<void> | undefined;

  private constructor(f: {
    options: LocalMeshOptions;
    harness: Harness;
    layout: MeshLayout;
    log: Logger;
    logStream: WriteStream | undefined;
  }) {
    this.stateDir = f.options.stateDir;
    this.redirectMode = f.options.redirectMode ?? 'nftables';
    this.layout = f.layout;
    this.#harness = f.harness;
    this.#log = f.log;
    this.#logStream = f.logStream;
    this.#progress = f.options.onProgress ?? (() => {});
    const describe = (n: MeshNode): LocalMeshNode => ({
      name: n.name,
      ip: n.ip,
      netnsPath: n.netnsPath,
      podCidr: n.podCidr,
    });
    const workers = f.harness.nodes.filter((n) => n.name !== CONTROL_PLANE_NODE);
    this.nodes = workers.map(describe);
    this.controlPlane = describe(f.harness.node(CONTROL_PLANE_NODE));
    this.istiodAddress = `https://${this.controlPlane.ip}:${ISTIOD_XDS_PORT}`;
    this.#store = new ManifestStore(f.layout.manifestsDir);
    this.#runner = new PodRunner({ nodes: workers, store: this.#store, layout: f.layout, log: f.log });
  }

  /** The harness run key every name this mesh created starts with. */
  get runKey(): string {
    return this.#harness.key;
  }

  /**
   * Brings the mesh up and resolves once it is ready (samples Running, when asked for). On
   * failure everything is removed again and the AmbientctlError names the step that failed.
   */
  static async up(options: LocalMeshOptions): Promise<LocalMesh> {
    const progress = options.onProgress ?? (() => {});
    const nodeCount = options.nodes ?? 2;
    const redirectMode = options.redirectMode ?? 'nftables';
    const timeoutMs = options.startTimeoutMs ?? 60_000;
    const layout = new MeshLayout(options.stateDir);
    const workerNames = Array.from({ length: nodeCount }, (_, i) => `node${i + 1}`);

    progress({ step: 'preflight', state: 'start' });
    try {
      preflight({ nodeCount, redirectMode, layout, workerNames });
    } catch (err) {
      progress({ step: 'preflight', state: 'fail', detail: errorMessage(err) });
      throw err;
    }
    prepareStateDir(layout);
    progress({ step: 'preflight', state: 'done' });

    let logStream: WriteStream | undefined;
    let log = options.log;
    if (log === undefined) {
      logStream = createWriteStream(layout.componentLog('local-mesh', undefined), { flags: 'a' });
      log = new Logging({ levels: 'info', destination: logStream }).logger('local-mesh');
    }

    progress({ step: 'nodes', state: 'start' });
    let harness: Harness;
    try {
      harness = await Harness.create({ nodes: [...workerNames, CONTROL_PLANE_NODE] });
    } catch (err) {
      logStream?.end();
      progress({ step: 'nodes', state: 'fail', detail: errorMessage(err) });
      throw new AmbientctlError('STEP_FAILED', `step nodes failed: ${errorMessage(err)}`, { cause: err });
    }
    const mesh = new LocalMesh({ options, harness, layout, log, logStream });
    let step = 'nodes';
    try {
      await mesh.#buildNodes();
      progress({
        step: 'nodes',
        state: 'done',
        detail: mesh.nodes.map((n) => `${n.name} ${n.ip} pods ${n.podCidr}`).join(', '),
      });
      step = 'istiod';
      await mesh.#step('istiod', () => mesh.#startIstiod(options, timeoutMs), mesh.istiodAddress);
      step = 'node components';
      await mesh.#startNodeComponents(options, timeoutMs);
      if (options.samples !== false) {
        step = 'samples';
        await mesh.#step('samples', async () => {
          await mesh.apply(SAMPLE_MANIFESTS);
          await mesh.waitPodsRunning('demo', {}, timeoutMs);
          await mesh.waitPodsRunning('legacy', {}, timeoutMs);
        });
      }
    } catch (err) {
      if (step === 'nodes') progress({ step, state: 'fail', detail: errorMessage(err) });
      log.error({ step, err: errorMessage(err) }, 'local mesh failed to come up; tearing down');
      await mesh.down().catch((e: unknown) => log.error({ err: errorMessage(e) }, 'teardown after failure'));
      if (err instanceof AmbientctlError && err.code === 'STEP_FAILED') throw err;
      throw new AmbientctlError('STEP_FAILED', `step ${step} failed: ${errorMessage(err)}`, { cause: err });
    }
    log.info({ nodes: mesh.nodes.map((n) => n.name), redirectMode, runKey: mesh.runKey }, 'local mesh up');
    return mesh;
  }

  async #step<T>(name: string, fn: () => Promise<T>, detail?: string): Promise<T> {
    this.#progress({ step: name, state: 'start' });
    try {
      const v = await fn();
      this.#progress({ step: name, state: 'done', ...(detail === undefined ? {} : { detail }) });
      return v;
    } catch (err) {
      this.#progress({ step: name, state: 'fail', detail: errorMessage(err) });
      throw new AmbientctlError('STEP_FAILED', `step ${name} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** The per-node CNI chain and the manifests the mesh itself needs (system namespaces, ztunnel pods, tokens). */
  async #buildNodes(): Promise<void> {
    for (const n of this.#workers()) {
      n.setChainedPlugins([
        {
          type: 'istio-cni',
          binDir: PLUGIN_DIR,
          config: {
            cni_agent_run_dir: this.layout.cniRunDir(n.name),
            exclude_namespaces: ['kube-system'],
            plugin_log_level: 'info',
          },
        },
      ]);
      mkdirSync(this.layout.cniRunDir(n.name), { recursive: true });
    }
    await this.#runner.ensureNamespace({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: SYSTEM_NAMESPACE },
    });
    await this.#runner.ensureNamespace({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: DEFAULT_NAMESPACE },
    });
    const tokens: Record<string, unknown> = {};
    for (const n of this.#workers()) {
      const pod = ztunnelPodName(n.name);
      const uid = `${pod}-${this.runKey}`;
      // ztunnel runs on the host network; istiod's node authorization ties its token to this pod.
      await this.#store.write(
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: pod, namespace: SYSTEM_NAMESPACE, uid, labels: { app: 'ztunnel' } },
          spec: {
            nodeName: n.name,
            serviceAccountName: 'ztunnel',
            hostNetwork: true,
            containers: [{ name: 'istio-proxy', image: 'ztunnel' }],
          },
          status: {
            phase: 'Running',
            hostIP: n.ip,
            podIP: n.ip,
            podIPs: [{ ip: n.ip }],
            conditions: [{ type: 'Ready', status: 'True' }],
          },
        },
        'the node proxy, written by ambientctl',
      );
      tokens[this.#token(n.name)] = {
        namespace: SYSTEM_NAMESPACE,
        serviceAccount: 'ztunnel',
        podName: pod,
        podUid: uid,
      };
    }
    writeFileSync(this.layout.tokenFile, stringify(tokens), { mode: 0o600 });
  }

  /** A node's bearer token for istiod: stable for the mesh's life, so a restarted ztunnel reuses it. */
  #token(node: string): string {
    let t = this.#tokens.get(node);
    if (t === undefined) {
      t = `ztunnel-${node}-${randomBytes(18).toString('hex')}`;
      this.#tokens.set(node, t);
    }
    return t;
  }

  #workers(): MeshNode[] {
    return this.#harness.nodes.filter((n) => n.name !== CONTROL_PLANE_NODE);
  }

  #harnessNode(name: string): MeshNode {
    const n = this.#workers().find((x) => x.name === name);
    if (n === undefined) {
      throw new AmbientctlError(
        'NOT_FOUND',
        `no node ${JSON.stringify(name)}; nodes are ${this.nodes.map((x) => x.name).join(', ')}`,
      );
    }
    return n;
  }

  /** A process host in the node's netns with its own cgroup `<run>/<node>/<name>`. */
  #componentHost(node: MeshNode, name: string): ProcessHost {
    const cgroupPath = join(dirname(node.cgroupPath), name);
    mkdirSync(cgroupPath, { recursive: true });
    return new ProcessHost({
      label: `${name} on ${node.name}`,
      netnsPath: node.netnsPath,
      cgroupPath,
      scriptDir: join(this.#harness.tempDir, 'scripts'),
      isOpen: () => this.#down === undefined,
    });
  }

  async #startIstiod(options: LocalMeshOptions, timeoutMs: number): Promise<void> {
    const cp = this.#harness.node(CONTROL_PLANE_NODE);
    mkdirSync(this.layout.istiodDir, { recursive: true });
    const c = new SupervisedComponent(
      istiodSpec({
        host: this.#componentHost(cp, 'istiod'),
        ip: cp.ip,
        layout: this.layout,
        ...(options.componentEnv?.istiod ? { extraEnv: options.componentEnv.istiod } : {}),
      }),
      this.#log,
    );
    this.#components.set('istiod', c);
    await c.start(timeoutMs);
    // ztunnel reads the root to verify istiod from its first connection.
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(this.layout.rootCertPath)) {
      if (Date.now() > deadline) {
        throw new AmbientctlError(
          'TIMEOUT',
          `istiod did not publish its root at ${this.layout.rootCertPath}`,
        );
      }
      await sleep(50);
    }
  }

  async #startNodeComponents(options: LocalMeshOptions, timeoutMs: number): Promise<void> {
    const starts: Promise<void>[] = [];
    const pinRoot = join('/sys/fs/bpf', this.runKey);
    for (const n of this.#workers()) {
      const ztunnelHost = this.#componentHost(n, 'ztunnel');
      const agent = new SupervisedComponent(
        cniAgentSpec({
          node: n.name,
          host: this.#componentHost(n, 'istio-cni'),
          layout: this.layout,
          redirectMode: this.redirectMode,
          ztunnelCgroup: ztunnelHost.cgroupPath,
          pinRoot,
          ...(options.componentEnv?.cni ? { extraEnv: options.componentEnv.cni } : {}),
        }),
        this.#log,
      );
      const ztunnel = new SupervisedComponent(
        ztunnelSpec({
          node: n.name,
          nodeIp: n.ip,
          host: ztunnelHost,
          istiodAddress: this.istiodAddress,
          token: this.#token(n.name),
          layout: this.layout,
          pinRoot,
          ...(options.componentEnv?.ztunnel ? { extraEnv: options.componentEnv.ztunnel } : {}),
        }),
        this.#log,
      );
      this.#components.set(`istio-cni/${n.name}`, agent);
      this.#components.set(`ztunnel/${n.name}`, ztunnel);
      // ztunnel is ready only once the agent's ZDS snapshot arrived: both start together.
      starts.push(this.#step(agent.label, () => agent.start(timeoutMs)));
      starts.push(this.#step(ztunnel.label, () => ztunnel.start(timeoutMs)));
    }
    // The first failure ends the step; the teardown that follows stops the others' starts.
    await Promise.all(starts);
  }

  // ---------------------------------------------------------------------------------------------
  // What runs

  components(): ComponentStatus[] {
    return [...this.#components.values()].map((c) => c.status());
  }

  pods(): PodStatus[] {
    return this.#runner.pods();
  }

  /** A Service's ClusterIP (assigned by the mesh when the manifest gives none). */
  serviceAddress(namespace: string, name: string): string | undefined {
    return this.#runner.service(namespace, name)?.clusterIP;
  }

  /**
   * Applies manifests. Every valid document is applied; when some are malformed or cannot be
   * applied, an {@link ApplyRejectedError} lists each of them (and carries what was applied).
   */
  async apply(yamlText: string): Promise<ApplyResult[]> {
    this.#assertUp();
    const { resources, rejected } = parseResources(yamlText);
    const outcome = await this.#runner.apply(resources);
    const allRejected = [...rejected, ...outcome.rejected].sort((a, b) => a.line - b.line);
    for (const r of outcome.results) this.#log.info({ ...r }, 'applied');
    if (allRejected.length > 0) throw new ApplyRejectedError(outcome.results, allRejected);
    return outcome.results;
  }

  delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    this.#assertUp();
    return this.#runner.delete(kind, namespace, name);
  }

  /**
   * Waits until the namespace's pods (those matching `selector`) are Running and ready, every
   * Deployment among them fully rolled out, and every ztunnel knows each of them as a healthy
   * workload (with HBONE for the ambient ones): traffic to them works once this resolves.
   */
  async waitPodsRunning(
    namespace: string,
    selector: Record<string, string> = {},
    timeoutMs = 60_000,
  ): Promise<PodStatus[]> {
    this.#assertUp();
    const deadline = Date.now() + timeoutMs;
    const pods = await this.#runner.waitRunning(namespace, selector, timeoutMs);
    for (;;) {
      const lagging: string[] = [];
      for (const n of this.nodes) {
        let dump: ConfigDump;
        try {
          const a = await this.ztunnelAdmin(n.name, '/config_dump');
          dump = JSON.parse(a.body) as ConfigDump;
        } catch (err) {
          lagging.push(`ztunnel ${n.name}: ${errorMessage(err)}`);
          continue;
        }
        for (const p of this.#runner.pods().filter((x) => pods.some((y) => y.uid === x.uid))) {
          const w = dump.workloads.find((x) => x.uid === `${CLUSTER_ID}//Pod/${p.namespace}/${p.name}`);
          const want = p.ambient ? 'HBONE' : 'TCP';
          if (w === undefined || w.status !== 'Healthy' || w.protocol !== want) {
            lagging.push(
              `ztunnel ${n.name} has ${p.namespace}/${p.name} as ${w === undefined ? 'nothing' : `${w.status} ${w.protocol}`}, not Healthy ${want}`,
            );
          }
        }
      }
      if (lagging.length === 0) return this.#runner.pods().filter((x) => pods.some((y) => y.uid === x.uid));
      if (Date.now() > deadline) {
        throw new AmbientctlError(
          'TIMEOUT',
          `pods of ${namespace} not known to every ztunnel: ${lagging.join('; ')}`,
        );
      }
      await sleep(100);
    }
  }

  /** GET `127.0.0.1:15000<path>` in the node's netns (e.g. `/config_dump`). */
  ztunnelAdmin(node: string, path: string): Promise<HttpAnswer> {
    const n = this.#harnessNode(node);
    return httpGetInNetns(n.netnsPath, '127.0.0.1', ZTUNNEL_ADMIN_PORT, path, 5000);
  }

  /** ztunnel's Prometheus text (15020 /metrics) on a node. */
  async ztunnelMetrics(node: string): Promise<string> {
    const n = this.#harnessNode(node);
    const a = await httpGetInNetns(n.netnsPath, n.ip, ZTUNNEL_STATS_PORT, '/metrics', 5000);
    if (a.status !== 200) {
      throw new AmbientctlError(
        'NOT_FOUND',
        `ztunnel ${node} /metrics answered ${a.status}: ${a.body.slice(0, 200)}`,
      );
    }
    return a.body;
  }

  /** Runs `argv` in the pod's netns and cgroup (eBPF redirection hooks the cgroup). */
  exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts: { timeoutMs?: number; check?: boolean } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    this.#assertUp();
    return this.#runner.exec(namespace, pod, argv, opts);
  }

  /** Stops a component and starts it again (every node's when `node` is left out), waiting until ready. */
  async restartComponent(name: ComponentName, node?: string): Promise<void> {
    this.#assertUp();
    if (name === 'istiod') {
      await this.#component('istiod').restart(60_000);
      return;
    }
    if (name !== 'ztunnel' && name !== 'istio-cni') {
      throw new AmbientctlError(
        'NOT_FOUND',
        `no component ${JSON.stringify(name)}; one of istiod, ztunnel, istio-cni`,
      );
    }
    const nodes = node === undefined ? this.nodes.map((n) => n.name) : [this.#harnessNode(node).name];
    await Promise.all(nodes.map((n) => this.#component(`${name}/${n}`).restart(60_000)));
  }

  #component(key: string): SupervisedComponent {
    const c = this.#components.get(key);
    if (c === undefined) throw new AmbientctlError('NOT_FOUND', `no component ${key}`);
    return c;
  }

  #assertUp(): void {
    if (this.#down !== undefined) throw new AmbientctlError('MESH_STOPPED', 'the local mesh is shut down');
  }

  /**
   * Stops everything and removes what the mesh created: pods (processes, CNI DEL), components,
   * network namespaces (with their links and nftables tables), cgroups, eBPF pins, runtime files.
   * Logs stay. Idempotent.
   */
  down(): Promise<void> {
    this.#down ??= this.#teardown();
    return this.#down;
  }

  async #teardown(): Promise<void> {
    this.#progress({ step: 'down', state: 'start' });
    const errors: string[] = [];
    await this.#runner.close().catch((e: unknown) => errors.push(errorMessage(e)));
    await Promise.all(
      [...this.#components.values()].map((c) =>
        c.stop(2000).catch((e: unknown) => errors.push(errorMessage(e))),
      ),
    );
    try {
      const report = await this.#harness.destroy({ graceMs: 500 });
      this.#log.info({ netns: report.netns.length, bpfPins: report.bpfPins }, 'local mesh removed');
    } catch (err) {
      errors.push(errorMessage(err));
    }
    for (const dir of this.layout.runtimeDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        errors.push(`${dir}: ${errorMessage(err)}`);
      }
    }
    this.#logStream?.end();
    if (errors.length > 0) {
      this.#progress({ step: 'down', state: 'fail', detail: errors.join('; ') });
      throw new AmbientctlError('TEARDOWN_INCOMPLETE', `local mesh ${this.runKey}: ${errors.join('; ')}`);
    }
    this.#progress({ step: 'down', state: 'done' });
  }
}

function preflight(p: {
  nodeCount: number;
  redirectMode: RedirectMode;
  layout: MeshLayout;
  workerNames: string[];
}): void {
  if (process.getuid?.() !== 0) {
    throw new AmbientctlError(
      'NOT_ROOT',
      'the local mesh needs root: it creates network namespaces, veth pairs, nftables rules and eBPF programs (run with sudo)',
    );
  }
  if (!Number.isInteger(p.nodeCount) || p.nodeCount < 1 || p.nodeCount > 50) {
    throw new AmbientctlError('USAGE', `nodes must be 1 to 50, not ${p.nodeCount}`);
  }
  if (p.redirectMode !== 'nftables' && p.redirectMode !== 'ebpf') {
    throw new AmbientctlError(
      'USAGE',
      `redirect mode must be nftables or ebpf, not ${JSON.stringify(p.redirectMode)}`,
    );
  }
  if (!existsSync(PLUGIN_BINARY)) {
    throw new AmbientctlError(
      'BUILD_MISSING',
      `the istio-cni plugin is not built (${PLUGIN_BINARY}); run npm run build`,
    );
  }
  if (p.redirectMode === 'ebpf' && !existsSync(REDIRECT_OBJECT_PATH)) {
    throw new AmbientctlError(
      'BUILD_MISSING',
      `the eBPF redirection object is not built (${REDIRECT_OBJECT_PATH}); run npm run build`,
    );
  }
  if (!nativeSupported()) {
    throw new AmbientctlError(
      'BUILD_MISSING',
      'the native addon (@ambient/native) does not load; run npm run build',
    );
  }
  try {
    unifiedCgroupRoot();
  } catch (err) {
    throw new AmbientctlError('STEP_FAILED', `cgroup v2 is required: ${errorMessage(err)}`, { cause: err });
  }
  const long = p.layout.tooLongSocketPath(p.workerNames);
  if (long !== undefined) {
    throw new AmbientctlError(
      'USAGE',
      `state directory ${p.layout.stateDir} is too deep: the unix socket ${long} exceeds 107 bytes; choose a shorter path`,
    );
  }
}

/** Starts from a clean state directory: runtime files and this mesh's logs of an earlier run go. */
function prepareStateDir(layout: MeshLayout): void {
  for (const dir of layout.runtimeDirs) rmSync(dir, { recursive: true, force: true });
  mkdirSync(layout.podLogsDir, { recursive: true });
  rmSync(layout.podLogsDir, { recursive: true, force: true });
  mkdirSync(layout.podLogsDir, { recursive: true });
  for (const f of readdirSync(layout.logsDir)) {
    if (f.endsWith('.log') && LOG_FILE_PREFIXES.some((p) => f.startsWith(p)))
      rmSync(join(layout.logsDir, f), { force: true });
  }
  mkdirSync(layout.manifestsDir, { recursive: true });
  mkdirSync(layout.istiodDir, { recursive: true });
}

/**
 * Removes what crashed local meshes (and other netns-harness runs) left behind: every run whose
 * owner process is gone — its processes, network namespaces, cgroups, temp dir and eBPF pins.
 * Runs of live processes are never touched. Returns the run keys removed.
 */
export async function sweepLocalMeshes(): Promise<string[]> {
  const report = sweepLeftovers();
  return report.removed.map((r) => r.key);
}
