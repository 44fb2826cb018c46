import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type AddressPlan, MAX_NODES, planAddresses } from './addressing.ts';
import { unifiedCgroupRoot } from './cgroup.ts';
import { type ChainedPlugin, CNI_VERSIONS, type CniVersion, REFERENCE_PLUGIN_DIR } from './cni/config.ts';
import { childEnv } from './env.ts';
import { HarnessError } from './errors.ts';
import { guardRun } from './exit-hooks.ts';
import { entryArgv, netnsPath } from './netns.ts';
import { MeshNode, type NodeContext } from './node.ts';
import type { Pod } from './pod.ts';
import { runCommand } from './process.ts';
import { newRunId, type RunId, runTempDir } from './run-id.ts';
import { type SweepReport, sweepLeftovers } from './sweep.ts';
import { type TeardownReport, teardownRunSync } from './teardown.ts';

/** The bridge in the fabric netns that every node's underlay link is a port of. */
export const UNDERLAY_BRIDGE = 'ambh-br';
/** The node's underlay link, inside the node netns (its "eth0" towards the other nodes). */
export const NODE_UNDERLAY_LINK = 'ambh-ul';

const NODE_NAME = /^[a-z][a-z0-9-]{0,30}$/;

/** How to build a harness. */
export interface HarnessOptions {
  /** A node count (named node1, node2, …) or the node names. Default 2. */
  readonly nodes?: number | readonly string[];
  /** The pod conflist's cniVersion. Default 1.0.0. */
  readonly cniVersion?: CniVersion;
  /** Where the reference plugins (bridge, host-local, loopback) are. Default /usr/lib/cni. */
  readonly referencePluginDir?: string;
  /** Plugins appended to every node's pod chain (e.g. istio-cni installed cluster-wide). */
  readonly chain?: readonly ChainedPlugin[];
  /** Sweep leftovers of crashed runs first. Default true. */
  readonly sweep?: boolean;
  /** Deadline per CNI plugin execution. Default 10 s. */
  readonly cniTimeoutMs?: number;
}

function nodeNames(nodes: HarnessOptions['nodes']): string[] {
  const names =
    typeof nodes === 'object' ? [...nodes] : Array.from({ length: nodes ?? 2 }, (_, i) => `node${i + 1}`);
  if (names.length < 1 || names.length > MAX_NODES) {
    throw new HarnessError('TOPOLOGY_INVALID', `node count ${names.length} is outside 1-${MAX_NODES}`);
  }
  for (const n of names) {
    // "fabric" is the fabric netns; names become netns and cgroup names, so keep them short and plain.
    if (!NODE_NAME.test(n) || n === 'fabric' || n.startsWith('pod-')) {
      throw new HarnessError(
        'NAME_INVALID',
        `node name ${JSON.stringify(n)} must be 1-31 of [a-z0-9-] starting with a letter, not "fabric" or "pod-…"`,
      );
    }
  }
  if (new Set(names).size !== names.length) {
    throw new HarnessError('TOPOLOGY_INVALID', `node names ${names.join(', ')} are not unique`);
  }
  return names;
}

/**
 * A simulated cluster in network namespaces: nodes joined by an underlay bridge, pods wired by
 * the real CNI reference plugins, each pod with its own cgroup. Everything it creates is named
 * after its run key (`ambh-<pid>-<start>-<seq>`) and removed by {@link Harness.destroy}, by an
 * exit hook if the process ends first, or by the next harness's sweep if the process was killed.
 *
 * @example
 * const mesh = await Harness.create({ nodes: 2 });
 * try {
 *   const a = await mesh.node('node1').addPod({ name: 'client' });
 *   const b = await mesh.node('node2').addPod({ name: 'server' });
 *   const server = b.spawnNode(TCP_ECHO_SERVER, ['--port', '7000']);
 *   await server.waitForLine('listening');
 *   const r = await a.execNode(TCP_CLIENT, ['--host', b.ip, '--port', '7000', '--message', 'hi']);
 * } finally {
 *   await mesh.destroy();
 * }
 */
