import { errorMessage } from '@ambient/common/errors';
import { type ControlPlane, ControlPlaneSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import { AggregatedDiscoveryService } from '@ambient/common/gen/envoy/service/discovery/v3/ads_pb';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  DiscoveryRequest,
  DiscoveryResponse,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { grpcServiceDefinition } from '@ambient/common/grpc';
import type { Component, StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import { create } from '@bufbuild/protobuf';
import { Server, type ServerCredentials, type ServerDuplexStream, status } from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import type { XdsAuthenticator } from './authorize.ts';
import type { ConnectionContext, XdsConnection, XdsConnectionDebug } from './connection.ts';
import { DeltaConnection } from './delta-connection.ts';
import { XdsError } from './errors.ts';
import { typeView, type WildcardSnapshot, wildcardSnapshot } from './generators.ts';
import { XdsMetrics } from './metrics.ts';
import type { ProxyNode } from './node.ts';
import { type DebounceOptions, type PushBatch, PushQueue } from './push-queue.ts';
import type { ResourceSource, ResourcesUpdated } from './resources.ts';
import { encodeDeltaResponse } from './response-encoding.ts';
import { SotwConnection } from './sotw-connection.ts';

/** istiod's xDS ports (spec §3.1): TLS with authentication, and plaintext. */
export const XDS_PORT = { SECURE: 15012, PLAINTEXT: 15010 } as const;

/** Defaults of the tunables in {@link XdsServerOptions}. */
export const XDS_SERVER_DEFAULTS = {
  // Upstream's 4 MiB (`ISTIO_GPRC_MAXRECVMSGSIZE`) is exceeded by a reconnecting ztunnel's
  // `initial_resource_versions` at about 40k workloads (ztunnel#1966), which then loops on
  // RESOURCE_EXHAUSTED; requests are otherwise tiny, so a larger bound costs nothing.
  maxReceiveMessageBytes: 16 * 1024 * 1024,
  // istiod's keepalive (`pkg/keepalive/options.go`) and the chart's keepaliveMaxServerConnectionAge,
  // which rebalances proxies across istiod replicas.
  keepaliveTimeMs: 30_000,
  keepaliveTimeoutMs: 10_000,
  maxConnectionAgeMs: 30 * 60_000,
  maxConnectionAgeGraceMs: 10_000,
  // After streams are ended at the deadline, how long their statuses get to reach the proxies
  // before the sessions are destroyed.
  endGraceMs: 500,
} as const;

/** One address the server listens on. */
export interface XdsListenerOptions {
  /** For logs and {@link XdsServer.addresses}; defaults to `host:port`. */
  readonly name?: string;
  readonly host: string;
  /** 0 picks a free port; read it back from {@link XdsServer.addresses}. */
  readonly port: number;
  /** TLS for 15012; `ServerCredentials.createInsecure()` for plaintext 15010 and tests. */
  readonly credentials: ServerCredentials;
  /**
   * Whether streams on this listener must authenticate. Upstream authenticates TLS connections
   * and lets plaintext ones through unauthenticated (`istio:pilot/pkg/xds/auth.go`).
   */
  readonly authenticate: boolean;
  /**
   * Registers more gRPC services on this listener's server, so they share its port and TLS:
   * istiod serves IstioCertificateService on 15012 beside ADS (spec §4.1), e.g.
   * `register: (server) => caServer.addTo(server)`. They stop with the listener.
   */
  readonly register?: (server: Server) => void;
}

export interface XdsServerOptions {
  /** The ambient index's read side. */
  readonly source: ResourceSource;
  readonly listeners: readonly XdsListenerOptions[];
  /** Required when a listener authenticates. */
  readonly authenticator?: XdsAuthenticator;
  /** `PILOT_ENABLE_XDS_IDENTITY_CHECK`; default true. */
  readonly identityCheck?: boolean;
  /** Where the xDS metrics are registered. */
  readonly registry: Registry;
  readonly log?: Logger;
  readonly debounce?: DebounceOptions;
  /** Serve `StreamAggregatedResources` too (default true); when false it answers UNIMPLEMENTED. */
  readonly stateOfTheWorld?: boolean;
  readonly maxReceiveMessageBytes?: number;
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly maxConnectionAgeMs?: number;
  readonly maxConnectionAgeGraceMs?: number;
  /** Sent as `control_plane.identifier` (upstream: a JSON of component, pod and version). */
  readonly controlPlaneId?: string;
}

/** A bound listener. */
export interface XdsBoundAddress {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly authenticate: boolean;
}

/** What {@link XdsServer.debugState} returns (istiod's `/debug/connections` and `/debug/syncz`). */
export interface XdsDebugState {
  readonly systemVersion: string;
  readonly draining: boolean;
  readonly pendingPush: { readonly types: number; readonly names: number; readonly events: number };
  readonly connections: readonly XdsConnectionDebug[];
}

interface BoundServer {
  readonly server: Server;
  readonly address: XdsBoundAddress;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * istiod's Aggregated Discovery Service: delta xDS (`DeltaAggregatedResources`, what ztunnel
 * uses) and state of the world for the same types, over grpc-js.
 *
 * Data flow (reference architecture §4b): the source emits ResourcesUpdated → {@link PushQueue}
 * debounces and merges → {@link XdsServer} hands the batch to every connection → each computes
 * what it lacks (generators.ts) and writes one response per type. WDS is not proxy-specific,
 * so the resource bytes are encoded once by the source and shared by all connections.
 *
 * Each listener has its own grpc-js Server, because whether a stream must authenticate depends
 * on the port it arrived on, and grpc-js does not tell a handler which port that was.
 */
export class XdsServer implements Component {
  readonly name = 'xds-server';
  readonly #options: XdsServerOptions;
  readonly #log: Logger;
  readonly #metrics: XdsMetrics;
  readonly #queue: PushQueue;
  readonly #connections = new Set<XdsConnection>();
  readonly #servers: BoundServer[] = [];
  readonly #controlPlane: ControlPlane | undefined;
  readonly #onUpdated = (u: ResourcesUpdated): void => {
    this.#snapshots.delete(u.typeUrl);
    this.#queue.enqueue(u);
  };
  /** Per type: the full push every fresh wildcard watch gets, until the type next changes. */
  readonly #snapshots = new Map<string, WildcardSnapshot>();
  #versionSeq = 0;
  #systemVersion: string;
  #connectionSeq = 0;
  #started = false;
  #draining = false;

  constructor(options: XdsServerOptions) {
    if (options.listeners.length === 0) {
      throw new XdsError('OPTIONS_INVALID', 'the xds server needs at least one listener');
    }
    const authenticating = options.listeners.filter((l) => l.authenticate);
    if (authenticating.length > 0 && !options.authenticator) {
      throw new XdsError(
        'OPTIONS_INVALID',
        `listener ${hostPort(authenticating[0]?.host ?? '', authenticating[0]?.port ?? 0)} authenticates but no authenticator was given`,
      );
    }
    this.#options = options;
    this.#log = options.log ?? logger('xds');
    this.#metrics = new XdsMetrics(options.registry);
    this.#queue = new PushQueue((batch) => this.#push(batch), options.debounce);
    this.#controlPlane =
      options.controlPlaneId === undefined
        ? undefined
        : create(ControlPlaneSchema, { identifier: options.controlPlaneId });
    this.#systemVersion = this.#nextVersion();
  }

  /** Binds every listener; rejects (after unbinding what bound) when one fails. */
  async start(): Promise<void> {
    if (this.#started) throw new XdsError('OPTIONS_INVALID', 'the xds server was already started');
    this.#started = true;
    const o = this.#options;
    const d = XDS_SERVER_DEFAULTS;
    try {
      for (const listener of o.listeners) {
        const server = new Server({
          'grpc.max_receive_message_length': o.maxReceiveMessageBytes ?? d.maxReceiveMessageBytes,
          // Initial responses carry the whole mesh; ztunnel decodes up to 200 MiB.
          'grpc.max_send_message_length': -1,
          'grpc.keepalive_time_ms': o.keepaliveTimeMs ?? d.keepaliveTimeMs,
          'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs ?? d.keepaliveTimeoutMs,
          'grpc.max_connection_age_ms': o.maxConnectionAgeMs ?? d.maxConnectionAgeMs,
          'grpc.max_connection_age_grace_ms': o.maxConnectionAgeGraceMs ?? d.maxConnectionAgeGraceMs,
        });
        this.#addService(server, listener.authenticate ? o.authenticator : undefined);
        listener.register?.(server);
        const port = await new Promise<number>((resolve, reject) => {
          server.bindAsync(hostPort(listener.host, listener.port), listener.credentials, (err, bound) =>
            err ? reject(err) : resolve(bound),
          );
        }).catch((err: unknown) => {
          server.forceShutdown();
          throw new XdsError(
            'BIND_FAILED',
            `xds listener ${hostPort(listener.host, listener.port)} could not bind: ${errorMessage(err)}`,
            { cause: err },
          );
        });
        const address: XdsBoundAddress = {
          name: listener.name ?? hostPort(listener.host, listener.port),
          host: listener.host,
          port,
          authenticate: listener.authenticate,
        };
        this.#servers.push({ server, address });
        this.#log.info(
          { listener: address.name, port, authenticate: listener.authenticate },
          'xds listening',
        );
      }
    } catch (err) {
      for (const { server } of this.#servers) server.forceShutdown();
      this.#servers.length = 0;
      throw err;
    }
    o.source.on('updated', this.#onUpdated);
  }

  #addService(server: Server, authenticator: XdsAuthenticator | undefined): void {
    const ctx = this.#context(authenticator);
    const sotw = this.#options.stateOfTheWorld ?? true;
    const definition = grpcServiceDefinition(AggregatedDiscoveryService);
    // Shared Resource envelopes are encoded once, not once per connection (response-encoding.ts).
    if (definition.deltaAggregatedResources) {
      definition.deltaAggregatedResources.responseSerialize = encodeDeltaResponse as (v: unknown) => Buffer;
    }
    server.addService(definition, {
      deltaAggregatedResources: (call: ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => {
        new DeltaConnection(ctx, call).start();
      },
      streamAggregatedResources: (call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => {
        if (!sotw) {
          call.emit('error', {
            code: status.UNIMPLEMENTED,
            details: 'state-of-the-world xDS is disabled on this istiod; use DeltaAggregatedResources',
          });
          return;
        }
        new SotwConnection(ctx, call).start();
      },
    });
  }

  #context(authenticator: XdsAuthenticator | undefined): ConnectionContext {
    const server = this;
    return {
      source: this.#options.source,
      metrics: this.#metrics,
      log: this.#log,
      authenticator,
      identityCheck: this.#options.identityCheck ?? true,
      controlPlane: this.#controlPlane,
      get draining() {
        return server.#draining;
      },
      systemVersion: () => this.#systemVersion,
      wildcardSnapshot: (typeUrl) => {
        let snapshot = this.#snapshots.get(typeUrl);
        if (snapshot === undefined) {
          snapshot = wildcardSnapshot(typeView(this.#options.source, typeUrl));
          this.#snapshots.set(typeUrl, snapshot);
        }
        return snapshot;
      },
      serves: (typeUrl) => this.#options.source.typeUrls().includes(typeUrl),
      connectionId: (node: ProxyNode) => `${node.proxyId}-${++this.#connectionSeq}`,
      register: (conn) => {
        this.#connections.add(conn);
        this.#metrics.connectedProxies.inc({ proxy_type: conn.node?.type ?? 'unknown' });
      },
      unregister: (conn) => {
        if (this.#connections.delete(conn)) {
          this.#metrics.connectedProxies.dec({ proxy_type: conn.node?.type ?? 'unknown' });
        }
      },
    };
  }

  #nextVersion(): string {
    // Upstream's push version shape: an RFC 3339 time and a counter.
    return `${new Date().toISOString()}/${++this.#versionSeq}`;
  }

  #push(batch: PushBatch): void {
    this.#systemVersion = this.#nextVersion();
    let names = 0;
    for (const s of batch.changes.values()) names += s.size;
    this.#log.debug(
      { version: this.#systemVersion, types: batch.changes.size, names, events: batch.events },
      'pushing to connected proxies',
    );
    for (const conn of this.#connections) {
      try {
        conn.push(batch);
      } catch (err) {
        // One broken stream must not keep the others from their push.
        conn.fail(err);
      }
    }
  }

  /** Pushes pending changes now instead of at the end of the debounce window. */
  flush(): void {
    this.#queue.flush();
  }

  /** The bound listeners (with the real port when 0 was asked for). */
  addresses(): readonly XdsBoundAddress[] {
    return this.#servers.map((s) => s.address);
  }

  /** Connected (authorized) proxies. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  debugState(): XdsDebugState {
    const connections: XdsConnectionDebug[] = [];
    for (const c of this.#connections) {
      const d = c.debug();
      if (d) connections.push(d);
    }
    connections.sort((a, b) => a.id.localeCompare(b.id));
    return {
      systemVersion: this.#systemVersion,
      draining: this.#draining,
      pendingPush: this.#queue.pending,
      connections,
    };
  }

  /**
   * Stops like upstream istiod (`GracefulStop`, then `Stop` at the deadline):
   * 1. refuse new streams and close the listeners (`tryShutdown`: GOAWAY to every session);
   * 2. keep pushing to the proxies still connected until they leave or the deadline passes;
   * 3. at the deadline, end each stream UNAVAILABLE so the proxy reconnects to another replica
   *    at once, give the statuses a moment to land, then `forceShutdown`.
   */
  async stop(ctx: StopContext): Promise<void> {
    this.#draining = true;
    const servers = [...this.#servers];
    this.#servers.length = 0;
    const shutdowns = Promise.all(
      servers.map(
        ({ server }) =>
          new Promise<void>((resolve) => {
            server.tryShutdown(() => resolve());
          }),
      ),
    );
    let graceful = false;
    if (!ctx.force.aborted) {
      let onAbort = (): void => {};
      const forced = new Promise<'forced'>((resolve) => {
        onAbort = () => resolve('forced');
        ctx.force.addEventListener('abort', onAbort, { once: true });
      });
      graceful = (await Promise.race([shutdowns.then(() => 'done' as const), forced])) === 'done';
      ctx.force.removeEventListener('abort', onAbort);
    }
    this.#options.source.off('updated', this.#onUpdated);
    this.#queue.close();
    if (!graceful) {
      const open = [...this.#connections];
      this.#log.info({ connections: open.length }, 'drain deadline reached: ending xds streams');
      for (const conn of open) conn.end(status.UNAVAILABLE, 'istiod is shutting down; reconnect');
      await Promise.race([shutdowns, new Promise((r) => setTimeout(r, XDS_SERVER_DEFAULTS.endGraceMs))]);
      for (const { server } of servers) server.forceShutdown();
    }
    this.#log.info({ graceful }, 'xds server stopped');
  }
}
