import { readFileSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import { CaClient } from '@ambient/common/identity/ca-client';
import { type CertificateFetcher, CertManager } from '@ambient/common/identity/cert-manager';
import { type Component, Lifecycle, Readiness, type StopContext } from '@ambient/common/lifecycle';
import { type Logger, type Logging, processLoggingInstance } from '@ambient/common/log';
import { createMetricsRegistry } from '@ambient/common/metrics';
import type { ProxyState } from '@ambient/common/model';
import { ZdsClient } from '@ambient/common/zds';
import { openNetns } from '@ambient/native';
import type { Registry } from 'prom-client';
import { AdminServer, StatsServer } from './admin.ts';
import { type Config, redactedConfig } from './config.ts';
import { controlPlaneOptions } from './control-plane.ts';
import { ZtunnelError } from './errors.ts';
import { CertPrefetcher } from './identity/cert-prefetcher.ts';
import { registerEbpfInbound } from './inpod/ebpf-inbound.ts';
import type { CreateManagedProxy } from './inpod/workload-manager.ts';
import { WorkloadManager } from './inpod/workload-manager.ts';
import {
  type CertificateProvider,
  ConnectionManager,
  DEFAULT_INPOD_MARK,
  InpodSocketFactory,
  type ProxyConfig,
  ProxyFactory,
  ProxyMetrics,
  resolveProxyConfig,
} from './proxy/index.ts';
import { READINESS_TASKS, ReadinessServer } from './readiness.ts';
import { StateManager } from './state.ts';

/** The version in ztunnel's package.json (`ztunnel version`, `istio_build`, `/config_dump`). */
export function ztunnelVersion(): string {
  // src/app.ts and dist/app.js both sit one level below the package root.
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version?: string;
  };
  return pkg.version ?? 'unknown';
}

/** What a caller may supply instead of the defaults (tests, benchmarks). */
export interface ZtunnelDeps {
  /** Where every scope logs; the process-wide Logging by default. */
  readonly logging?: Logging;
  /** The registry every component registers on; a new one (with process metrics) by default. */
  readonly registry?: Registry;
  /**
   * Issues workload certificates instead of a CaClient to `CA_ADDRESS` (an in-process test CA
   * from `@ambient/common/testing`, for local-config runs without istiod).
   */
  readonly certificateFetcher?: CertificateFetcher;
  /** Workload manager timing (the retry period of a pod whose proxy failed to start); upstream's by default. */
  readonly inpod?: { readonly retryIntervalMs?: number };
}

/** The ports ztunnel's own servers listen on, as bound (the real port where 0 was configured). */
export interface ZtunnelPorts {
  readonly admin: number;
  readonly stats: number;
  readonly readiness: number;
}

const MiB = 1024 * 1024;

/** A component made of a start and a stop function (the small pieces of app.ts). */
function component(
  name: string,
  start: () => Promise<void> | void,
  stop: (ctx: StopContext) => Promise<void> | void = () => {},
): Component {
  return { name, start, stop };
}

/** ztunnel's environment settings mapped onto the data path's (HBONE windows, pool, drain). */
function proxyConfig(config: Config): ProxyConfig {
  const h = config.hbone;
  return resolveProxyConfig({
    preserveSource: config.enableOriginalSource ?? true,
    hbone: {
      streamWindowSize: h.windowSize,
      connectionWindowSize: h.connectionWindowSize,
      maxFrameSize: h.frameSize,
      // Both must exceed the connection window, or two busy peers can stall (settings.ts).
      sessionWriteBudget: Math.max(32 * MiB, 2 * h.connectionWindowSize),
      maxSessionMemoryMb: Math.max(64, Math.ceil((4 * h.connectionWindowSize) / MiB)),
    },
    poolMaxStreamsPerConnection: h.poolMaxStreamsPerConnection,
    poolIdleTimeoutMs: h.poolUnusedReleaseTimeoutMs,
    drainDeadlineMs: config.terminationDeadlineMs,
  });
}

