import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { removeCgroupTree } from './cgroup.ts';
import {
  type ChainedPlugin,
  type CniNetwork,
  type CniPluginConf,
  type CniVersion,
  chainedPluginConf,
} from './cni/config.ts';
import type { CniAttachment } from './cni/invoke.ts';
import { sandboxIps } from './cni/result.ts';
import { CniRuntime } from './cni/runtime.ts';
import { childEnv } from './env.ts';
import { HarnessError } from './errors.ts';
import { netnsPath } from './netns.ts';
import { Pod, type PodSandbox, type PodSpec } from './pod.ts';
import { runCommand } from './process.ts';
import { ProcessHost } from './process-host.ts';

/** The network name of the pod conflist; host-local keeps its state in `<dataDir>/<this>`. */
export const POD_NETWORK_NAME = 'ambh-pods';
/** The bridge the `bridge` plugin creates in each node netns (what kubenet and flannel call it). */
export const POD_BRIDGE = 'cni0';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,98}[a-z0-9])?$/;
const CGROUP_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** @internal What a node needs from the harness that owns it. */
export interface NodeContext {
  readonly runKey: string;
  readonly tempDir: string;
  readonly cniVersion: CniVersion;
  readonly referencePluginDir: string;
  readonly cniTimeoutMs: number;
  readonly isOpen: () => boolean;
  /** Reserves `namespace/name` cluster-wide; throws POD_EXISTS or HARNESS_DESTROYED. */
  claimPod(key: string): void;
  releasePod(key: string): void;
}

/** @internal How the harness describes a node it has built. */
export interface NodeInit {
  readonly name: string;
  readonly index: number;
  readonly netnsName: string;
  readonly ip: string;
  readonly podCidr: string;
  readonly podGateway: string;
  /** `<cgroup root>/<run>/<node>`; node processes go to `system/`, pods to `kubepods/<ns>_<name>`. */
  readonly cgroupDir: string;
  readonly chain: readonly ChainedPlugin[];
}

/**
 * A simulated Kubernetes node: a network namespace standing for the node's root netns, with an
 * underlay link to the fabric, routes to the other nodes' pod CIDRs, and a CNI configuration
 * (`bridge` + `host-local`, plus any chained plugins) that it runs for each pod, in its own netns,
 * as the node's container runtime would.
 */
export class MeshNode extends ProcessHost {
  readonly name: string;
  /** 1-based position; the last octet of the node's underlay address. */
  readonly index: number;
  /** The node netns name (`ambh-<run>-<node>`). */
  readonly netnsName: string;
  /** The node's underlay address (its InternalIP). */
  readonly ip: string;
  readonly podCidr: string;
  /** host-local's `dataDir` for this node, in the harness temp dir (nothing goes to /var/lib/cni). */
  readonly ipamDataDir: string;
  readonly #ctx: NodeContext;
  readonly #cgroupDir: string;
  readonly #podGateway: string;
  readonly #runtime: CniRuntime;
  readonly #pods = new Map<string, Pod>();
  #chain: readonly ChainedPlugin[];
  /** CNI operations on a node run one at a time (the bridge plugin races creating cni0). */
  #cniQueue: Promise<unknown> = Promise.resolve();

  constructor(init: NodeInit, ctx: NodeContext) {
    const nsPath = netnsPath(init.netnsName);
    super({
      label: `node ${init.name}`,
      netnsPath: nsPath,
      cgroupPath: join(init.cgroupDir, 'system'),
      scriptDir: join(ctx.tempDir, 'scripts'),
      isOpen: ctx.isOpen,
    });
    this.name = init.name;
    this.index = init.index;
    this.netnsName = init.netnsName;
    this.ip = init.ip;
    this.podCidr = init.podCidr;
    this.ipamDataDir = join(ctx.tempDir, 'nodes', init.name, 'ipam');
    this.#ctx = ctx;
    this.#cgroupDir = init.cgroupDir;
    this.#podGateway = init.podGateway;
    this.#chain = init.chain;
    this.#runtime = new CniRuntime({ runtimeNetnsPath: nsPath, timeoutMs: ctx.cniTimeoutMs });
  }

  /** Plugins appended to every new pod's chain on this node. */
  get chainedPlugins(): readonly ChainedPlugin[] {
    return this.#chain;
  }

  /**
   * Replaces the node's chained plugins, as an installer rewriting the node's conflist does;
   * pods added afterwards use the new chain, existing pods keep the one they were added with.
   */
  setChainedPlugins(plugins: readonly ChainedPlugin[]): void {
    this.#chain = [...plugins];
  }

