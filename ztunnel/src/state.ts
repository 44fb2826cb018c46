import {
  AuthorizationSchema,
  type Authorization as PbAuthorization,
} from '@ambient/common/gen/istio/security/authorization_pb';
import { AddressSchema, type Address as PbAddress } from '@ambient/common/gen/istio/workload/workload_pb';
import type { Component, Readiness, StopContext } from '@ambient/common/lifecycle';
import type { Logging } from '@ambient/common/log';
import { ProxyState, ProxyStateUpdater, type Rejected } from '@ambient/common/model';
import {
  XDS_CLIENT_METRICS,
  XdsClient,
  type XdsClientMetrics,
  type XdsReject,
  type XdsResourceUpdate,
  xdsHandler,
  ztunnelNode,
} from '@ambient/common/xds/client';
import { TYPE_URL } from '@ambient/common/xds/types';
import { Counter, type Registry } from 'prom-client';
import type { Config } from './config.ts';
import { controlPlaneOptions } from './control-plane.ts';
import { LocalConfigLoader } from './local-config.ts';

/** The xDS client's counters (`istio_xds_*`, spec §9.1), registered in `registry`. */
export function xdsClientMetrics(registry: Registry): XdsClientMetrics {
  const counter = (m: { name: string; help: string; labelNames: readonly string[] }) =>
    new Counter({ name: m.name, help: m.help, labelNames: [...m.labelNames], registers: [registry] });
  return {
    connectionTerminations: counter(XDS_CLIENT_METRICS.connectionTerminations),
    messages: counter(XDS_CLIENT_METRICS.messages),
    messageBytes: counter(XDS_CLIENT_METRICS.messageBytes),
  };
}

function toXdsRejects(rejected: readonly Rejected[]): XdsReject[] {
  return rejected.map((r) => ({ name: r.name, reason: r.reason }));
}

function toUpdates<T>(updates: readonly XdsResourceUpdate<T>[]): { name: string; resource: T }[] {
  return updates.map((u) => ({ name: u.name, resource: u.resource }));
}

export interface StateManagerOptions {
  readonly config: Config;
  readonly logging: Logging;
  readonly readiness: Readiness;
  readonly registry: Registry;
}

/**
 * ztunnel's `ProxyStateManager`: the ProxyState, its one writer, and where the writer's input
 * comes from: istiod over delta xDS (Address and Authorization, rejects NACKed), or the local
 * config file, or both (local first, so xDS can override). Readiness waits for the first ACK of
 * each xDS type (`xds Address`, `xds Authorization`) and the first local document.
 */
export class StateManager implements Component {
  readonly name = 'state-manager';
  readonly state: ProxyState;
  readonly updater: ProxyStateUpdater;
  /** Undefined when xDS is off. */
  readonly xds: XdsClient | undefined;
  /** Undefined outside local-config mode. */
  readonly local: LocalConfigLoader | undefined;

  constructor(options: StateManagerOptions) {
    const { config, logging } = options;
    this.state = new ProxyState(config.nodeName === undefined ? {} : { localNode: config.nodeName });
    this.updater = new ProxyStateUpdater(this.state, { log: logging.logger('xds') });
    this.local = config.localXds
      ? new LocalConfigLoader({
          source: config.localXds,
          updater: this.updater,
          readiness: options.readiness,
          log: logging.logger('xds'),
        })
      : undefined;
    if (config.xds) {
      const updater = this.updater;
      this.xds = new XdsClient({
        ...controlPlaneOptions(config, config.xds),
        headers: config.xds.headers,
        node: ztunnelNode({
          ...(config.instanceIp === undefined ? {} : { instanceIp: config.instanceIp }),
          podName: config.podName,
          podNamespace: config.podNamespace,
          nodeName: config.nodeName ?? '',
          clusterId: config.clusterId,
          proxyMetadata: config.proxyMetadata,
          metaJson: config.proxyMetadataJson,
        }),
        handlers: [
          xdsHandler(TYPE_URL.ADDRESS, AddressSchema, (updates, removed) =>
            toXdsRejects(updater.handleAddresses(toUpdates<PbAddress>(updates), removed)),
          ),
          xdsHandler(TYPE_URL.AUTHORIZATION, AuthorizationSchema, (updates, removed) =>
            toXdsRejects(updater.handleAuthorizations(toUpdates<PbAuthorization>(updates), removed)),
          ),
        ],
        readiness: options.readiness,
        metrics: xdsClientMetrics(options.registry),
        log: logging.logger('xds'),
      });
    } else {
      this.xds = undefined;
    }
  }

  async start(): Promise<void> {
    await this.local?.start();
    this.xds?.start();
  }

  async stop(_ctx: StopContext): Promise<void> {
    await this.xds?.stop();
    await this.local?.stop();
  }
}
