/**
 * A small ambient mesh in the netns harness: istiod in local mode as a child process in node1's
 * netns (reachable from every node at node1's underlay address), one ztunnel child process per
 * node inside that node's netns, and a stand-in istio-cni node agent per node in this process (a
 * ZdsServer on the node's INPOD_UDS that enrolls pods after installing the in-pod rules).
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Logging } from '@ambient/common/log';
import { eventually } from '@ambient/common/testing/eventually';
import { ZdsServer, type ZdsSnapshotEntry } from '@ambient/common/zds';
import { closeFd, openNetns } from '@ambient/native';
import { Harness, type HarnessProcess, type MeshNode, type Pod } from '../../harness/index.ts';
import { namespaceYaml, podYaml } from './mesh-manifests.ts';
import { installPodRules } from './mesh-pod-rules.ts';

const ISTIOD_MAIN = fileURLToPath(new URL('../../../istiod/src/main.ts', import.meta.url));
const ZTUNNEL_MAIN = fileURLToPath(new URL('../../../ztunnel/src/main.ts', import.meta.url));
/** The compiled ztunnel, as the package's `bin` ships it (`npm run build`). */
export const ZTUNNEL_DIST_MAIN = fileURLToPath(new URL('../../../ztunnel/dist/main.js', import.meta.url));
/** The name on istiod's serving certificate ztunnel verifies (the address is a bare IP). */
const ISTIOD_SAN = 'istiod.istio-system.svc';
export const TRUST_DOMAIN = 'cluster.local';

/** A pod of the mesh: the harness pod and whether ztunnel captures it. */
export interface MeshPod {
  readonly pod: Pod;
  readonly enrolled: boolean;
  readonly identity: string;
}

/** Options for {@link MeshFixture.addPod}. */
export interface MeshPodSpec {
  readonly node: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Default true: in an ambient namespace, captured and enrolled with the node's ztunnel. */
  readonly enrolled?: boolean;
  readonly labels?: Readonly<Record<string, string>>;
}

/** A parsed JSON log line of a child process. */
export type LogLine = Record<string, unknown>;

/** An HTTP answer read with curl inside a netns. */
export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

export { eventually };

export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const l of text.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a line cut by the process exiting
    }
  }
  return out;
}

/** The mesh: a harness, istiod, a ztunnel and a node agent per node. */
export class MeshFixture {
  readonly harness: Harness;
  readonly dir: string;
  readonly manifestsDir: string;
  readonly rootCertPath: string;
  readonly pods: MeshPod[] = [];
  /** Pods the agents leave out of their next snapshot (by uid): a pod deleted while ZDS was down. */
  readonly excludedFromSnapshot = new Set<string>();
  istiod: HarnessProcess | undefined;
  readonly ztunnels = new Map<string, HarnessProcess>();
  /** Output of earlier ztunnel processes of a node (before a restart), oldest first. */
  readonly previousZtunnelOutput = new Map<string, string>();
  readonly agents = new Map<string, ZdsServer>();
  readonly #namespaces = new Set<string>();
  /** The stand-in agents log warnings only, to stderr: stdout is the tests' and the bench's. */
  readonly #agentLogging = new Logging({ levels: 'warn', destination: process.stderr });

  readonly #ztunnelBuild: 'source' | 'dist';
  readonly #istiodEnv: Readonly<Record<string, string>>;

  private constructor(
    harness: Harness,
    ztunnelBuild: 'source' | 'dist',
    istiodEnv: Readonly<Record<string, string>>,
  ) {
    this.harness = harness;
    this.#ztunnelBuild = ztunnelBuild;
    this.#istiodEnv = istiodEnv;
    this.dir = join(harness.tempDir, 'mesh');
    this.manifestsDir = join(this.dir, 'manifests');
    this.rootCertPath = join(this.dir, 'root-cert.pem');
  }