export class Harness {
  readonly run: RunId;
  /** Holds host-local state, CNI records and inline scripts; removed on destroy. */
  readonly tempDir: string;
  /** `<cgroup v2 root>/<run key>`: the parent of every node and pod cgroup of this run. */
  readonly cgroupPath: string;
  /** The netns holding the underlay bridge. */
  readonly fabricNetns: string;
  readonly addresses: AddressPlan;
  readonly cniVersion: CniVersion;
  readonly nodes: readonly MeshNode[];
  /** What the sweep at creation removed (undefined when `sweep: false`). */
  readonly sweepReport: SweepReport | undefined;
  readonly #pods = new Set<string>();
  readonly #unguard: () => void;
  #destroying: Promise<TeardownReport> | undefined;

  private constructor(fields: {
    run: RunId;
    tempDir: string;
    cgroupPath: string;
    addresses: AddressPlan;
    cniVersion: CniVersion;
    sweepReport: SweepReport | undefined;
    unguard: () => void;
    build: (ctx: NodeContext) => MeshNode[];
    referencePluginDir: string;
    cniTimeoutMs: number;
  }) {
    this.run = fields.run;
    this.tempDir = fields.tempDir;
    this.cgroupPath = fields.cgroupPath;
    this.fabricNetns = `${fields.run.key}-fabric`;
    this.addresses = fields.addresses;
    this.cniVersion = fields.cniVersion;
    this.sweepReport = fields.sweepReport;
    this.#unguard = fields.unguard;
    this.nodes = fields.build({
      runKey: fields.run.key,
      tempDir: fields.tempDir,
      cniVersion: fields.cniVersion,
      referencePluginDir: fields.referencePluginDir,
      cniTimeoutMs: fields.cniTimeoutMs,
      isOpen: () => this.#destroying === undefined,
      claimPod: (key) => {
        if (this.#destroying !== undefined) {
          throw new HarnessError(
            'HARNESS_DESTROYED',
            `harness ${this.run.key} is destroyed; cannot add pod ${key}`,
          );
        }
        if (this.#pods.has(key)) throw new HarnessError('POD_EXISTS', `pod ${key} already exists`);
        this.#pods.add(key);
      },
      releasePod: (key) => this.#pods.delete(key),
    });
  }

  /** The run key every created name starts with. */
  get key(): string {
    return this.run.key;
  }

  /**
   * Builds the topology: sweeps leftovers of dead runs, creates the fabric and node namespaces,
   * the underlay (a veth from each node to the fabric bridge), node addresses, routes to every
   * other node's pod CIDR, and enables forwarding in each node.
   */
  static async create(options: HarnessOptions = {}): Promise<Harness> {
    const names = nodeNames(options.nodes);
    const cniVersion = options.cniVersion ?? '1.0.0';
    if (!(CNI_VERSIONS as readonly string[]).includes(cniVersion)) {
      throw new HarnessError(
        'TOPOLOGY_INVALID',
        `cniVersion ${cniVersion} is not one of ${CNI_VERSIONS.join(', ')}`,
      );
    }
    const cgroupRoot = unifiedCgroupRoot();
    const sweepReport = options.sweep === false ? undefined : sweepLeftovers();
    const run = newRunId();
    const unguard = guardRun(run.key);
    const tempDir = runTempDir(run.key);
    const cgroupPath = join(cgroupRoot, run.key);
    const addresses = planAddresses(run);
    const fabric = `${run.key}-fabric`;
    const nodes = names.map((name, i) => ({
      name,
      index: i + 1,
      netnsName: `${run.key}-${name}`,
      ip: addresses.nodeIp(i + 1),
      podCidr: addresses.podCidr(i + 1),
      podGateway: addresses.podGateway(i + 1),
      cgroupDir: join(cgroupPath, name),
      chain: options.chain ?? [],
    }));
    try {
      mkdirSync(tempDir);
      for (const n of nodes) {
        mkdirSync(join(n.cgroupDir, 'system'), { recursive: true });
        mkdirSync(join(n.cgroupDir, 'kubepods'), { recursive: true });
      }
      const env = childEnv();
      await runCommand(['ip', '-batch', '-'], {
        env,
        input: [fabric, ...nodes.map((n) => n.netnsName)].map((ns) => `netns add ${ns}\n`).join(''),
      });
      const fabricLines = [
        `link set lo up`,
        `link add ${UNDERLAY_BRIDGE} type bridge`,
        `link set ${UNDERLAY_BRIDGE} up`,
      ];
      for (const n of nodes) {
        const port = `ambh-n${n.index}`;
        fabricLines.push(
          `link add ${port} type veth peer name ${NODE_UNDERLAY_LINK} netns ${n.netnsName}`,
          `link set ${port} master ${UNDERLAY_BRIDGE}`,
          `link set ${port} up`,
        );
      }
      await runCommand(['ip', '-n', fabric, '-batch', '-'], { env, input: `${fabricLines.join('\n')}\n` });
      const prefixLength = addresses.underlayCidr.split('/')[1];
      await Promise.all(
        nodes.map((n) => {
          const lines = [
            'link set lo up',
            `addr add ${n.ip}/${prefixLength} dev ${NODE_UNDERLAY_LINK}`,
            `link set ${NODE_UNDERLAY_LINK} up`,
            ...nodes
              .filter((o) => o !== n)
              .map((o) => `route add ${o.podCidr} via ${o.ip} dev ${NODE_UNDERLAY_LINK}`),
          ];
          // /proc/sys/net is per netns: the write lands in the node's namespace.
          const argv = entryArgv({ netnsPath: netnsPath(n.netnsName) }, '/bin/sh', [
            '-c',
            'echo 1 > /proc/sys/net/ipv4/ip_forward && exec ip -batch -',
          ]);
          return runCommand(argv, { env, input: `${lines.join('\n')}\n` }, `setup node ${n.name}`);
        }),
      );
    } catch (err) {
      teardownRunSync(run.key);
      unguard();
      throw err;
    }
    return new Harness({
      run,
      tempDir,
      cgroupPath,
      addresses,
      cniVersion,
      sweepReport,
      unguard,
      referencePluginDir: options.referencePluginDir ?? REFERENCE_PLUGIN_DIR,
      cniTimeoutMs: options.cniTimeoutMs ?? 10_000,
      build: (ctx) => nodes.map((n) => new MeshNode(n, ctx)),
    });
  }

  /** The node with this name; throws NODE_UNKNOWN. */
  node(name: string): MeshNode {
    const n = this.nodes.find((x) => x.name === name);
    if (n === undefined) {
      throw new HarnessError(
        'NODE_UNKNOWN',
        `no node ${JSON.stringify(name)} in harness ${this.key}; nodes are ${this.nodes.map((x) => x.name).join(', ')}`,
      );
    }
    return n;
  }

  /** Every pod on every node. */
  get pods(): readonly Pod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /** The pod `namespace/name`, if it exists. */
  pod(namespace: string, name: string): Pod | undefined {
    return this.pods.find((p) => p.namespace === namespace && p.name === name);
  }

  /**
   * Tears everything down: removes every pod (processes, CNI DEL, netns, cgroup) in parallel,
   * stops node processes, then deletes the node and fabric namespaces, the run's cgroup tree and
   * its temp dir. Idempotent. Throws TEARDOWN_INCOMPLETE (after doing all it can) when a step
   * failed or something is still there; the cause holds the individual errors.
   */
  destroy(options: { graceMs?: number } = {}): Promise<TeardownReport> {
    this.#destroying ??= this.#destroy(options.graceMs ?? 1000);
    return this.#destroying;
  }

  async #destroy(graceMs: number): Promise<TeardownReport> {
    const results = await Promise.allSettled([
      ...this.pods.map((p) => p.node.removePod(p, { graceMs })),
      ...this.nodes.map((n) => n.stopAll(graceMs)),
    ]);
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    const report = teardownRunSync(this.key);
    this.#unguard();
    if (report.leftovers.length > 0) {
      errors.push(new Error(`still present after teardown: ${report.leftovers.join(', ')}`));
    }
    if (errors.length > 0) {
      throw new HarnessError(
        'TEARDOWN_INCOMPLETE',
        `destroying harness ${this.key}: ${errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ')}`,
        { cause: new AggregateError(errors) },
      );
    }
    return report;
  }
}
