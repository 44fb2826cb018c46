import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { LocalSource } from '@ambient/common/config/local-source';
import { ConfigStore } from '@ambient/common/config/store';
import { errorMessage } from '@ambient/common/errors';
import { loadKubeConfig } from '@ambient/common/kube/client';
import { KubeSource } from '@ambient/common/kube/kube-source';
import { type Component, Lifecycle, Readiness, type StopContext } from '@ambient/common/lifecycle';
import { type Logger, type Logging, processLoggingInstance } from '@ambient/common/log';
import { createMetricsRegistry } from '@ambient/common/metrics';
import { ServerCredentials } from '@grpc/grpc-js';
import { AuthenticationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { AdminServer } from './admin.ts';
import { AmbientIndex } from './ambient/index.ts';
import { CertificateAuthority } from './ca/authority.ts';
import { NodeAuthorizer } from './ca/node-authorizer.ts';
import {
  ConfigMapRootDistributor,
  FileRootDistributor,
  type RootDistributor,
} from './ca/root-distribution.ts';
import { DirectoryRootStore, type RootStore, SecretRootStore } from './ca/root-store.ts';
import { CaServer } from './ca/server.ts';
import type { Config } from './config.ts';
import { MonitoringServer } from './metrics.ts';
import { type Authenticator, AuthenticatorChain } from './security/authenticate.ts';
import { KubeTokenAuthenticator } from './security/kube-token.ts';
import { PeerCertificateAuthenticator } from './security/peer-certificate.ts';
import { ServingCertificateProvider } from './security/serving-credentials.ts';
import { TokenFileAuthenticator } from './security/token-file.ts';
import { type XdsListenerOptions, XdsServer } from './xds/server.ts';

/** The version in istiod's package.json (`istiod version`, `istio_build`, `control_plane.identifier`). */
export function istiodVersion(): string {
  // src/app.ts and dist/app.js both sit one level below the package root.
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version?: string;
  };
  return pkg.version ?? 'unknown';
}

/** The named tasks `/ready` waits for (reference architecture §5.8). */
export const READINESS_TASKS = {
  configSynced: 'config source synced',
  indexBuilt: 'ambient index built',
  xdsListening: 'xds server listening',
  /** Registered when a stop begins, so the probe fails while draining. */
  shuttingDown: 'shutting down',
} as const;

/** What a caller may supply instead of the defaults (tests, benchmarks). */
export interface IstiodDeps {
  /** Where every scope logs; the process-wide Logging by default. */
  readonly logging?: Logging;
  /** The registry every component registers on; a new one (with process metrics) by default. */
  readonly registry?: Registry;
  /** Kubernetes mode: a ready KubeConfig instead of `KUBECONFIG` or the in-cluster account. */
  readonly kubeConfig?: KubeConfig;
}

/** The ports istiod listens on, as bound (the real port where 0 was configured). */
export interface IstiodPorts {
  readonly xds: number;
  readonly xdsPlaintext: number | undefined;
  readonly monitoring: number;
  readonly debug: number;
}

/** A component made of a start and a stop function (the gates and small pieces of app.ts). */
function component(
  name: string,
  start: () => Promise<void> | void,
  stop: (ctx: StopContext) => Promise<void> | void = () => {},
): Component {
  return { name, start, stop };
}

