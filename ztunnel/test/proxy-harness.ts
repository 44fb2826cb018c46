import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { Writable } from 'node:stream';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { connectHbone, type HboneClientConnection } from '@ambient/common/hbone/client';
import { formatIdentity, type Identity, makeIdentity } from '@ambient/common/identity';
import { Logging } from '@ambient/common/log';
import { normalizeIp, ProxyState, ProxyStateUpdater, parseIp, type SocketAddr } from '@ambient/common/model';
import { TestCa, tlsCredentials } from '@ambient/common/testing/pki';
import type { TlsCredentials } from '@ambient/common/tls/secure-context';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { Registry } from 'prom-client';
import {
  type CertificateProvider,
  ConnectionManager,
  LocalSocketFactory,
  type ProxyConfigOverrides,
  ProxyFactory,
  ProxyMetrics,
  resolveProxyConfig,
  type SocketFactory,
  type WorkloadProxy,
} from '../src/proxy/index.ts';

/*
 * An in-process mesh for the proxy's "direct" tests: a ProxyState filled through the real
 * ProxyStateUpdater from WDS protobufs, certificates from a test CA, and one WorkloadProxy per
 * pod on its own loopback IP (LocalSocketFactory). Loopback has no NAT, so the harness plays the
 * part of the pod's REDIRECT rules: a test client binds a known source port and registers where
 * it meant to go; the proxy's original-destination lookup reads that back.
 */

export const NODE = 'node-a';
export const TRUST_DOMAIN = 'cluster.local';

/** A pod to put in WDS. */
export interface PodSpec {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Host part: the pod's IP is `127.<subnet>.<pid>.<host>`. */
  readonly host: number;
  /** An explicit IP instead (pods in network namespaces). */
  readonly ip?: string;
  readonly protocol?: 'HBONE' | 'TCP';
  readonly workloadName?: string;
  readonly canonicalName?: string;
  readonly canonicalRevision?: string;
  readonly node?: string;
  /** `ns/hostname` → [[servicePort, targetPort], …]. */
  readonly services?: Readonly<Record<string, readonly (readonly [number, number])[]>>;
  readonly authorizationPolicies?: readonly string[];
  /** A sandwiched waypoint: the final hop gets a PROXY header, on `port` when set. */
  readonly applicationTunnel?: { readonly proxy: boolean; readonly port?: number };
}

export interface Pod {
  readonly spec: PodSpec;
  readonly uid: string;
  readonly ip: string;
  readonly identity: Identity;
}

/** Certificates for any identity, issued on first use by a test CA and cached. */
export class TestCertificates implements CertificateProvider {
  readonly ca: TestCa;
  readonly #issued = new Map<string, Promise<TlsCredentials>>();
  fetches = 0;

  constructor(ca: TestCa) {
    this.ca = ca;
  }

  /** Issues a fresh certificate for `identity` (rotation); later fetches return it. */
  rotate(identity: Identity): Promise<TlsCredentials> {
    const creds = this.ca.issue({ identity, freshKey: true }).then(tlsCredentials);
    this.#issued.set(formatIdentity(identity), creds);
    return creds;
  }

  fetch(identity: Identity): Promise<TlsCredentials> {
    this.fetches++;
    const key = formatIdentity(identity);
    let creds = this.#issued.get(key);
    if (creds === undefined) {
      creds = this.ca.issue({ identity }).then(tlsCredentials);
      this.#issued.set(key, creds);
    }
    return creds;
  }
}

/** A TCP app listening on a pod IP. */
export interface TestApp {
  readonly server: net.Server;
  readonly address: SocketAddr;
  /** Peer addresses of every connection the app accepted. */
  readonly peers: SocketAddr[];
  close(): Promise<void>;
}

export type AppHandler = (socket: net.Socket) => void;

/** Echoes every byte and ends its side when the client ends (half-close). */
export const echo: AppHandler = (socket) => {
  socket.on('error', () => {});
  socket.pipe(socket);
};

export interface LogLine extends Record<string, unknown> {
  readonly level: string;
  readonly msg: string;
  readonly scope: string;
}