/**
 * The ztunnel binary's wiring: it builds the parts and orders their lifecycle, and holds no logic
 * of its own. {@link Ztunnel.create} builds, in this order:
 *
 * 1. logging, the Prometheus registry (process metrics and `istio_build`) and the readiness tasks;
 * 2. the StateManager: ProxyState and its one writer, the ProxyStateUpdater, fed by the XdsClient
 *    (Address and Authorization handlers; rejects are NACKed) and/or the local-config loader;
 * 3. certificates: a CaClient to `CA_ADDRESS` (impersonating the node's pods in shared mode) or the
 *    injected fetcher, behind the CertManager; the CertPrefetcher fetches for local workloads as
 *    they appear and forgets an identity when its last local workload leaves;
 * 4. the data path's shared parts: ProxyMetrics, the access logger, the ConnectionManager
 *    (re-checking live connections on policy and workload changes) and the ProxyFactory;
 * 5. the WorkloadManager: one WorkloadProxy per pod, its sockets made in the pod's netns (from
 *    ZDS) with the packet mark; and the ZdsClient driving it (shared mode), or one proxy in
 *    ztunnel's own netns for `PROXY_WORKLOAD_INFO` (dedicated mode);
 * 6. the admin (localhost:15000), stats (15020) and readiness (15021) servers.
 *
 * {@link Ztunnel.start} starts, in order: the readiness, stats and admin servers (so the probe
 * answers 503 with what is pending while the rest starts), the cert manager, the state manager
 * (local config, then xDS), the connection manager's watch, the workload manager, the ZDS client
 * (or the dedicated proxy). {@link Ztunnel.stop} runs in reverse: readiness turns 503, ZDS
 * disconnects, every pod proxy closes its listeners at once, sends GOAWAY to HBONE peers and
 * drains its connections until the deadline (`CONNECTION_TERMINATION_DEADLINE`), then closes what
 * is left; then xDS, certificates and the servers stop.
 */
export class Ztunnel {
  readonly config: Config;
  readonly logging: Logging;
  readonly registry: Registry;
  readonly readiness = new Readiness();
  readonly stateManager: StateManager;
  /** Undefined when neither `CA_ADDRESS` nor an injected fetcher provides certificates. */
  readonly certManager: CertManager | undefined;
  readonly connectionManager: ConnectionManager;
  readonly proxyFactory: ProxyFactory;
  readonly workloadManager: WorkloadManager;
  /** Undefined in dedicated mode. */
  readonly zds: ZdsClient | undefined;
  /** Resolves once a stop (signal, `/quitquitquit` or {@link stop}) has finished. */
  readonly stopped: Promise<void>;
  readonly #log: Logger;
  readonly #lifecycle: Lifecycle;
  readonly #admin: AdminServer;
  readonly #stats: StatsServer;
  readonly #readinessServer: ReadinessServer;