  /** Builds the harness, starts istiod, then every node's agent and ztunnel, and waits until ready. */
  static async create(
    options: {
      nodes?: number;
      ztunnelEnv?: Readonly<Record<string, string>>;
      /** On top of the fixture's istiod environment, for every start of istiod. */
      istiodEnv?: Readonly<Record<string, string>>;
      /**
       * `source` (default): ztunnel from its TypeScript sources, as the tests run everything.
       * `dist`: the compiled package as shipped, without the runtime type stripping (whose
       * compiler alone is ~17 MB of RSS); what the bench measures.
       */
      ztunnelBuild?: 'source' | 'dist';
    } = {},
  ) {
    const harness = await Harness.create({ nodes: options.nodes ?? 2 });
    const mesh = new MeshFixture(harness, options.ztunnelBuild ?? 'source', options.istiodEnv ?? {});
    try {
      mkdirSync(mesh.manifestsDir, { recursive: true });
      mesh.writeManifest('ns-istio-system.yaml', namespaceYaml('istio-system', false));
      const tokens: string[] = [];
      for (const node of harness.nodes) {
        mesh.writeManifest(
          `ztunnel-${node.name}.yaml`,
          podYaml({
            namespace: 'istio-system',
            name: `ztunnel-${node.name}`,
            uid: `ztunnel-${node.name}-uid`,
            serviceAccount: 'ztunnel',
            node: node.name,
            ip: node.ip,
            redirected: false,
          }),
        );
        tokens.push(
          `${mesh.tokenOf(node.name)}: { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-${node.name}, podUid: ztunnel-${node.name}-uid }`,
        );
      }
      writeFileSync(join(mesh.dir, 'tokens.yaml'), `${tokens.join('\n')}\n`);
      await mesh.startIstiod();
      for (const node of harness.nodes) {
        mesh.startAgent(node.name);
        await mesh.startZtunnel(node.name, options.ztunnelEnv);
      }
      await Promise.all(harness.nodes.map((n) => mesh.waitZtunnelReady(n.name)));
      return mesh;
    } catch (err) {
      await mesh.destroy();
      throw err;
    }
  }

  get istiodIp(): string {
    return this.node('node1').ip;
  }

  node(name: string): MeshNode {
    return this.harness.node(name);
  }

  tokenOf(node: string): string {
    return `ztunnel-${node}-token-${this.harness.key}`;
  }

  udsOf(node: string): string {
    return join(this.dir, node, 'ztunnel.sock');
  }

  /** Writes a manifest as a ConfigMap volume would: a temporary file, then a rename. */
  writeManifest(file: string, text: string): void {
    const path = join(this.manifestsDir, file);
    const tmp = join(this.dir, `.${file}.tmp`);
    writeFileSync(tmp, text);
    renameSync(tmp, path);
  }

  removeManifest(file: string): void {
    rmSync(join(this.manifestsDir, file), { force: true });
  }

  async startIstiod(): Promise<void> {
    const node1 = this.node('node1');
    this.istiod = node1.spawnNode(ISTIOD_MAIN, ['discovery'], {
      env: {
        LOCAL_DATA_DIR: this.dir,
        LOCAL_TOKEN_FILE: join(this.dir, 'tokens.yaml'),
        ROOT_CA_DIR: join(this.dir, 'no-cacerts'),
        PILOT_DEBOUNCE_AFTER: '10ms',
        LOCAL_MANIFESTS_DEBOUNCE: '20ms',
        TERMINATION_DRAIN_DURATION: '200ms',
        LOG_LEVEL: 'warn',
        ...this.#istiodEnv,
      },
    });
    await eventually(
      'istiod ready',
      async () => {
        if (this.istiod?.exit !== undefined)
          throw new Error(`istiod exited: ${this.istiod.stderr.slice(-2000)}`);
        return (await this.http('node1', 'http://127.0.0.1:8080/ready')).status === 200;
      },
      30_000,
      200,
    ).catch((err: unknown) => {
      throw new Error(
        `${String(err)}; istiod output: ${this.istiod?.stdout.slice(-1500)} ${this.istiod?.stderr.slice(-1500)}`,
      );
    });
  }

  async stopIstiod(): Promise<void> {
    await this.istiod?.stop(2000);
    this.istiod = undefined;
  }