/**
 * The istiod binary's wiring: it builds the parts and orders their lifecycle, and holds no logic
 * of its own. {@link Istiod.create} builds, in this order:
 *
 * 1. logging, the Prometheus registry (process metrics included) and the readiness tasks;
 * 2. the ConfigStore and its source: a LocalSource on `LOCAL_MANIFESTS_DIR`, or a KubeSource
 *    (list/watch through `KUBECONFIG` or the in-cluster account);
 * 3. the AmbientIndex following the store (Workloads, Services, Authorizations for ztunnel);
 * 4. the CertificateAuthority: plugged-in from `ROOT_CA_DIR` when `ca-key.pem` is there, else the
 *    self-signed root kept in `CA_ROOT_DIR` (local) or Secret `istio-ca-secret` (Kubernetes);
 * 5. the ServingCertificateProvider: istiod's own TLS certificate for `istiod.<ns>.svc`,
 *    `istiod.<ns>.svc.<domain suffix>` and `localhost` (and 127.0.0.1 in local mode), renewed at
 *    half-life;
 * 6. the authenticator chain: a mesh client certificate first, then a bearer token checked by
 *    TokenReview (Kubernetes) or looked up in `LOCAL_TOKEN_FILE` (local);
 * 7. the NodeAuthorizer deciding `ImpersonatedIdentity` from the pods in the store, and the
 *    CaServer;
 * 8. the XdsServer: one grpc-js server on `XDS_PORT` (TLS, authenticated) carrying both ADS and
 *    IstioCertificateService, plus the optional plaintext ADS listener;
 * 9. the root distributor: ConfigMap `istio-ca-root-cert` in every namespace (Kubernetes) or
 *    `ROOT_CERT_FILE` (local);
 * 10. the debug (`/ready`, `/debug/*`, `/logging`) and monitoring (`/metrics`) HTTP servers.
 *
 * {@link Istiod.start} then starts, in order: the debug and monitoring servers (so the probe
 * answers 503 with what is pending while the rest starts), the serving certificate, the config
 * source, a gate waiting for the source's first full sync (then the index holds the whole mesh),
 * the root distributor, the xDS server (proxies connect only to complete state), and the token
 * file watcher. {@link Istiod.stop} stops in reverse: `/ready` turns 503, the xDS server drains
 * (pushes continue until the proxies leave or the deadline ends their streams), then the rest.
 */
export class Istiod {
  readonly config: Config;
  readonly logging: Logging;
  readonly registry: Registry;
  readonly readiness = new Readiness();
  readonly store: ConfigStore;
  readonly index: AmbientIndex;
  readonly authority: CertificateAuthority;
  readonly xds: XdsServer;
  readonly #log: Logger;
  readonly #lifecycle: Lifecycle;
  readonly #admin: AdminServer;
  readonly #monitoring: MonitoringServer;
  readonly #source: LocalSource | KubeSource;
  readonly #done: Readonly<Record<'configSynced' | 'indexBuilt' | 'xdsListening', () => void>>;