  private constructor(config: Config, deps: ZtunnelDeps) {
    // 1. Logging, metrics, readiness.
    this.config = config;
    const logging = deps.logging ?? processLoggingInstance();
    this.logging = logging;
    this.#log = logging.logger('ztunnel');
    this.registry =
      deps.registry ?? createMetricsRegistry({ component: 'ztunnel', version: ztunnelVersion() });
    this.#lifecycle = new Lifecycle({ log: this.#log });
    let markStopped: () => void = () => {};
    this.stopped = new Promise((resolve) => {
      markStopped = resolve;
    });

    // 2. State: ProxyState, its updater, xDS and/or local config.
    this.stateManager = new StateManager({
      config,
      logging,
      readiness: this.readiness,
      registry: this.registry,
    });
    const { state, updater } = this.stateManager;

    // 3. Certificates.
    const caLog = logging.logger('ca');
    let caClient: CaClient | undefined;
    let fetcher = deps.certificateFetcher;
    if (!fetcher && config.ca) {
      caClient = new CaClient({
        ...controlPlaneOptions(config, config.ca),
        ttlSeconds: Math.round(config.secretTtlMs / 1000),
        impersonate: config.proxyMode === 'shared',
        log: caLog,
      });
      fetcher = caClient;
    }
    this.certManager = fetcher ? new CertManager({ client: fetcher, log: caLog }) : undefined;
    const certManager = this.certManager;
    const prefetcher = certManager
      ? new CertPrefetcher({
          state,
          updater,
          certificates: certManager,
          proxyMode: config.proxyMode,
          log: caLog,
        })
      : undefined;
    const certificates: CertificateProvider = certManager
      ? { fetch: (identity) => certManager.fetch(identity) }
      : {
          fetch: () =>
            Promise.reject(
              new ZtunnelError(
                'CONTROL_PLANE_UNAVAILABLE',
                'no workload certificates: CA_ADDRESS is empty, so only plaintext traffic is possible',
              ),
            ),
        };

    // 4. The data path's shared parts.
    if (config.authzPolicyInfoLogging) logging.setLevels('authorization:debug');
    this.connectionManager = new ConnectionManager({ state, log: logging.logger('authorization') });
    this.proxyFactory = new ProxyFactory({
      state,
      certificates,
      metrics: new ProxyMetrics(this.registry),
      accessLog: logging.logger('access'),
      config: proxyConfig(config),
      connectionManager: this.connectionManager,
      log: logging.logger('proxy'),
    });

    // 5. The in-pod workload manager and what drives it.
    const mark = config.packetMark ?? DEFAULT_INPOD_MARK;
    const transparent =
      config.enableOriginalSource === undefined
        ? 'best-effort'
        : config.enableOriginalSource
          ? 'required'
          : 'off';
    const inpodLog = logging.logger('inpod');
    const createProxy: CreateManagedProxy = ({ uid, info, netnsFd }) => {
      const proxy = this.proxyFactory.create(
        { uid, info },
        new InpodSocketFactory(netnsFd, mark, { transparent }),
      );
      return {
        start: async () => {
          await proxy.start();
          registerEbpfInbound(config.inpod.ebpfPinRoot, uid, proxy.inboundPlaintextListener, inpodLog);
        },
        // An agent that restarted may have rebuilt the pod's eBPF objects, with an empty map.
        readd: () => {
          registerEbpfInbound(config.inpod.ebpfPinRoot, uid, proxy.inboundPlaintextListener, inpodLog);
        },
        stop: (ctx) => proxy.stop(ctx),
        connections: () => proxy.connections(),
      };
    };
    this.workloadManager = new WorkloadManager({
      state,
      createProxy,
      readiness: this.readiness,
      registry: this.registry,
      log: inpodLog,
      ...deps.inpod,
    });
    const manager = this.workloadManager;
    state.setDumpHooks({
      certificates: () => certManager?.toJSON() ?? [],
      workloadState: () => manager.dump(),
    });
    let driver: Component;
    if (config.proxyMode === 'shared') {
      const zds = new ZdsClient({
        path: config.inpod.udsPath,
        handler: manager,
        readiness: this.readiness,
        log: logging.logger('inpod'),
      });
      zds.on('connect', () => manager.connectionReset());
      this.zds = zds;
      driver = zds;
    } else {
      this.zds = undefined;
      driver = dedicatedProxy(config, manager, this.#log);
    }

    // 6. The HTTP servers.
    this.#readinessServer = new ReadinessServer({
      listen: config.readiness,
      readiness: this.readiness,
      log: logging.logger('readiness'),
    });
    this.#stats = new StatsServer({
      listen: config.stats,
      registry: this.registry,
      log: logging.logger('admin'),
    });
    this.#admin = new AdminServer({
      listen: config.admin,
      logging,
      configDump: () => this.configDump(),
      workloadState: () => manager.dump(),
      quit: () => {
        void this.stop();
      },
      log: logging.logger('admin'),
    });

    let unwatch: (() => void) | undefined;
    this.#lifecycle
      .add(component('stopped', () => {}, markStopped))
      .add(this.#readinessServer)
      .add(this.#stats)
      .add(this.#admin)
      .add(
        component(
          'certificates',
          () => {
            certManager?.start();
            prefetcher?.attach();
          },
          () => {
            prefetcher?.detach();
            certManager?.stop();
            caClient?.close();
          },
        ),
      )
      .add(this.stateManager)
      .add(
        component(
          'connection-manager',
          () => {
            unwatch = this.connectionManager.watch(updater);
          },
          () => unwatch?.(),
        ),
      )
      .add(this.workloadManager)
      .add(driver)
      .add(
        component(
          'readiness',
          () => {},
          () => {
            this.readiness.register(READINESS_TASKS.shuttingDown);
          },
        ),
      );
  }

  /** Builds every part (steps 1–6 above). Nothing connects or listens yet. */
  static create(config: Config, deps: ZtunnelDeps = {}): Ztunnel {
    return new Ztunnel(config, deps);
  }

  /** The ProxyState (what `/config_dump` shows). */
  get state(): ProxyState {
    return this.stateManager.state;
  }

  /** The lifecycle, for `stopOnSignals`. */
  get lifecycle(): Lifecycle {
    return this.#lifecycle;
  }

  /** Starts every component in order; on a failure stops what started and rejects (LifecycleError). */
  async start(): Promise<void> {
    const c = this.config;
    this.#log.info(
      {
        version: ztunnelVersion(),
        proxyMode: c.proxyMode,
        node: c.nodeName,
        xds: c.xds?.address,
        ca: c.ca?.address,
        localXds: c.localXds?.kind,
        config: redactedConfig(c),
      },
      'ztunnel starting',
    );
    // Accepted for compatibility with upstream's environment, but not implemented here.
    if (c.xds?.onDemand) this.#log.warn('XDS_ON_DEMAND is not supported; subscribing with a wildcard');
    if (!c.inpod.portReuse)
      this.#log.warn('INPOD_PORT_REUSE=false is not supported; listeners use SO_REUSEPORT');
    await this.#lifecycle.start();
    this.#log.info({ ports: this.ports(), pending: this.readiness.pending() }, 'ztunnel started');
  }

  /**
   * Stops in reverse order, draining the pods' connections for up to `deadlineMs` (default
   * `CONNECTION_TERMINATION_DEADLINE`); `immediate` closes them at once.
   */
  stop(options: { mode?: 'graceful' | 'immediate'; deadlineMs?: number } = {}): Promise<void> {
    return this.#lifecycle.stop({
      mode: options.mode ?? 'graceful',
      deadlineMs: options.deadlineMs ?? this.config.terminationDeadlineMs,
    });
  }

  /** The bound ports; throws a NOT_STARTED error before start. */
  ports(): ZtunnelPorts {
    return { admin: this.#admin.port, stats: this.#stats.port, readiness: this.#readinessServer.port };
  }

  /**
   * `/config_dump`: the ProxyState in istioctl's shape (`workloads`, `services`, `policies`,
   * `certificates`, `workloadState`), plus ztunnel's version and configuration as upstream adds.
   */
  configDump(): Record<string, unknown> {
    return {
      ...this.stateManager.state.toJSON(),
      version: { version: ztunnelVersion(), runtime: `node ${process.versions.node}` },
      config: redactedConfig(this.config),
    };
  }
}

/**
 * Dedicated mode (`PROXY_MODE=dedicated`): one proxy for `PROXY_WORKLOAD_INFO`, in ztunnel's own
 * network namespace, through the same workload manager (which waits for the workload and retries).
 */
function dedicatedProxy(config: Config, manager: WorkloadManager, log: Logger): Component {
  const info = config.proxyWorkloadInfo;
  const uid = info ? `dedicated/${info.namespace}/${info.name}` : 'dedicated';
  return component(
    'dedicated-proxy',
    () => {
      if (!info) return;
      const fd = openNetns('/proc/self/ns/net');
      manager.onAdd(uid, info, fd).catch((err: unknown) => {
        log.warn({ err: errorMessage(err) }, 'dedicated proxy not started yet; retrying');
      });
    },
    // Nothing to do: the workload manager's own stop drains the proxy gracefully.
  );
}