  /** Starts node's ztunnel (`extraEnv` on top of the fixture's environment). */
  async startZtunnel(node: string, extraEnv: Readonly<Record<string, string>> = {}): Promise<HarnessProcess> {
    const n = this.node(node);
    const istiod = `https://${this.istiodIp}:15012`;
    const dist = this.#ztunnelBuild === 'dist';
    const proc = n.spawnNode(dist ? ZTUNNEL_DIST_MAIN : ZTUNNEL_MAIN, ['proxy'], {
      ...(dist ? { nodeArgs: [] } : {}),
      env: {
        XDS_ADDRESS: istiod,
        CA_ADDRESS: istiod,
        XDS_ROOT_CA: this.rootCertPath,
        CA_ROOT_CA: this.rootCertPath,
        ALT_XDS_HOSTNAME: ISTIOD_SAN,
        ALT_CA_HOSTNAME: ISTIOD_SAN,
        AUTH_TOKEN: this.tokenOf(node),
        NODE_NAME: node,
        POD_NAME: `ztunnel-${node}`,
        POD_NAMESPACE: 'istio-system',
        INSTANCE_IP: n.ip,
        INPOD_UDS: this.udsOf(node),
        IPV6_ENABLED: 'false',
        LOG_FORMAT: 'json',
        CONNECTION_TERMINATION_DEADLINE: '1s',
        ...extraEnv,
      },
    });
    const prev = this.ztunnels.get(node);
    if (prev !== undefined) {
      this.previousZtunnelOutput.set(node, (this.previousZtunnelOutput.get(node) ?? '') + prev.stdout);
    }
    this.ztunnels.set(node, proc);
    await proc.started;
    return proc;
  }

  ztunnel(node: string): HarnessProcess {
    const p = this.ztunnels.get(node);
    if (p === undefined) throw new Error(`no ztunnel on ${node}`);
    return p;
  }

  /** The JSON log lines of node's current ztunnel. */
  ztunnelLog(node: string): LogLine[] {
    const p = this.ztunnel(node);
    return parseLogLines(`${p.stdout}\n${p.stderr}`);
  }

  async waitZtunnelReady(node: string, timeoutMs = 30_000): Promise<void> {
    await eventually(
      `ztunnel on ${node} ready`,
      async () => {
        const p = this.ztunnel(node);
        if (p.exit !== undefined) throw new Error(`ztunnel ${node} exited: ${p.stderr.slice(-2000)}`);
        return (await this.http(node, 'http://127.0.0.1:15021/healthz/ready')).status === 200;
      },
      timeoutMs,
      200,
    );
  }

  startAgent(node: string): ZdsServer {
    mkdirSync(join(this.dir, node), { recursive: true });
    const agent = new ZdsServer({
      path: this.udsOf(node),
      snapshot: () => this.snapshotOf(node),
      maxConnectionsPerSecond: 50,
      log: this.#agentLogging.logger('mesh-agent'),
    });
    agent.start();
    this.agents.set(node, agent);
    return agent;
  }

  async stopAgent(node: string): Promise<void> {
    await this.agents.get(node)?.stop();
    this.agents.delete(node);
  }

  snapshotOf(node: string): ZdsSnapshotEntry[] {
    return this.pods
      .filter((p) => p.enrolled && p.pod.node.name === node && !this.excludedFromSnapshot.has(p.pod.uid))
      .map((p) => ({
        uid: p.pod.uid,
        info: { name: p.pod.name, namespace: p.pod.namespace, serviceAccount: p.pod.serviceAccount },
        netns: p.pod.netnsPath,
      }));
  }

