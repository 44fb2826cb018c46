/**
 * Runs pods on the harness nodes, as each node's kubelet and container runtime would. A pod's
 * life:
 * 1. its Pod document is written (uid, nodeName, serviceAccountName, labels, ownerReferences;
 *    phase Pending, no IP yet) before the sandbox exists, because the istio-cni agent looks the
 *    pod up during ADD, and enrolls it with ztunnel before istiod can know its address;
 * 2. sandbox: netns and cgroup (`kubepods/pod<uid>`, where the agent finds it), CNI ADD through
 *    the node's chain (bridge + host-local + istio-cni); a failed ADD is retried with backoff, as
 *    kubelet retries RunPodSandbox;
 * 3. containers start inside the pod's netns and cgroup, their output appended to the pod's log
 *    file; status goes to the document (the IP host-local gave, phase Running, Ready once every
 *    readiness probe passes,
 *    probed from the node's netns as kubelet probes from the host);
 * 4. a container that exits is started again (restartPolicy Always) with a growing delay, its
 *    restarts counted;
 * 5. deletion: the document gets `deletionTimestamp` and Ready False first, so istiod marks the
 *    workload unhealthy and ztunnels stop sending it new connections; then the containers are
 *    stopped (SIGTERM, SIGKILL after the grace period), CNI DEL runs, and the document goes.
 *
 * Pod documents are only ever edited field by field (ManifestStore.updatePod): the istio-cni
 * agent writes `ambient.istio.io/redirection` into the same document.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import type { HarnessProcess, MeshNode, Pod, ProcessExit } from '@ambient/test/harness';
import type { Document } from 'yaml';
import { AmbientctlError } from '../errors.ts';
import type { MeshLayout } from './layout.ts';
import type { ManifestStore, StoredObject } from './manifest-store.ts';
import { httpGetInNetns, tcpOpensInNetns } from './netns-http.ts';
import { type ContainerSpec, stringMap, type WorkloadSpec } from './resources.ts';

/** The annotation the istio-cni agent writes once a pod is captured. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

export type PodPhase = 'Pending' | 'Running' | 'Failed' | 'Terminating';

/** What `pods()` reports for one pod. */
export interface PodStatus {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly node: string;
  readonly ip: string | undefined;
  readonly phase: PodPhase;
  /** Every container running and every readiness probe passing. */
  readonly ready: boolean;
  /** Container restarts, summed over the pod's containers. */
  readonly restarts: number;
  /** `ambient.istio.io/redirection: enabled` in the pod's document (written by istio-cni). */
  readonly ambient: boolean;
  readonly netnsPath: string | undefined;
  readonly cgroupPath: string | undefined;
  /** The first container's process. */
  readonly pid: number | undefined;
  readonly logFile: string;
  /** The owning Deployment's name. */
  readonly owner: string | undefined;
  /** Why the pod is not running, when it is not (a failed CNI ADD, a crashing container). */
  readonly message: string | undefined;
}

/** The ReplicaSet (of a Deployment) a pod belongs to. */
export interface PodOwner {
  readonly deployment: string;
  readonly replicaSet: string;
  readonly replicaSetUid: string;
  /** `pod-template-hash`. */
  readonly hash: string;
}

/** What the scheduler hands the kubelet. */
export interface PodRequest {
  readonly namespace: string;
  readonly name: string;
  readonly node: MeshNode;
  readonly owner: PodOwner | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** The pod spec as given (template or Pod), kept in the document. */
  readonly specDoc: Record<string, unknown>;
  readonly workload: WorkloadSpec;
}

interface ContainerRun {
  readonly spec: ContainerSpec;
  proc: HarnessProcess | undefined;
  restarts: number;
  startedAt: number;
  crashStreak: number;
  /** Readiness probe result (true without a probe while running). */
  probeOk: boolean;
  restartTimer: NodeJS.Timeout | undefined;
}

/** One pod the kubelet runs. */
export interface RunningPod {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly node: MeshNode;
  readonly owner: PodOwner | undefined;
  /** Labels and annotations are the fields of a running pod that may change (see `relabel`). */
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly specDoc: Record<string, unknown>;
  readonly createdAt: string;
  readonly phase: PodPhase;
  readonly ip: string | undefined;
  /** Why the pod is not running, when it is not. */
  readonly message: string | undefined;
  /** Set once deletion began; resolves when the pod is gone. */
  readonly deleting: Promise<void> | undefined;
}