let portCounter = 20_000 + ((process.pid * 7919) % 30_000);

// 127.<subnet>.<pid-derived>.<host>: test files run in parallel processes; binding listeners
// without SO_REUSEPORT makes an overlap fail loudly instead of splitting connections.
function pidOctet(): number {
  return (process.pid % 250) + 1;
}

export interface TestMeshOptions {
  /** Second octet of every IP this mesh uses; one per test file. */
  readonly subnet: number;
  readonly config?: ProxyConfigOverrides;
  readonly logFormat?: 'json' | 'text';
  readonly logLevels?: string;
}

export class TestMesh implements AsyncDisposable {
  readonly subnet: number;
  readonly state: ProxyState;
  readonly updater: ProxyStateUpdater;
  readonly registry = new Registry();
  readonly metrics: ProxyMetrics;
  readonly connectionManager: ConnectionManager;
  readonly certificates: TestCertificates;
  readonly factory: ProxyFactory;
  readonly logging: Logging;
  /** Every log line, parsed (JSON format) or raw (text format, under `raw`). */
  readonly lines: LogLine[] = [];
  readonly #redirects = new Map<string, SocketAddr>();
  readonly #proxies: WorkloadProxy[] = [];
  readonly #apps: TestApp[] = [];
  readonly #sockets = new Set<net.Socket>();
  readonly #unwatch: () => void;