  /**
   * Creates a pod on `node` through the harness, writes its manifest, and, when enrolled, installs
   * the in-pod rules, waits until every ztunnel knows the workload and enrolls it over ZDS.
   */
  async addPod(spec: MeshPodSpec): Promise<MeshPod> {
    const enrolled = spec.enrolled ?? true;
    if (!this.#namespaces.has(spec.namespace)) {
      this.writeManifest(`ns-${spec.namespace}.yaml`, namespaceYaml(spec.namespace, enrolled));
      this.#namespaces.add(spec.namespace);
    }
    const pod = await this.node(spec.node).addPod({
      name: spec.name,
      namespace: spec.namespace,
      serviceAccount: spec.serviceAccount,
      ...(spec.labels ? { labels: spec.labels } : {}),
    });
    if (enrolled) await installPodRules(pod);
    this.writeManifest(
      `pod-${spec.namespace}-${spec.name}.yaml`,
      podYaml({
        namespace: spec.namespace,
        name: spec.name,
        uid: pod.uid,
        serviceAccount: spec.serviceAccount,
        node: spec.node,
        ip: pod.ip,
        redirected: enrolled,
        ...(spec.labels ? { labels: spec.labels } : {}),
      }),
    );
    const meshPod: MeshPod = {
      pod,
      enrolled,
      identity: `spiffe://${TRUST_DOMAIN}/ns/${spec.namespace}/sa/${spec.serviceAccount}`,
    };
    this.pods.push(meshPod);
    if (!enrolled) return meshPod;
    for (const n of this.harness.nodes) {
      await eventually(`${n.name} ztunnel knows ${spec.namespace}/${spec.name}`, async () =>
        (await this.configDump(n.name)).workloads.some((w) => w.uid === workloadUid(pod)),
      );
    }
    await this.enroll(meshPod);
    return meshPod;
  }

  /** Sends Add for the pod to its node's ztunnel, with an fd of its netns. */
  async enroll(p: MeshPod): Promise<void> {
    const agent = this.agents.get(p.pod.node.name);
    if (agent === undefined) throw new Error(`no node agent on ${p.pod.node.name}`);
    const fd = openNetns(p.pod.netnsPath);
    try {
      await agent.podAdded(
        p.pod.uid,
        { name: p.pod.name, namespace: p.pod.namespace, serviceAccount: p.pod.serviceAccount },
        fd,
      );
    } finally {
      closeFd(fd);
    }
  }

  /** GET `url` with curl inside node's netns. */
  async http(node: string, url: string, method = 'GET'): Promise<HttpAnswer> {
    const r = await this.node(node).exec(
      'curl',
      ['-s', '-X', method, '--max-time', '3', '-o', '-', '-w', '\n%{http_code}', url],
      { check: false, timeoutMs: 5000 },
    );
    // The status is the last line (-w); the harness may add a final newline.
    const out = r.stdout.replace(/\n$/, '');
    const cut = out.lastIndexOf('\n');
    return { status: Number(out.slice(cut + 1)) || 0, body: out.slice(0, Math.max(cut, 0)) };
  }

  async configDump(node: string): Promise<ConfigDump> {
    const r = await this.http(node, 'http://127.0.0.1:15000/config_dump');
    if (r.status !== 200) throw new Error(`config_dump on ${node}: ${r.status}`);
    return JSON.parse(r.body) as ConfigDump;
  }

  async metrics(node: string): Promise<string> {
    return (await this.http(node, 'http://127.0.0.1:15020/metrics')).body;
  }

  /** Removes everything: agents, ztunnels, istiod (with the harness), the harness itself. */
  async destroy(): Promise<void> {
    for (const a of this.agents.values()) await a.stop().catch(() => {});
    this.agents.clear();
    await this.harness.destroy();
  }
}

/** What the tests read of ztunnel's /config_dump. */
export interface ConfigDump {
  readonly workloads: { uid: string; name: string; node: string; workloadIps: string[]; protocol: string }[];
  readonly policies?: unknown[];
  readonly certificates: {
    identity: string;
    state: string;
    certChain: { pem?: string; serialNumber?: string; expirationTime?: string }[];
  }[];
  readonly workloadState: Record<string, { state: string }>;
}

/** ztunnel's workload uid for a harness pod (istiod's `<cluster>//Pod/<ns>/<name>`). */
export function workloadUid(pod: Pod): string {
  return `Kubernetes//Pod/${pod.namespace}/${pod.name}`;
}

/** Sum of a Prometheus counter's samples whose labels contain every `labels` pair. */
export function counterSum(metricsText: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of metricsText.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
