/**
 * The istio-cni node agent, wired (reference architecture flow (c)). Start order:
 * 1. config source (LocalSource on the manifests directory, or KubeSource), Pods and Namespaces,
 *    until synced;
 * 2. installer: plugin binary into the CNI bin dir, istio-cni chained into the conflist (kept there
 *    while the primary CNI rewrites it);
 * 3. pod cache loaded from the run dir, host probe SNAT table ensured, startup reconcile (repair
 *    rules of pods enrolled before a restart, drop pods deleted meanwhile);
 * 4. ZDS server (its snapshot is the pod cache, so a reconnecting ztunnel keeps every proxy);
 * 5. plugin event server (ADD → enablement → addPodToMesh; non-ambient pods return at once);
 * 6. pod/namespace watch, and the enrollment state file the plugin reads while the agent is down;
 * 7. health (8000) and metrics (15014).
 * Stop is the reverse; enrolled pods are left as they are (checklist 35: traffic continues).
 */
import { mkdir } from 'node:fs/promises';
import { LocalSource } from '@ambient/common/config/local-source';
import type { Pod } from '@ambient/common/config/objects';
import type { ConfigSource } from '@ambient/common/config/source';
import { ConfigStore } from '@ambient/common/config/store';
import { errorMessage } from '@ambient/common/errors';
import { HttpEndpoint, sendText } from '@ambient/common/http-endpoint';
import { KubeSource } from '@ambient/common/kube/kube-source';
import { Readiness, type StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import { createMetricsRegistry, sendMetrics } from '@ambient/common/metrics';
import { ZdsServer } from '@ambient/common/zds';
import type { Registry } from 'prom-client';
import type { CmdAddRequest } from '../plugin-protocol.ts';
import type { RedirectConfig } from '../redirect/config.ts';
import { applyHostProbeRules } from '../redirect/host-probe.ts';
import { createRedirector, type Redirector } from '../redirect/redirector.ts';
import type { AgentConfig } from './config.ts';
import { ambientDecision, type EnablementConfig } from './enablement.ts';
import { AgentError } from './errors.ts';
import { healthEndpoint } from './health.ts';
import { CniInstaller } from './install/installer.ts';
import { MeshDataplane } from './mesh-dataplane.ts';
import { type AgentMetrics, agentMetrics } from './metrics.ts';
import { PluginServer } from './plugin-server.ts';
import { KubePodAnnotator, LocalPodAnnotator, type PodAnnotator } from './pod-annotator.ts';
import { PodCache } from './pod-cache.ts';
import { PodWatch } from './pod-watch.ts';
import { reconcileOnStartup, type StartupReconcileReport } from './reconcile.ts';

/** How long an ADD waits for the config source to learn about a new pod. */
const POD_LOOKUP_WAIT_MS = 2000;

export interface CniAgentOptions {
  readonly config: AgentConfig;
  readonly log?: Logger;
  /** Default: a new registry with process metrics. */
  readonly registry?: Registry;
  /** `/proc` for netns lookups (`/host/proc` in a DaemonSet). */
  readonly procRoot?: string;
  /** Source rescan interval in local mode (tests shorten it). */
  readonly localRescanMs?: number;
}

export class CniAgent {
  readonly name = 'istio-cni-agent';
  readonly config: AgentConfig;
  readonly store = new ConfigStore();
  readonly cache: PodCache;
  readonly readiness = new Readiness();
  readonly registry: Registry;
  readonly metrics: AgentMetrics;
  readonly zds: ZdsServer;
  readonly dataplane: MeshDataplane;
  readonly podWatch: PodWatch;
  readonly redirector: Redirector;
  readonly #log: Logger;
  readonly #source: ConfigSource;
  readonly #localSource: LocalSource | undefined;
  readonly #enablement: EnablementConfig;
  readonly #redirectConfig: Partial<RedirectConfig>;
  readonly #installer: CniInstaller | undefined;
  readonly #pluginServer: PluginServer;
  readonly #health: HttpEndpoint;
  readonly #metricsEndpoint: HttpEndpoint;
  readonly #procRoot: string | undefined;
  #reconcileReport: StartupReconcileReport | undefined;
  /** Marks the "cni plugin installed" readiness task done; undefined while installed. */
  #installPending: (() => void) | undefined;
  #started: string[] = [];

  constructor(options: CniAgentOptions) {
    const cfg = options.config;
    this.config = cfg;
    this.#log = options.log ?? logger('cni-agent');
    this.#procRoot = options.procRoot;
    this.registry = options.registry ?? createMetricsRegistry({ component: 'istio-cni', version: '0.1.0' });
    this.metrics = agentMetrics(this.registry);
    this.cache = new PodCache(cfg.runDir);
    this.#enablement = {
      excludeNamespaces: cfg.excludeNamespaces,
      agentPod: { namespace: cfg.podNamespace, name: cfg.podName },
    };
    this.#redirectConfig = {
      captureDns: cfg.dnsCapture,
      ipv6: cfg.ipv6,
      probeSnatIpv4: cfg.hostProbeSnatIp,
      probeSnatIpv6: cfg.hostProbeSnatIpv6,
    };
    if (cfg.configSource === 'local') {
      this.#localSource = new LocalSource({
        dir: cfg.localManifestsDir as string,
        store: this.store,
        registry: this.registry,
        kinds: ['Pod', 'Namespace'],
        log: this.#log.child({ component: 'config' }),
        ...(options.localRescanMs === undefined ? {} : { rescanIntervalMs: options.localRescanMs }),
      });
      this.#source = this.#localSource;
    } else {
      this.#source = new KubeSource({
        store: this.store,
        registry: this.registry,
        kinds: ['Pod', 'Namespace'],
        ...(cfg.kubeconfig === undefined ? {} : { kubeconfigPath: cfg.kubeconfig }),
        log: this.#log.child({ component: 'kube' }),
      });
    }
    const annotator: PodAnnotator =
      cfg.configSource === 'local'
        ? new LocalPodAnnotator(cfg.localManifestsDir as string)
        : new KubePodAnnotator(cfg.kubeconfig);
    this.redirector =
      cfg.redirectMode === 'ebpf'
        ? createRedirector({
            mode: 'ebpf',
            config: this.#redirectConfig,
            proxyCgroupPath: cfg.ebpfProxyCgroup as string,
            pinRoot: cfg.ebpfPinRoot,
          })
        : createRedirector({ mode: 'nftables', config: this.#redirectConfig });
    this.zds = new ZdsServer({
      path: cfg.zdsSocketPath,
      snapshot: () => this.cache.snapshot(),
      log: this.#log.child({ component: 'zds' }),
    });
    const countConns = () => this.metrics.zdsConnections.set(this.zds.connectionCount);
    this.zds.on('connect', countConns);
    this.zds.on('disconnect', countConns);
    this.dataplane = new MeshDataplane({
      redirector: this.redirector,
      redirectConfig: this.#redirectConfig,
      zds: this.zds,
      cache: this.cache,
      annotator,
      hostNetnsPath: cfg.hostNetnsPath,
      ...(options.procRoot === undefined ? {} : { procRoot: options.procRoot }),
      log: this.#log,
      onFailure: (reason) => this.metrics.enrollmentFailures.inc({ reason }),
    });
    this.podWatch = new PodWatch({
      store: this.store,
      nodeName: cfg.nodeName,
      enablement: this.#enablement,
      dataplane: this.dataplane,
      cache: this.cache,
      runDir: cfg.runDir,
      log: this.#log.child({ component: 'pod-watch' }),
      onEnrolledCount: (n) => this.metrics.enrolledPods.set(n),
    });
    if (cfg.installCni) {
      this.#installer = new CniInstaller({
        cniBinDir: cfg.cniBinDir,
        cniConfDir: cfg.cniConfDir,
        pluginBinary: cfg.pluginBinary,
        chained: cfg.chainedCniPlugin,
        istioOwnedCniConfig: cfg.istioOwnedCniConfig,
        pluginConfig: {
          cniAgentRunDir: cfg.runDir,
          excludeNamespaces: [...cfg.excludeNamespaces],
          podNamespace: cfg.podNamespace,
          nativeNftables: cfg.redirectMode === 'nftables',
        },
        onStatusChange: (status) => this.#installStatus(status.ready),
        log: this.#log.child({ component: 'install' }),
      });
    }
    this.#pluginServer = new PluginServer({
      runDir: cfg.runDir,
      handlerTimeoutMs: cfg.pluginHandlerTimeoutMs,
      onCmdAdd: (req, signal) => this.#onCmdAdd(req, signal),
      log: this.#log.child({ component: 'plugin-server' }),
    });
    this.#health = healthEndpoint({
      bindAddress: cfg.healthBindAddress,
      port: cfg.healthPort,
      readiness: this.readiness,
      log: this.#log,
    });
    this.#metricsEndpoint = new HttpEndpoint({
      name: 'cni-metrics',
      listen: { bindAddress: cfg.metricsBindAddress, port: cfg.metricsPort },
      log: this.#log,
      handler: (req, res, url) =>
        url.pathname === '/metrics'
          ? sendMetrics(req, res, this.registry)
          : sendText(res, 404, 'not found\n'),
    });
  }

  /** The bound health and metrics ports (useful when 0 was configured). */
  get ports(): { health: number; metrics: number } {
    return { health: this.#health.port, metrics: this.#metricsEndpoint.port };
  }

  get reconcileReport(): StartupReconcileReport | undefined {
    return this.#reconcileReport;
  }

  async start(): Promise<void> {
    const cfg = this.config;
    this.#installStatus(false);
    const done = {
      source: this.readiness.register('config source synced'),
      reconcile: this.readiness.register('startup reconcile'),
      servers: this.readiness.register('plugin and zds sockets listening'),
    };
    await mkdir(cfg.runDir, { recursive: true, mode: 0o755 });
    await this.#health.start();
    this.#started.push('health');
    await this.#metricsEndpoint.start();
    this.#started.push('metrics');
    await this.#source.start();
    this.#started.push('source');
    await this.#source.synced();
    done.source();
    if (this.#installer) {
      const status = await this.#installer.start();
      this.#started.push('installer');
      this.#installStatus(status.ready);
      if (!status.ready) this.#log.warn({ problem: status.problem?.message }, 'cni plugin not installed yet');
    } else this.#installStatus(true);
    this.cache.load();
    await applyHostProbeRules(cfg.hostNetnsPath, this.#redirectConfig);
    this.#reconcileReport = await reconcileOnStartup({
      store: this.store,
      cache: this.cache,
      dataplane: this.dataplane,
      redirector: this.redirector,
      redirectConfig: this.#redirectConfig,
      enablement: this.#enablement,
      hostNetnsPath: cfg.hostNetnsPath,
      repairRules: cfg.reconcileOnStartup,
      ...(this.#procRoot === undefined ? {} : { procRoot: this.#procRoot }),
      log: this.#log,
    });
    this.metrics.enrolledPods.set(this.cache.enrolled().length);
    done.reconcile();
    this.zds.start();
    this.#started.push('zds');
    await this.podWatch.writeState();
    await this.#pluginServer.start();
    this.#started.push('plugin');
    this.podWatch.start();
    this.#started.push('watch');
    done.servers();
    this.#log.info({ node: cfg.nodeName, mode: this.redirector.mode }, 'istio-cni node agent started');
  }

  /** Ready only while the plugin is installed: a primary CNI that drops it makes the agent unready. */
  #installStatus(ready: boolean): void {
    if (ready) {
      this.#installPending?.();
      this.#installPending = undefined;
    } else {
      this.#installPending ??= this.readiness.register('cni plugin installed');
    }
  }

  async stop(ctx?: StopContext): Promise<void> {
    const c: StopContext = ctx ?? { mode: 'immediate', force: AbortSignal.abort(), deadline: Date.now() };
    const started = new Set(this.#started);
    this.#started = [];
    if (started.has('watch')) await this.podWatch.stop();
    if (started.has('plugin')) await this.#pluginServer.stop(c);
    if (started.has('zds')) await this.zds.stop(c);
    // The installer stays installed: pods keep being sent to the agent (and fail while it is down).
    if (started.has('installer')) await this.#installer?.stop();
    if (started.has('source')) await this.#source.stop(c);
    if (started.has('metrics')) await this.#metricsEndpoint.stop(c);
    if (started.has('health')) await this.#health.stop(c);
  }

  /** Entry A: the plugin's ADD. Resolves when the pod may start. */
  async #onCmdAdd(req: CmdAddRequest, signal: AbortSignal): Promise<void> {
    const pod = await this.#lookupPod(req, signal);
    const uid = pod.metadata.uid ?? req.podUid;
    if (uid === undefined) {
      throw new AgentError('POD_UNKNOWN', `pod ${req.podNamespace}/${req.podName} has no uid`);
    }
    const withUid: Pod =
      pod.metadata.uid === undefined ? { ...pod, metadata: { ...pod.metadata, uid } } : pod;
    const ips = req.ips.filter((i) => i.inSandbox).map((i) => i.ip);
    const ns = this.store.get('Namespace', '', req.podNamespace);
    const decision = ambientDecision(withUid, ns, this.#enablement);
    if (!decision.ambient) {
      // Remember the sandbox: a namespace labelled later enrolls this pod through the watch.
      if (!this.cache.get(uid)?.enrolled) {
        await this.cache.upsert({
          uid,
          info: {
            name: req.podName,
            namespace: req.podNamespace,
            serviceAccount: pod.spec?.serviceAccountName ?? 'default',
          },
          netnsPath: req.netns,
          ips,
          enrolled: false,
        });
      }
      this.#log.debug(
        { pod: `${req.podNamespace}/${req.podName}`, reason: decision.reason },
        'pod is not ambient',
      );
      return;
    }
    await this.dataplane.addPodToMesh(withUid, { netnsPath: req.netns, ips });
    this.metrics.enrolledPods.set(this.cache.enrolled().length);
  }

  /**
   * The pod as the config source knows it. Kubelet creates the sandbox after the API server has the
   * pod, but the agent's view may lag: wait a little (rescanning the manifests in local mode) before
   * failing retryably, as upstream's `getPodWithRetry`.
   */
  async #lookupPod(req: CmdAddRequest, signal: AbortSignal): Promise<Pod> {
    const deadline = Date.now() + POD_LOOKUP_WAIT_MS;
    for (;;) {
      const pod = this.store.get('Pod', req.podNamespace, req.podName);
      if (
        pod !== undefined &&
        (req.podUid === undefined || pod.metadata.uid === undefined || pod.metadata.uid === req.podUid)
      ) {
        return pod;
      }
      if (Date.now() >= deadline || signal.aborted) {
        this.metrics.enrollmentFailures.inc({ reason: 'lookup' });
        throw new AgentError(
          'POD_UNKNOWN',
          pod === undefined
            ? `pod ${req.podNamespace}/${req.podName} is not known to the agent yet`
            : `pod ${req.podNamespace}/${req.podName} is known with uid ${pod.metadata.uid}, not ${req.podUid}`,
          { retryable: true },
        );
      }
      if (this.#localSource)
        await this.#localSource
          .rescan()
          .catch((err: unknown) => this.#log.warn({ err: errorMessage(err) }, 'rescan failed'));
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
