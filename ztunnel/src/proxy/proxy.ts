import { HbonePool } from '@ambient/common/hbone/pool';
import { Drain, type StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import type { ProxyState, SocketAddr, WorkloadInfo } from '@ambient/common/model';
import type { ConnectionManager } from './connection-manager.ts';
import { ProxyError } from './errors.ts';
import { Inbound } from './inbound.ts';
import { InboundPassthrough } from './inbound-passthrough.ts';
import type { CertificateProvider, ProxyContext, ProxyInputs } from './inputs.ts';
import { type ConnectionDump, LiveConnections } from './live-connections.ts';
import { LocalWorkload } from './local-workload.ts';
import type { ProxyMetrics } from './metrics.ts';
import { Outbound } from './outbound.ts';
import type { ProxyConfig } from './proxy-config.ts';
import type { ProxyListener, SocketFactory } from './socket-factory.ts';

/** The pod a proxy serves: its ZDS uid and `WorkloadInfo` (matched against WDS on this node). */
export interface ProxyWorkload {
  readonly uid: string;
  readonly info: WorkloadInfo;
}

/** The bound addresses of a started proxy. */
export interface ProxyAddresses {
  readonly outbound: SocketAddr;
  readonly inboundPlaintext: SocketAddr;
  readonly inbound: SocketAddr;
}

/** How to stop: `Lifecycle`'s StopContext fits; everything is optional. */
export interface ProxyStopOptions {
  /** `graceful` (default) lets connections finish until the deadline; `immediate` closes them now. */
  readonly mode?: StopContext['mode'];
  /** Epoch ms; default now + `config.drainDeadlineMs`. */
  readonly deadline?: number;
  /** Aborting it closes what is left at once. */
  readonly force?: AbortSignal;
}

/**
 * ztunnel's proxy for one enrolled pod (`Proxy` of `proxy.rs`): the outbound (15001), inbound
 * plaintext (15006) and inbound HBONE (15008) listeners, bound through the pod's socket factory,
 * and every connection they carry. Implements the lifecycle `Component` shape.
 */
export class WorkloadProxy {
  readonly name: string;
  readonly workload: ProxyWorkload;
  readonly inputs: ProxyInputs;
  readonly local: LocalWorkload;
  readonly #live: LiveConnections;
  readonly #log: Logger;
  readonly #outbound: Outbound;
  readonly #inboundPlaintext: InboundPassthrough;
  readonly #inbound: Inbound;
  #addresses: ProxyAddresses | undefined;
  #starting: Promise<ProxyAddresses> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(workload: ProxyWorkload, inputs: ProxyInputs) {
    this.workload = workload;
    this.inputs = inputs;
    this.name = `proxy ${workload.info.namespace}/${workload.info.name}`;
    this.#log = (inputs.log ?? logger('proxy')).child({
      workload: `${workload.info.namespace}/${workload.info.name}`,
    });
    this.local = new LocalWorkload(inputs.state, workload.info, inputs.config.workloadWaitTimeoutMs);
    this.#live = new LiveConnections(inputs.drain);
    const ctx: ProxyContext = {
      uid: workload.uid,
      local: this.local,
      inputs,
      live: this.#live,
      log: this.#log,
    };
    this.#outbound = new Outbound(ctx);
    this.#inboundPlaintext = new InboundPassthrough(ctx);
    this.#inbound = new Inbound(ctx);
  }

  /** The bound listener addresses, once started. */
  get addresses(): ProxyAddresses | undefined {
    return this.#addresses;
  }

  /** The inbound plaintext (15006) listener, once started. */
  get inboundPlaintextListener(): ProxyListener | undefined {
    return this.#inboundPlaintext.listener;
  }

  /** Connections in flight, for `/config_dump`. */
  connections(): { inbound: ConnectionDump[]; outbound: ConnectionDump[] } {
    return this.#live.dump();
  }

  /** Connections in flight (all three listeners). */
  get activeConnections(): number {
    return this.#live.size;
  }

  /**
   * Binds the three listeners (SO_REUSEPORT, so a previous ztunnel's may still be there). Any
   * bind failure closes the others and fails with `BIND_FAILED`: a pod half-served is worse than
   * a pod the workload manager retries.
   */
  start(): Promise<ProxyAddresses> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<ProxyAddresses> {
    const parts = [
      ['outbound', this.#outbound],
      ['inbound plaintext', this.#inboundPlaintext],
      ['inbound', this.#inbound],
    ] as const;
    const results = await Promise.allSettled(parts.map(([, p]) => p.listen()));
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      for (const [, p] of parts) p.close('immediate');
      const reason = (results[failed] as PromiseRejectedResult).reason as unknown;
      throw new ProxyError(
        'BIND_FAILED',
        `binding the ${parts[failed]?.[0]} listener of ${this.local.describe()} failed: ${
          reason instanceof Error ? reason.message : String(reason)
        }`,
        { cause: reason },
      );
    }
    const [outbound, inboundPlaintext, inbound] = results.map(
      (r) => (r as PromiseFulfilledResult<{ address: SocketAddr }>).value.address,
    ) as [SocketAddr, SocketAddr, SocketAddr];
    this.#addresses = { outbound, inboundPlaintext, inbound };
    return this.#addresses;
  }

  /**
   * Stops the proxy (ztunnel drain): listeners close at once and live HBONE connections get
   * GOAWAY; connections in flight may finish until the deadline, then every one left is closed
   * with `DRAINING`. `immediate` (pod deleted) skips the wait. Idempotent.
   */
  stop(options: ProxyStopOptions = {}): Promise<void> {
    this.#stopping ??= this.#stop(options);
    return this.#stopping;
  }

  async #stop(options: ProxyStopOptions): Promise<void> {
    const mode = options.mode ?? 'graceful';
    const { drain, pool, connectionManager, config } = this.inputs;
    const deadline =
      mode === 'immediate' ? Date.now() : (options.deadline ?? Date.now() + config.drainDeadlineMs);
    // 1. No new connections.
    await this.#starting?.catch(() => undefined);
    this.#outbound.close();
    this.#inboundPlaintext.close();
    this.#inbound.close(mode);
    if (mode === 'graceful') void pool.close();
    else pool.destroy();
    // 2. Wait for connections in flight, closing them at the deadline or when forced.
    const forceNow = (): void =>
      this.#live.closeAll(new ProxyError('DRAINING', 'connection closed: the proxy was stopped forcefully'));
    if (options.force?.aborted) forceNow();
    else options.force?.addEventListener('abort', forceNow, { once: true });
    const { forced, leaked } = await drain.drain(deadline);
    options.force?.removeEventListener('abort', forceNow);
    // 3. Whatever is left goes now.
    connectionManager.closeOwner(
      this.workload.uid,
      new ProxyError('DRAINING', 'connection closed: the proxy stopped'),
    );
    this.#inbound.destroy();
    pool.destroy();
    if (forced.length > 0) {
      this.#log.warn(
        { forced: forced.length, leaked: leaked.length },
        'drain deadline passed; connections closed',
      );
    } else {
      this.#log.info('drained');
    }
  }
}

