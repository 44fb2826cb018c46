import type { ChainedPlugin, CniNetwork } from './cni/config.ts';
import type { CniAttachment } from './cni/invoke.ts';
import type { CniResult } from './cni/result.ts';
import type { MeshNode } from './node.ts';
import { ProcessHost, type ProcessHostTarget } from './process-host.ts';

/** What a test asks for when it adds a pod. */
export interface PodSpec {
  /** The pod name (a DNS-1123 subdomain). Unique within its namespace across the harness. */
  readonly name: string;
  /** Default `default`. */
  readonly namespace?: string;
  /** Default a random UUID. */
  readonly uid?: string;
  /** Default `default`. Kept for the control plane's view of the pod (its SPIFFE identity). */
  readonly serviceAccount?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  /** Plugins appended to this pod's chain after the node's (see {@link ChainedPlugin}). */
  readonly chain?: readonly ChainedPlugin[];
  /**
   * The pod's cgroup directory name under the node's `kubepods/`. Default `<namespace>_<name>`;
   * kubelet's cgroupfs driver names it `pod<uid>`, which is what the istio-cni agent looks for.
   */
  readonly cgroupName?: string;
  /**
   * An address for eth0 from the node's pod CIDR, requested from host-local with `IP=<ip>` in
   * CNI_ARGS (as a runtime with static pod IPs does). Default: host-local picks the next free one.
   */
  readonly ip?: string;
}

/** How a pod's sandbox was wired; kept so DEL and CHECK use exactly what ADD used. */
export interface PodSandbox {
  /** The sandbox (pause) container id: CNI_CONTAINERID and K8S_POD_INFRA_CONTAINER_ID. */
  readonly containerId: string;
  /** The netns name (`ambh-<run>-pod-<namespace>_<name>`). */
  readonly netnsName: string;
  /** The conflist and CNI_PATH the pod's eth0 was added with. */
  readonly network: CniNetwork;
  readonly attachment: CniAttachment;
  /** The final ADD result of the chain (the cached result DEL and CHECK receive). */
  readonly result: CniResult;
  /** The loopback network's result (a runtime adds `lo` as its own network). */
  readonly loopback: CniResult;
  readonly loopbackAttachment: CniAttachment;
  readonly loopbackNetwork: CniNetwork;
}

/**
 * A pod: its own network namespace wired by the node's CNI chain, and its own cgroup v2
 * directory that every process started in it joins.
 */
export class Pod extends ProcessHost {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly serviceAccount: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly node: MeshNode;
  /** The pod's primary IP (first IPv4 of eth0 in the CNI result). */
  readonly ip: string;
  /** Every address of eth0, IPv4 first. */
  readonly ips: readonly string[];
  /** The default gateway host-local assigned (the node's cni0 address). */
  readonly gateway: string | undefined;
  readonly sandbox: PodSandbox;

  constructor(
    fields: {
      spec: Required<Omit<PodSpec, 'chain' | 'cgroupName' | 'ip'>>;
      node: MeshNode;
      ip: string;
      ips: readonly string[];
      gateway: string | undefined;
      sandbox: PodSandbox;
    },
    target: ProcessHostTarget,
  ) {
    super(target);
    this.name = fields.spec.name;
    this.namespace = fields.spec.namespace;
    this.uid = fields.spec.uid;
    this.serviceAccount = fields.spec.serviceAccount;
    this.labels = fields.spec.labels;
    this.annotations = fields.spec.annotations;
    this.node = fields.node;
    this.ip = fields.ip;
    this.ips = fields.ips;
    this.gateway = fields.gateway;
    this.sandbox = fields.sandbox;
  }

  /** `namespace/name`. */
  get key(): string {
    return `${this.namespace}/${this.name}`;
  }

  /** The netns name (`ip netns exec <netnsName>` works for manual debugging). */
  get netnsName(): string {
    return this.sandbox.netnsName;
  }

  /** The CNI result of the chain (IPs, gateway, interfaces, and the raw JSON). */
  get cni(): CniResult {
    return this.sandbox.result;
  }

  /** Runs CNI CHECK over the pod's chain with the cached result; throws a CniError on failure. */
  check(): Promise<void> {
    return this.node.checkPod(this);
  }

  /** Removes the pod (same as `pod.node.removePod(pod)`). */
  remove(): Promise<void> {
    return this.node.removePod(this);
  }
}