  /** The pods on this node. */
  get pods(): readonly Pod[] {
    return [...this.#pods.values()];
  }

  /** The conflist (and CNI_PATH) a new pod would get, with `extra` plugins appended. */
  podNetwork(extra: readonly ChainedPlugin[] = []): CniNetwork {
    const chain = [...this.#chain, ...extra];
    const bridge: CniPluginConf = {
      type: 'bridge',
      bridge: POD_BRIDGE,
      isGateway: true,
      ipMasq: false,
      hairpinMode: true,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: this.podCidr, gateway: this.#podGateway }]],
        routes: [{ dst: '0.0.0.0/0' }],
        dataDir: this.ipamDataDir,
      },
    };
    const binDirs = [...new Set(chain.flatMap((p) => (p.binDir === undefined ? [] : [p.binDir])))];
    return {
      list: {
        cniVersion: this.#ctx.cniVersion,
        name: POD_NETWORK_NAME,
        plugins: [bridge, ...chain.map(chainedPluginConf)],
      },
      cniPath: [...binDirs.filter((d) => d !== this.#ctx.referencePluginDir), this.#ctx.referencePluginDir],
    };
  }

  /** Pod IPs host-local currently holds on this node (one file per address in its state dir). */
  async allocatedPodIps(): Promise<string[]> {
    try {
      const entries = await readdir(join(this.ipamDataDir, POD_NETWORK_NAME));
      return entries.filter((e) => isIP(e) !== 0);
    } catch {
      return [];
    }
  }

  /**
   * Creates a pod: a netns and cgroup, then CNI ADD of the loopback network (`lo`) and the pod
   * conflist (`eth0`), as a runtime's RunPodSandbox does. On failure everything is rolled back
   * (DEL of what was added, netns and cgroup removed) and the error (a CniError for a plugin
   * failure) is thrown.
   */
  async addPod(spec: PodSpec): Promise<Pod> {
    const full = {
      name: spec.name,
      namespace: spec.namespace ?? 'default',
      uid: spec.uid ?? randomUUID(),
      serviceAccount: spec.serviceAccount ?? 'default',
      labels: { ...spec.labels },
      annotations: { ...spec.annotations },
    };
    if (!DNS_SUBDOMAIN.test(full.name)) {
      throw new HarnessError(
        'NAME_INVALID',
        `pod name ${JSON.stringify(full.name)} is not a DNS-1123 subdomain of at most 100 characters`,
      );
    }
    if (!DNS_LABEL.test(full.namespace)) {
      throw new HarnessError(
        'NAME_INVALID',
        `namespace ${JSON.stringify(full.namespace)} is not a DNS-1123 label`,
      );
    }
    if (spec.cgroupName !== undefined && !CGROUP_NAME.test(spec.cgroupName)) {
      throw new HarnessError(
        'NAME_INVALID',
        `cgroup name ${JSON.stringify(spec.cgroupName)} must be 1-128 of [A-Za-z0-9._-], not starting with "."`,
      );
    }
    if (spec.ip !== undefined && isIP(spec.ip) === 0) {
      throw new HarnessError('NAME_INVALID', `pod ip ${JSON.stringify(spec.ip)} is not an IP address`);
    }
    const key = `${full.namespace}/${full.name}`;
    this.#ctx.claimPod(key);
    // `_` cannot occur in either part, so the pair is unambiguous.
    const slug = `${full.namespace}_${full.name}`;
    const netnsName = `${this.#ctx.runKey}-pod-${slug}`;
    const nsPath = netnsPath(netnsName);
    const cgroupPath = join(this.#cgroupDir, 'kubepods', spec.cgroupName ?? slug);
    const containerId = randomBytes(32).toString('hex');
    const args: CniAttachment['args'] = [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAMESPACE', full.namespace],
      ['K8S_POD_NAME', full.name],
      ['K8S_POD_INFRA_CONTAINER_ID', containerId],
      ['K8S_POD_UID', full.uid],
      ...(spec.ip === undefined ? [] : [['IP', spec.ip] as const]),
    ];
    const attachment: CniAttachment = { containerId, netnsPath: nsPath, ifName: 'eth0', args };
    const loopbackAttachment: CniAttachment = { ...attachment, ifName: 'lo' };
    const network = this.podNetwork(spec.chain);
    const loopbackNetwork: CniNetwork = {
      list: { cniVersion: this.#ctx.cniVersion, name: 'cni-loopback', plugins: [{ type: 'loopback' }] },
      cniPath: [this.#ctx.referencePluginDir],
    };
    let netnsCreated = false;
    let loopbackAdded = false;
    let eth0Tried = false;
    try {
      await Promise.all([
        runCommand(['ip', 'netns', 'add', netnsName], { env: childEnv() }).then(() => {
          netnsCreated = true;
        }),
        mkdir(cgroupPath, { recursive: true }),
      ]);
      const { loopback, result } = await this.#serial(async () => {
        const lo = await this.#runtime.add(loopbackNetwork, loopbackAttachment);
        loopbackAdded = true;
        eth0Tried = true;
        const res = await this.#runtime.add(network, attachment);
        return { loopback: lo, result: res };
      });
      const ips = sandboxIps(result, 'eth0');
      const primary = ips.find((i) => i.family === 4) ?? ips[0];
      if (primary === undefined) {
        throw new HarnessError('POD_IP_MISSING', `CNI ADD for pod ${key} returned no address for eth0`);
      }
      const sandbox: PodSandbox = {
        containerId,
        netnsName,
        network,
        attachment,
        result,
        loopback,
        loopbackAttachment,
        loopbackNetwork,
      };
      const pod = new Pod(
        {
          spec: full,
          node: this,
          ip: primary.ip,
          ips: ips.map((i) => i.ip),
          gateway: primary.gateway,
          sandbox,
        },
        {
          label: `pod ${key}`,
          netnsPath: nsPath,
          cgroupPath,
          scriptDir: join(this.#ctx.tempDir, 'scripts'),
          isOpen: () => this.#pods.get(key) === pod && this.#ctx.isOpen(),
        },
      );
      this.#pods.set(key, pod);
      return pod;
    } catch (err) {
      // What a runtime does when RunPodSandbox fails: tear the sandbox network down again.
      await this.#serial(async () => {
        if (eth0Tried) await this.#runtime.del(network, attachment, undefined).catch(() => {});
        if (loopbackAdded)
          await this.#runtime.del(loopbackNetwork, loopbackAttachment, undefined).catch(() => {});
      });
      if (netnsCreated)
        await runCommand(['ip', 'netns', 'delete', netnsName], { env: childEnv(), check: false });
      await removeCgroupTree(cgroupPath);
      this.#ctx.releasePod(key);
      throw err;
    }
  }

  /**
   * Removes a pod as kubelet does: stops its processes (SIGTERM, then SIGKILL after `graceMs`),
   * runs CNI DEL for the chain (reverse order, cached result as prevResult) and for loopback,
   * deletes the netns and the cgroup. Every step runs even if an earlier one failed; the first
   * failure is thrown at the end.
   */
  async removePod(pod: Pod, options: { graceMs?: number } = {}): Promise<void> {
    if (pod.node !== this || this.#pods.get(pod.key) !== pod) {
      throw new HarnessError('POD_UNKNOWN', `pod ${pod.key} is not on node ${this.name} (already removed?)`);
    }
    this.#pods.delete(pod.key);
    const errors: unknown[] = [];
    const attempt = async (step: () => Promise<unknown>): Promise<void> => {
      try {
        await step();
      } catch (err) {
        errors.push(err);
      }
    };
    const sb = pod.sandbox;
    await attempt(() => pod.stopAll(options.graceMs ?? 1000));
    await attempt(() => this.#serial(() => this.#runtime.del(sb.network, sb.attachment, sb.result)));
    await attempt(() =>
      this.#serial(() => this.#runtime.del(sb.loopbackNetwork, sb.loopbackAttachment, sb.loopback)),
    );
    await attempt(() => runCommand(['ip', 'netns', 'delete', sb.netnsName], { env: childEnv() }));
    await attempt(async () => {
      const left = await removeCgroupTree(pod.cgroupPath);
      if (left.length > 0)
        throw new HarnessError('TEARDOWN_INCOMPLETE', `pod ${pod.key}: cgroup ${left.join(', ')} still busy`);
    });
    this.#ctx.releasePod(pod.key);
    if (errors.length > 0) throw errors[0];
  }

  /** CNI CHECK of a pod's chain against its cached result. */
  async checkPod(pod: Pod): Promise<void> {
    if (pod.node !== this || this.#pods.get(pod.key) !== pod) {
      throw new HarnessError('POD_UNKNOWN', `pod ${pod.key} is not on node ${this.name} (already removed?)`);
    }
    const sb = pod.sandbox;
    await this.#serial(() => this.#runtime.check(sb.network, sb.attachment, sb.result));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#cniQueue.then(fn, fn);
    this.#cniQueue = run.catch(() => {});
    return run;
  }
}