/** The parts every pod's proxy shares; {@link ProxyFactory} adds the per-pod ones. */
export interface SharedProxyInputs {
  readonly state: ProxyState;
  readonly certificates: CertificateProvider;
  readonly metrics: ProxyMetrics;
  readonly accessLog: Logger;
  readonly config: ProxyConfig;
  readonly connectionManager: ConnectionManager;
  readonly log?: Logger;
}

/**
 * The HBONE client pool of one pod: connections are dialled through the pod's socket factory
 * (inside its netns, marked) with the certificate of the source identity. The source address is
 * left to the socket factory: ztunnel does not spoof on outbound.
 */
export function createWorkloadPool(
  socketFactory: SocketFactory,
  certificates: CertificateProvider,
  config: ProxyConfig,
): HbonePool {
  return new HbonePool({
    credentials: async (identity) => {
      try {
        return await certificates.fetch(identity);
      } catch (err) {
        throw new ProxyError('CERTIFICATE_UNAVAILABLE', 'no certificate for the source identity', {
          cause: err,
          retryable: true,
        });
      }
    },
    dial: socketFactory.hboneDialer,
    settings: config.hbone,
    maxStreamsPerConnection: config.poolMaxStreamsPerConnection,
    idleTimeoutMs: config.poolIdleTimeoutMs,
    bindSourceIp: false,
  });
}

/**
 * Makes the {@link WorkloadProxy} of each enrolled pod (the workload manager's side of the seam):
 * shared inputs once, then per pod its socket factory, a fresh HBONE pool and a fresh drain.
 */
export class ProxyFactory {
  readonly shared: SharedProxyInputs;

  constructor(shared: SharedProxyInputs) {
    this.shared = shared;
  }

  /** A proxy for `workload`, not started. */
  create(
    workload: ProxyWorkload,
    socketFactory: SocketFactory,
    overrides: { readonly pool?: HbonePool; readonly drain?: Drain } = {},
  ): WorkloadProxy {
    const s = this.shared;
    return new WorkloadProxy(workload, {
      ...s,
      socketFactory,
      pool: overrides.pool ?? createWorkloadPool(socketFactory, s.certificates, s.config),
      drain: overrides.drain ?? new Drain(),
    });
  }
}