  private constructor(options: TestMeshOptions, ca: TestCa) {
    this.subnet = options.subnet;
    this.state = new ProxyState({ localNode: NODE });
    const capture = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line === '') continue;
          if (options.logFormat === 'text') {
            const [, level, scope, msg] = line.split('\t');
            this.lines.push({ level: level ?? '', scope: scope ?? '', msg: msg ?? '', raw: line });
          } else {
            this.lines.push(JSON.parse(line) as LogLine);
          }
        }
        cb();
      },
    });
    this.logging = new Logging({
      format: options.logFormat ?? 'json',
      destination: capture,
      levels: options.logLevels ?? 'info',
    });
    this.updater = new ProxyStateUpdater(this.state, { log: this.logging.logger('xds') });
    this.metrics = new ProxyMetrics(this.registry);
    this.connectionManager = new ConnectionManager({ state: this.state, log: this.logging.logger('proxy') });
    this.#unwatch = this.connectionManager.watch(this.updater);
    this.certificates = new TestCertificates(ca);
    this.factory = new ProxyFactory({
      state: this.state,
      certificates: this.certificates,
      metrics: this.metrics,
      accessLog: this.logging.logger('access'),
      config: resolveProxyConfig(options.config),
      connectionManager: this.connectionManager,
      log: this.logging.logger('proxy'),
    });
  }

  static async create(options: TestMeshOptions): Promise<TestMesh> {
    return new TestMesh(options, await TestCa.create());
  }

  ip(host: number): string {
    return `127.${this.subnet}.${pidOctet()}.${host}`;
  }

  /** Puts (or replaces) a pod in WDS. */
  addPod(spec: PodSpec): Pod {
    const ip = spec.ip ?? this.ip(spec.host);
    const uid = `Kubernetes//Pod/${spec.namespace}/${spec.name}`;
    const services: Record<string, MessageInitShape<typeof wl.PortListSchema>> = {};
    for (const [key, ports] of Object.entries(spec.services ?? {})) {
      services[key] = { ports: ports.map(([servicePort, targetPort]) => ({ servicePort, targetPort })) };
    }
    const workload = create(wl.WorkloadSchema, {
      uid,
      name: spec.name,
      namespace: spec.namespace,
      serviceAccount: spec.serviceAccount,
      addresses: [parseIp(ip) as Uint8Array],
      tunnelProtocol: spec.protocol === 'TCP' ? wl.TunnelProtocol.NONE : wl.TunnelProtocol.HBONE,
      node: spec.node ?? NODE,
      workloadName: spec.workloadName ?? spec.name,
      canonicalName: spec.canonicalName ?? spec.name,
      canonicalRevision: spec.canonicalRevision ?? 'v1',
      services,
      authorizationPolicies: [...(spec.authorizationPolicies ?? [])],
      ...(spec.applicationTunnel === undefined
        ? {}
        : {
            applicationTunnel: {
              protocol: spec.applicationTunnel.proxy
                ? wl.ApplicationTunnel_Protocol.PROXY
                : wl.ApplicationTunnel_Protocol.NONE,
              port: spec.applicationTunnel.port ?? 0,
            },
          }),
    });
    const rejected = this.updater.handleAddresses(
      [{ name: uid, resource: create(wl.AddressSchema, { type: { case: 'workload', value: workload } }) }],
      [],
    );
    if (rejected.length > 0) throw new Error(`pod ${spec.name} rejected: ${rejected[0]?.reason}`);
    return {
      spec,
      uid,
      ip,
      identity: makeIdentity(TRUST_DOMAIN, spec.namespace, spec.serviceAccount),
    };
  }

  /** Puts a Service in WDS: `name.ns.svc.cluster.local` with one VIP host and port pairs. */
  addService(spec: {
    readonly name: string;
    readonly namespace: string;
    readonly vipHost: number;
    readonly ports: readonly (readonly [number, number])[];
    /** A waypoint by address (its HBONE port 15008). */
    readonly waypointIp?: string;
  }): { readonly hostname: string; readonly vip: string } {
    const hostname = `${spec.name}.${spec.namespace}.svc.cluster.local`;
    const vip = this.ip(spec.vipHost);
    const service = create(wl.ServiceSchema, {
      name: spec.name,
      namespace: spec.namespace,
      hostname,
      addresses: [{ network: '', address: parseIp(vip) as Uint8Array }],
      ports: spec.ports.map(([servicePort, targetPort]) => ({ servicePort, targetPort })),
      ...(spec.waypointIp === undefined
        ? {}
        : {
            waypoint: {
              destination: {
                case: 'address',
                value: { network: '', address: parseIp(spec.waypointIp) as Uint8Array },
              },
              hboneMtlsPort: 15008,
            },
          }),
    });
    const rejected = this.updater.handleAddresses(
      [
        {
          name: `${spec.namespace}/${hostname}`,
          resource: create(wl.AddressSchema, { type: { case: 'service', value: service } }),
        },
      ],
      [],
    );
    if (rejected.length > 0) throw new Error(`service ${spec.name} rejected: ${rejected[0]?.reason}`);
    return { hostname, vip };
  }

  /** Applies (or replaces) an Authorization; returns its key. */
  setPolicy(init: MessageInitShape<typeof sec.AuthorizationSchema>): string {
    const policy = create(sec.AuthorizationSchema, init);
    const key = `${policy.namespace}/${policy.name}`;
    const rejected = this.updater.handleAuthorizations([{ name: key, resource: policy }], []);
    if (rejected.length > 0) throw new Error(`policy ${key} rejected: ${rejected[0]?.reason}`);
    return key;
  }

  removePolicy(key: string): void {
    this.updater.handleAuthorizations([], [key]);
  }

  /** Creates and starts the proxy of `pod` on its IP. */
  startProxy(pod: Pod): Promise<WorkloadProxy> {
    return this.startProxyWith(
      pod,
      new LocalSocketFactory({
        address: pod.ip,
        reusePort: false,
        originalDestination: (socket) =>
          this.#redirects.get(`${normalizeIp(socket.remoteAddress ?? '')}:${socket.remotePort}`),
      }),
    );
  }

  /** Creates and starts the proxy of `pod` with the socket factory given. */
  async startProxyWith(pod: Pod, socketFactory: SocketFactory): Promise<WorkloadProxy> {
    const proxy = this.factory.create(
      {
        uid: pod.uid,
        info: { name: pod.spec.name, namespace: pod.spec.namespace, serviceAccount: pod.spec.serviceAccount },
      },
      socketFactory,
    );
    this.#proxies.push(proxy);
    await proxy.start();
    return proxy;
  }

  /** A TCP app on `ip:port` (every accepted peer recorded). */
  async startApp(ip: string, port: number, handler: AppHandler = echo): Promise<TestApp> {
    const peers: SocketAddr[] = [];
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      peers.push({ ip: normalizeIp(socket.remoteAddress ?? '') ?? '', port: socket.remotePort ?? 0 });
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      handler(socket);
    });
    server.listen({ host: ip, port });
    await once(server, 'listening');
    const app: TestApp = {
      server,
      address: { ip, port },
      peers,
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
        }),
    };
    this.#apps.push(app);
    return app;
  }

  /**
   * Connects from `from` as if it connected to `destination` and the pod's NAT had sent it to
   * `listenerPort` on `via` (default: the outbound listener of the same pod).
   */
  async connect(
    from: string,
    destination: SocketAddr,
    options: { readonly via?: string; readonly listenerPort?: number } = {},
  ): Promise<net.Socket> {
    const via = options.via ?? from;
    const port = options.listenerPort ?? 15001;
    for (let attempt = 0; ; attempt++) {
      portCounter = portCounter >= 60_000 ? 20_000 : portCounter + 1;
      const localPort = portCounter;
      this.#redirects.set(`${from}:${localPort}`, destination);
      const socket = net.connect({ host: via, port, localAddress: from, localPort, allowHalfOpen: true });
      try {
        await once(socket, 'connect');
        this.#sockets.add(socket);
        socket.once('close', () => this.#sockets.delete(socket));
        return socket;
      } catch (err) {
        this.#redirects.delete(`${from}:${localPort}`);
        socket.destroy();
        if ((err as { code?: unknown }).code !== 'EADDRINUSE' || attempt > 5) throw err;
      }
    }
  }

  /** Opens an HBONE connection to `pod`'s 15008 as `identity` (any identity the test CA issues). */
  async hboneClient(pod: Pod, identity: Identity, fromIp: string): Promise<HboneClientConnection> {
    return connectHbone({
      address: pod.ip,
      port: 15008,
      localAddress: fromIp,
      credentials: await this.certificates.fetch(identity),
      expectedIdentities: [pod.identity],
    });
  }

  /** Access log lines (scope `access`) with message `msg`. */
  access(msg?: string): LogLine[] {
    return this.lines.filter((l) => l.scope === 'access' && (msg === undefined || l.msg === msg));
  }

  /** Waits until a log line matches. */
  async waitForLine(predicate: (l: LogLine) => boolean, timeoutMs = 3000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(predicate);
      if (found !== undefined) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `no matching log line within ${timeoutMs} ms; lines:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The value of a counter for the label subset given (summed over other labels). */
  async counter(name: string, labels: Readonly<Record<string, string>> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (metric === undefined) throw new Error(`no metric ${name}`);
    const data = await metric.get();
    let sum = 0;
    for (const v of data.values) {
      if (Object.entries(labels).every(([k, val]) => v.labels[k] === val)) sum += v.value;
    }
    return sum;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#unwatch();
    for (const s of this.#sockets) s.destroy();
    await Promise.all(this.#proxies.map((p) => p.stop({ mode: 'immediate' })));
    await Promise.all(this.#apps.map((a) => a.close()));
  }
}

/** Random bytes and their SHA-256. */
export function payload(size: number): { readonly data: Buffer; readonly sha256: string } {
  const data = randomBytes(size);
  return { data, sha256: sha256(data) };
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Reads a socket to its end (without destroying it), with its close error if any. */
export function readToEnd(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Resolves once the peer has closed the connection (our side is closed then too). */
export function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    socket.on('error', () => {});
    // Half-open sockets stay open after the peer's FIN until we end too.
    socket.once('end', () => socket.end());
    socket.resume();
    socket.once('close', () => resolve());
  });
}

/** An exact-principal match, as istiod writes it. */
export function principal(id: Identity): MessageInitShape<typeof sec.StringMatchSchema> {
  return { matchType: { case: 'exact', value: formatIdentity(id).slice('spiffe://'.length) } };
}

export { sec };