  private constructor(parts: {
    config: Config;
    logging: Logging;
    registry: Registry;
    source: LocalSource | KubeSource;
    index: AmbientIndex;
    authority: CertificateAuthority;
    serving: ServingCertificateProvider;
    tokenFile: TokenFileAuthenticator | undefined;
    nodeAuthorizer: NodeAuthorizer;
    xds: XdsServer;
    rootDistributor: RootDistributor;
    store: ConfigStore;
  }) {
    const { config, logging } = parts;
    this.config = config;
    this.logging = logging;
    this.registry = parts.registry;
    this.store = parts.store;
    this.index = parts.index;
    this.authority = parts.authority;
    this.xds = parts.xds;
    this.#source = parts.source;
    this.#log = logging.logger('istiod');
    this.#lifecycle = new Lifecycle({ log: this.#log });
    this.#done = {
      configSynced: this.readiness.register(READINESS_TASKS.configSynced),
      indexBuilt: this.readiness.register(READINESS_TASKS.indexBuilt),
      xdsListening: this.readiness.register(READINESS_TASKS.xdsListening),
    };
    const source = parts.source;
    const serving = parts.serving;
    this.#admin = new AdminServer({
      listen: config.debug,
      debugEndpoints: config.debug.endpoints,
      readiness: this.readiness,
      logging,
      log: logging.logger('admin'),
      views: {
        connections: () => this.xds.debugState(),
        ambient: () => this.index.toJSON(),
        rejected: () => this.store.rejections(),
        sources: () => ({
          source: config.configSource,
          healthy: source.healthy,
          status: source.status(),
        }),
        ca: () => ({
          mode: this.authority.mode,
          trustDomain: this.authority.trustDomain,
          rootPem: this.authority.rootPem(),
          servingCertificateNotAfter: serving.current?.notAfter.toISOString(),
        }),
      },
    });
    this.#monitoring = new MonitoringServer({
      listen: config.monitoring,
      registry: this.registry,
      log: logging.logger('admin'),
    });

    this.#lifecycle
      .add(this.#admin)
      .add(this.#monitoring)
      .add(serving)
      .add(source)
      .add(
        component(
          'config-sync-gate',
          async () => {
            await source.synced();
            this.#done.configSynced();
            this.#done.indexBuilt();
            this.#log.info(
              {
                workloadsAndServices: count(this.index.names(this.index.typeUrls()[0] ?? '')),
                authorizations: count(this.index.names(this.index.typeUrls()[1] ?? '')),
                rejected: this.store.rejections().length,
              },
              'configuration synced; ambient index built',
            );
          },
          () => {
            parts.nodeAuthorizer.close();
            this.index.close();
          },
        ),
      )
      .add(parts.rootDistributor)
      .add(
        component(
          'xds-server',
          async () => {
            await this.xds.start();
            this.#done.xdsListening();
          },
          (ctx) => this.xds.stop(ctx),
        ),
      );
    const tokenFile = parts.tokenFile;
    if (tokenFile && config.local.tokenFile) {
      this.#lifecycle.add(tokenFileWatcher(config.local.tokenFile, tokenFile, logging.logger('security')));
    }
    this.#lifecycle.add(
      component(
        'readiness',
        () => {},
        () => {
          this.readiness.register(READINESS_TASKS.shuttingDown);
        },
      ),
    );
  }

  /** Builds every part (steps 1–10 above); loads or creates the CA root. Nothing listens yet. */
  static async create(config: Config, deps: IstiodDeps = {}): Promise<Istiod> {
    // 1. Logging, metrics.
    const logging = deps.logging ?? processLoggingInstance();
    const log = logging.logger('istiod');
    const registry = deps.registry ?? createMetricsRegistry({ component: 'pilot', version: istiodVersion() });
    const local = config.configSource === 'local';

    // 2. The store and its source.
    const store = new ConfigStore();
    let kubeConfig: KubeConfig | undefined;
    let source: LocalSource | KubeSource;
    if (local) {
      source = new LocalSource({
        dir: config.local.manifestsDir,
        store,
        registry,
        log: logging.logger('config'),
        debounceMs: config.local.manifestsDebounceMs,
        rescanIntervalMs: config.local.manifestsRescanIntervalMs,
      });
    } else {
      kubeConfig = deps.kubeConfig ?? loadKubeConfig({ kubeconfigPath: config.kubeconfigPath });
      source = new KubeSource({ store, registry, kubeConfig, log: logging.logger('kube') });
    }

    // 3. The ambient index.
    const index = new AmbientIndex(store, config.mesh, logging.logger('ambient'));

    // 4. The CA.
    const caLog = logging.logger('ca');
    const rootStore: RootStore = kubeConfig
      ? new SecretRootStore(kubeConfig.makeApiClient(CoreV1Api), { namespace: config.podNamespace })
      : new DirectoryRootStore(config.local.caRootDir);
    const authority = await CertificateAuthority.load({
      trustDomain: config.mesh.trustDomain,
      defaultTtlSeconds: config.ca.defaultTtlSeconds,
      maxTtlSeconds: config.ca.maxTtlSeconds,
      pluggedCertsDir: config.ca.pluggedCertsDir,
      rootStore,
      log: caLog,
    });

    // 5. istiod's serving certificate.
    const ns = config.podNamespace;
    const serving = new ServingCertificateProvider({
      authority,
      dnsNames: [`istiod.${ns}.svc`, `istiod.${ns}.svc.${config.mesh.domainSuffix}`, 'localhost'],
      ...(local ? { ipAddresses: ['127.0.0.1'] } : {}),
      log: logging.logger('security'),
    });

    // 6. Authenticators: certificate first (no network call), then the token.
    const securityLog = logging.logger('security');
    const authenticators: Authenticator[] = [
      new PeerCertificateAuthenticator({ trustDomain: config.mesh.trustDomain }),
    ];
    let tokenFile: TokenFileAuthenticator | undefined;
    if (kubeConfig) {
      authenticators.push(
        new KubeTokenAuthenticator({
          api: kubeConfig.makeApiClient(AuthenticationV1Api),
          trustDomain: config.mesh.trustDomain,
          audiences: config.ca.tokenAudiences,
          clusterId: config.mesh.clusterId,
          log: securityLog,
        }),
      );
    } else if (config.local.tokenFile !== undefined) {
      tokenFile = await TokenFileAuthenticator.load(config.local.tokenFile, {
        trustDomain: config.mesh.trustDomain,
      });
      authenticators.push(tokenFile);
      log.info({ path: config.local.tokenFile, tokens: tokenFile.size }, 'token file loaded');
    }
    const authenticator = new AuthenticatorChain(authenticators);

    // 7. Node authorization and the CA service.
    const nodeAuthorizer = new NodeAuthorizer({
      store,
      trustDomain: config.mesh.trustDomain,
      trustedNodeAccounts: config.ca.trustedNodeAccounts,
    });
    const caServer = new CaServer({
      authority,
      authenticator,
      impersonation: nodeAuthorizer,
      registry,
      log: caLog,
    });

    // 8. xDS (and the CA on the same TLS port).
    const listeners: XdsListenerOptions[] = [
      {
        name: 'xds-tls',
        host: config.xds.bindAddress,
        port: config.xds.port,
        credentials: serving.credentials(),
        authenticate: true,
        register: (server) => caServer.addTo(server),
      },
    ];
    if (config.xds.plaintextPort !== undefined) {
      listeners.push({
        name: 'xds-plaintext',
        host: config.xds.bindAddress,
        port: config.xds.plaintextPort,
        credentials: ServerCredentials.createInsecure(),
        authenticate: false,
      });
    }
    const xds = new XdsServer({
      source: index,
      listeners,
      authenticator,
      identityCheck: config.xds.identityCheck,
      registry,
      log: logging.logger('xds'),
      debounce: config.xds.debounce,
      controlPlaneId: JSON.stringify({
        Component: 'istiod',
        ID: config.podName,
        Info: { version: istiodVersion() },
      }),
    });

    // 9. Root distribution.
    const rootDistributor: RootDistributor = kubeConfig
      ? new ConfigMapRootDistributor({
          api: kubeConfig.makeApiClient(CoreV1Api),
          store,
          rootPem: authority.rootPem(),
          log: caLog,
        })
      : new FileRootDistributor({
          path: config.local.rootCertFile,
          rootPem: authority.rootPem(),
          log: caLog,
        });

    // 10. The HTTP servers are built by the constructor, which also orders the lifecycle.
    return new Istiod({
      config,
      logging,
      registry,
      source,
      index,
      authority,
      serving,
      tokenFile,
      nodeAuthorizer,
      xds,
      rootDistributor,
      store,
    });
  }

  /** Starts every component in order; on a failure stops what started and rejects (LifecycleError). */
  async start(): Promise<void> {
    const c = this.config;
    this.#log.info(
      {
        version: istiodVersion(),
        configSource: c.configSource,
        manifestsDir: c.configSource === 'local' ? c.local.manifestsDir : undefined,
        trustDomain: c.mesh.trustDomain,
        clusterId: c.mesh.clusterId,
        caMode: this.authority.mode,
        config: c,
      },
      'istiod starting',
    );
    await this.#lifecycle.start();
    this.#log.info({ ports: this.ports() }, 'istiod ready');
  }

  /** Stops in reverse order, draining xDS for up to `deadlineMs` (`TERMINATION_DRAIN_DURATION`). */
  stop(options: { mode?: 'graceful' | 'immediate'; deadlineMs?: number } = {}): Promise<void> {
    return this.#lifecycle.stop({
      mode: options.mode ?? 'graceful',
      deadlineMs: options.deadlineMs ?? this.config.drainDeadlineMs,
    });
  }

  /** The lifecycle, for `stopOnSignals`. */
  get lifecycle(): Lifecycle {
    return this.#lifecycle;
  }

  /** The bound ports; throws a NOT_STARTED error before start. */
  ports(): IstiodPorts {
    const addresses = this.xds.addresses();
    const tls = addresses.find((a) => a.authenticate);
    const plaintext = addresses.find((a) => !a.authenticate);
    return {
      xds: tls?.port ?? this.config.xds.port,
      xdsPlaintext: plaintext?.port,
      monitoring: this.#monitoring.port,
      debug: this.#admin.port,
    };
  }
}

function count(names: Iterable<string>): number {
  let n = 0;
  for (const _ of names) n++;
  return n;
}

/**
 * Re-reads the token file when it changes, so a token added for a new node works without a
 * restart. A malformed file is refused whole and the previous tokens stay in use. Polled (every
 * 2 s) rather than watched: editors and ConfigMap volumes replace the file, which inotify on the
 * old inode would miss.
 */
function tokenFileWatcher(path: string, tokens: TokenFileAuthenticator, log: Logger): Component {
  const onChange = (): void => {
    tokens.reload().then(
      () => log.info({ path, tokens: tokens.size }, 'token file reloaded'),
      (err: unknown) =>
        log.error({ path, err: errorMessage(err) }, 'token file reload failed; keeping the previous tokens'),
    );
  };
  return component(
    'token-file-watcher',
    () => {
      watchFile(path, { interval: 2000, persistent: false }, onChange);
    },
    () => {
      unwatchFile(path, onChange);
    },
  );
}