interface PodRecord extends RunningPod {
  labels: Readonly<Record<string, string>>;
  annotations: Readonly<Record<string, string>>;
  readonly workload: WorkloadSpec;
  readonly logFile: string;
  readonly abort: AbortController;
  ip: string | undefined;
  phase: PodPhase;
  sandbox: Pod | undefined;
  containers: ContainerRun[];
  message: string | undefined;
  task: Promise<void>;
  deleting: Promise<void> | undefined;
  /** Set before the document is removed: nothing may write it any more (a new pod may take the name). */
  removed: boolean;
}

/** How long a deleted pod stays in the mesh as unhealthy before its processes are stopped. */
const ENDPOINT_DRAIN_MS = 300;
const SANDBOX_RETRY_INITIAL_MS = 1000;
const SANDBOX_RETRY_MAX_MS = 8000;
const CONTAINER_RESTART_INITIAL_MS = 1000;
const CONTAINER_RESTART_MAX_MS = 30_000;
const CONTAINER_STABLE_RUN_MS = 60_000;

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function describeExit(exit: ProcessExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.exitCode}`;
}

function withoutManaged(annotations: Readonly<Record<string, string>>): Record<string, string> {
  const { [REDIRECTION_ANNOTATION]: _managed, ...own } = annotations;
  return own;
}

export interface KubeletOptions {
  readonly nodes: readonly MeshNode[];
  readonly store: ManifestStore;
  readonly layout: MeshLayout;
  readonly log: Logger;
  /** Called once a deleted pod is completely gone. */
  readonly onRemoved: (pod: RunningPod) => void;
}

export class Kubelet {
  readonly #store: ManifestStore;
  readonly #layout: MeshLayout;
  readonly #log: Logger;
  readonly #onRemoved: (pod: RunningPod) => void;
  readonly #pods = new Set<PodRecord>();
  #closed = false;

  constructor(options: KubeletOptions) {
    this.#store = options.store;
    this.#layout = options.layout;
    this.#log = options.log.child({ scope: 'kubelet' });
    this.#onRemoved = options.onRemoved;
    mkdirSync(this.#layout.podLogsDir, { recursive: true });
  }

  /** Starts a pod's life (see the file comment); returns at once. */
  run(req: PodRequest): RunningPod {
    const rec: PodRecord = {
      namespace: req.namespace,
      name: req.name,
      uid: randomUUID(),
      node: req.node,
      owner: req.owner,
      labels: req.labels,
      annotations: withoutManaged(req.annotations),
      specDoc: req.specDoc,
      workload: req.workload,
      logFile: this.#layout.podLog(req.namespace, req.name),
      createdAt: new Date().toISOString(),
      abort: new AbortController(),
      ip: undefined,
      phase: 'Pending',
      sandbox: undefined,
      containers: req.workload.containers.map((spec) => ({
        spec,
        proc: undefined,
        restarts: 0,
        startedAt: 0,
        crashStreak: 0,
        probeOk: spec.readinessProbe === undefined,
        restartTimer: undefined,
      })),
      message: undefined,
      task: Promise.resolve(),
      deleting: undefined,
      removed: false,
    };
    this.#pods.add(rec);
    this.#event(rec, `scheduled to ${req.node.name}`);
    rec.task = this.#runPod(rec).catch((err: unknown) => {
      rec.phase = rec.deleting ? 'Terminating' : 'Failed';
      rec.message = errorMessage(err);
      this.#event(rec, `failed: ${rec.message}`);
      this.#log.error({ pod: `${rec.namespace}/${rec.name}`, err: rec.message }, 'pod failed');
    });
    return rec;
  }

  /** Every container running and every readiness probe passing. */
  ready(pod: RunningPod): boolean {
    const p = pod as PodRecord;
    return (
      p.phase === 'Running' &&
      p.containers.length > 0 &&
      p.containers.every((c) => c.proc !== undefined && c.proc.exit === undefined && c.probeOk)
    );
  }

  status(pod: RunningPod): PodStatus {
    const p = pod as PodRecord;
    const doc = this.#store.readPod(p.namespace, p.name);
    const annotations = stringMap((doc?.metadata as Record<string, unknown> | undefined)?.annotations);
    const first = p.containers[0]?.proc;
    return {
      namespace: p.namespace,
      name: p.name,
      uid: p.uid,
      node: p.node.name,
      ip: p.ip,
      phase: p.phase,
      ready: this.ready(p),
      restarts: p.containers.reduce((n, c) => n + c.restarts, 0),
      ambient: !p.removed && annotations[REDIRECTION_ANNOTATION] === 'enabled',
      netnsPath: p.sandbox?.netnsPath,
      cgroupPath: p.sandbox?.cgroupPath,
      pid: first?.exit === undefined ? first?.pid : undefined,
      logFile: p.logFile,
      owner: p.owner?.deployment,
      message: p.message,
    };
  }

  /** Changes a running pod's labels and annotations, keeping the agent's annotation. */
  async relabel(
    pod: RunningPod,
    labels: Readonly<Record<string, string>>,
    annotations: Readonly<Record<string, string>>,
  ): Promise<void> {
    const p = pod as PodRecord;
    p.labels = labels;
    p.annotations = withoutManaged(annotations);
    if (p.removed) return;
    await this.#store.updatePod(p.namespace, p.name, (doc) => {
      doc.setIn(['metadata', 'labels'], labels);
      const redirection = doc.getIn(['metadata', 'annotations', REDIRECTION_ANNOTATION]);
      doc.setIn(['metadata', 'annotations'], {
        ...p.annotations,
        ...(typeof redirection === 'string' ? { [REDIRECTION_ANNOTATION]: redirection } : {}),
      });
    });
  }

  /** Runs `argv` in the pod's netns and cgroup. */
  async exec(
    pod: RunningPod,
    argv: readonly string[],
    opts: { timeoutMs?: number; check?: boolean },
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const p = pod as PodRecord;
    const name = `${p.namespace}/${p.name}`;
    const sandbox = p.sandbox;
    if (sandbox === undefined || p.deleting) {
      throw new AmbientctlError(
        'POD_NOT_FOUND',
        `pod ${name} has no running sandbox (${p.phase}${p.message ? `: ${p.message}` : ''})`,
      );
    }
    const [cmd, ...args] = argv;
    if (cmd === undefined) throw new AmbientctlError('USAGE', 'exec needs a command');
    let result: Awaited<ReturnType<Pod['exec']>>;
    try {
      result = await sandbox.exec(cmd, args, { timeoutMs: opts.timeoutMs ?? 30_000, check: false });
    } catch (err) {
      const timedOut = (err as { code?: unknown }).code === 'COMMAND_TIMEOUT';
      throw new AmbientctlError(
        timedOut ? 'TIMEOUT' : 'EXEC_FAILED',
        `exec in pod ${name}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    const out = { code: result.exitCode ?? 128, stdout: result.stdout, stderr: result.stderr };
    if (opts.check === true && out.code !== 0) {
      throw new AmbientctlError(
        'EXEC_FAILED',
        `exec ${argv.join(' ')} in pod ${name}: exit code ${out.code}; stderr: ${out.stderr.trim().slice(-1000)}`,
      );
    }
    return out;
  }

  /** Deletes a pod (see the file comment, step 5). Idempotent; resolves once it is gone. */
  delete(pod: RunningPod, why: string): Promise<void> {
    const p = pod as PodRecord;
    p.deleting ??= this.#terminate(p, why);
    return p.deleting;
  }

  /**
   * Stops every pod's processes and timers without the graceful deletion steps, for `down`: the
   * harness teardown that follows removes sandboxes wholesale.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const stops: Promise<unknown>[] = [];
    for (const p of this.#pods) {
      p.abort.abort();
      for (const c of p.containers) {
        clearTimeout(c.restartTimer);
        if (c.proc) stops.push(c.proc.stop(500));
      }
    }
    await Promise.allSettled(stops);
  }

  /** Appends an event to the pod's log (what `ambientctl logs` shows of a pod that does not start). */
  #event(rec: PodRecord, what: string): void {
    try {
      appendFileSync(rec.logFile, `--- ambientctl ${new Date().toISOString()}: ${what} ---\n`);
    } catch {
      // The log directory is gone (mesh shutting down).
    }
  }

  async #runPod(rec: PodRecord): Promise<void> {
    const signal = rec.abort.signal;
    // 1. The Pod as the API server would hold it once scheduled.
    await this.#store.write(this.#podDocument(rec), 'written by the ambientctl pod runner');
    // 2. The sandbox, retried like RunPodSandbox.
    let delay = SANDBOX_RETRY_INITIAL_MS;
    while (!signal.aborted) {
      try {
        rec.sandbox = await rec.node.addPod({
          name: rec.name,
          namespace: rec.namespace,
          uid: rec.uid,
          serviceAccount: rec.workload.serviceAccountName,
          labels: rec.labels,
          annotations: rec.annotations,
          cgroupName: `pod${rec.uid}`,
        });
        break;
      } catch (err) {
        rec.message = `sandbox: ${errorMessage(err)}`;
        this.#event(rec, `creating the sandbox failed, retrying in ${delay} ms: ${errorMessage(err)}`);
        this.#log.warn({ pod: `${rec.namespace}/${rec.name}`, err: errorMessage(err) }, 'pod sandbox failed');
        await sleep(delay, signal);
        delay = Math.min(SANDBOX_RETRY_MAX_MS, delay * 2);
      }
    }
    if (signal.aborted || rec.sandbox === undefined) return;
    rec.message = undefined;
    // As kubelet does: the address CNI ADD returned goes into the status.
    rec.ip = rec.sandbox.ip;
    this.#event(rec, `sandbox ready: ${rec.sandbox.netnsName}, ip ${rec.ip}`);
    // 3. Containers, then status.
    for (const c of rec.containers) this.#startContainer(rec, c);
    rec.phase = 'Running';
    await this.#writeStatus(rec);
    for (const c of rec.containers) if (c.spec.readinessProbe) void this.#probeLoop(rec, c);
  }

  #containerEnv(rec: PodRecord, c: ContainerRun): Record<string, string> {
    const fields: Record<string, string> = {
      'metadata.name': rec.name,
      'metadata.namespace': rec.namespace,
      'metadata.uid': rec.uid,
      'spec.nodeName': rec.node.name,
      'spec.serviceAccountName': rec.workload.serviceAccountName,
      'status.podIP': rec.ip ?? '',
    };
    // The downward API values every sample reads, then the container's own env.
    const env: Record<string, string> = {
      POD_NAME: rec.name,
      POD_NAMESPACE: rec.namespace,
      POD_IP: rec.ip ?? '',
      NODE_NAME: rec.node.name,
      SERVICE_ACCOUNT: rec.workload.serviceAccountName,
      HOSTNAME: rec.name,
    };
    for (const e of c.spec.env) {
      env[e.name] = e.fieldPath !== undefined ? (fields[e.fieldPath] ?? '') : (e.value ?? '');
    }
    return env;
  }

  #startContainer(rec: PodRecord, c: ContainerRun): void {
    const sandbox = rec.sandbox;
    if (sandbox === undefined || rec.deleting || this.#closed) return;
    this.#event(
      rec,
      `container ${c.spec.name}: starting ${c.spec.argv.join(' ')}${c.restarts > 0 ? ` (restart ${c.restarts})` : ''}`,
    );
    // The shell appends the output to the pod's log and execs the command: the pid is the command's.
    const proc = sandbox.spawn('/bin/sh', ['-c', 'exec "$@" >>"$0" 2>&1', rec.logFile, ...c.spec.argv], {
      env: this.#containerEnv(rec, c),
    });
    c.proc = proc;
    c.startedAt = Date.now();
    if (c.spec.readinessProbe) c.probeOk = false;
    void proc.exited.then((exit) => this.#onContainerExit(rec, c, proc, exit));
  }

  #onContainerExit(rec: PodRecord, c: ContainerRun, proc: HarnessProcess, exit: ProcessExit): void {
    if (c.proc !== proc || rec.deleting || this.#closed || rec.abort.signal.aborted) return;
    // restartPolicy Always (the only one resources.ts admits): start it again, later each time.
    c.crashStreak = Date.now() - c.startedAt >= CONTAINER_STABLE_RUN_MS ? 1 : c.crashStreak + 1;
    const delay = Math.min(CONTAINER_RESTART_MAX_MS, CONTAINER_RESTART_INITIAL_MS * 2 ** (c.crashStreak - 1));
    c.restarts++;
    rec.message = `container ${c.spec.name} exited (${describeExit(exit)}); restarting in ${delay} ms`;
    this.#event(rec, rec.message);
    void this.#writeStatus(rec);
    c.restartTimer = setTimeout(() => {
      c.restartTimer = undefined;
      rec.message = undefined;
      this.#startContainer(rec, c);
      void this.#writeStatus(rec);
    }, delay);
    c.restartTimer.unref();
  }

  async #probeLoop(rec: PodRecord, c: ContainerRun): Promise<void> {
    const probe = c.spec.readinessProbe;
    if (probe === undefined) return;
    const signal = rec.abort.signal;
    await sleep(probe.initialDelayMs, signal);
    while (!signal.aborted && !this.#closed && rec.deleting === undefined) {
      const ip = rec.ip as string;
      let ok = false;
      if (c.proc !== undefined && c.proc.exit === undefined) {
        if (probe.kind === 'tcp') ok = await tcpOpensInNetns(rec.node.netnsPath, ip, probe.port, 1000);
        else {
          try {
            const a = await httpGetInNetns(rec.node.netnsPath, ip, probe.port, probe.path, 1000);
            ok = a.status >= 200 && a.status < 400;
          } catch {
            ok = false;
          }
        }
      }
      if (ok !== c.probeOk) {
        c.probeOk = ok;
        await this.#writeStatus(rec);
      }
      // Until ready, probe quickly: a pod should not wait a whole period to join its Service.
      await sleep(c.probeOk ? probe.periodMs : Math.min(probe.periodMs, 200), signal);
    }
  }

  #podDocument(rec: PodRecord): StoredObject {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: rec.name,
        namespace: rec.namespace,
        uid: rec.uid,
        creationTimestamp: rec.createdAt,
        labels: rec.labels,
        ...(Object.keys(rec.annotations).length > 0 ? { annotations: rec.annotations } : {}),
        ...(rec.owner === undefined
          ? {}
          : {
              // As a ReplicaSet controller names its pods: istiod reads the workload (the
              // Deployment) from the owner only for generated names.
              generateName: `${rec.owner.replicaSet}-`,
              ownerReferences: [
                {
                  apiVersion: 'apps/v1',
                  kind: 'ReplicaSet',
                  name: rec.owner.replicaSet,
                  uid: rec.owner.replicaSetUid,
                  controller: true,
                  blockOwnerDeletion: true,
                },
              ],
            }),
      },
      spec: {
        ...rec.specDoc,
        nodeName: rec.node.name,
        serviceAccountName: rec.workload.serviceAccountName,
      },
      status: this.#statusFields(rec),
    };
  }

  #statusFields(rec: PodRecord): Record<string, unknown> {
    return {
      phase: rec.phase === 'Terminating' ? 'Running' : rec.phase,
      hostIP: rec.node.ip,
      ...(rec.ip === undefined ? {} : { podIP: rec.ip, podIPs: [{ ip: rec.ip }] }),
      conditions: [
        { type: 'PodScheduled', status: 'True' },
        { type: 'Ready', status: this.ready(rec) ? 'True' : 'False' },
      ],
      containerStatuses: rec.containers.map((c) => ({
        name: c.spec.name,
        image: c.spec.image,
        ready: c.proc !== undefined && c.proc.exit === undefined && c.probeOk,
        restartCount: c.restarts,
        started: c.proc !== undefined && c.proc.exit === undefined,
      })),
    };
  }

  /** Writes the fields the kubelet owns into the pod's document (never the agent's annotation). */
  async #writeStatus(rec: PodRecord, extra?: (doc: Document) => void): Promise<void> {
    if (rec.removed) return;
    try {
      await this.#store.updatePod(rec.namespace, rec.name, (doc) => {
        doc.set('status', doc.createNode(this.#statusFields(rec)));
        extra?.(doc);
      });
    } catch (err) {
      this.#log.warn(
        { pod: `${rec.namespace}/${rec.name}`, err: errorMessage(err) },
        'writing pod status failed',
      );
    }
  }

  async #terminate(rec: PodRecord, why: string): Promise<void> {
    const wasServing = this.ready(rec);
    rec.abort.abort();
    rec.phase = 'Terminating';
    this.#event(rec, `terminating: ${why}`);
    await this.#writeStatus(rec, (doc) =>
      doc.setIn(['metadata', 'deletionTimestamp'], new Date().toISOString()),
    );
    await rec.task;
    if (wasServing) await sleep(ENDPOINT_DRAIN_MS);
    const errors: string[] = [];
    await Promise.all(
      rec.containers.map(async (c) => {
        clearTimeout(c.restartTimer);
        await c.proc?.stop(Math.max(100, rec.workload.terminationGracePeriodMs));
      }),
    );
    if (rec.sandbox !== undefined) {
      try {
        await rec.node.removePod(rec.sandbox, { graceMs: 100 });
      } catch (err) {
        errors.push(errorMessage(err));
      }
    }
    rec.removed = true;
    await this.#store.remove('Pod', rec.namespace, rec.name);
    this.#pods.delete(rec);
    this.#event(rec, errors.length > 0 ? `deleted, with errors: ${errors.join('; ')}` : 'deleted');
    if (errors.length > 0)
      this.#log.warn({ pod: `${rec.namespace}/${rec.name}`, errors }, 'pod removal incomplete');
    this.#onRemoved(rec);
  }
}
