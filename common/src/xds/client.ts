import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { NodeSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import { AggregatedDiscoveryService } from '@ambient/common/gen/envoy/service/discovery/v3/ads_pb';
import {
  type DeltaDiscoveryRequest,
  DeltaDiscoveryRequestSchema,
  type DeltaDiscoveryResponse,
  type Resource,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { StatusSchema } from '@ambient/common/gen/google/rpc/status_pb';
import { create, type DescMessage, fromBinary, type MessageShape } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import { Client, type ClientDuplexStream, type StatusObject, status } from '@grpc/grpc-js';
import { type BackoffOptions, ExponentialBackoff } from '../backoff.ts';
import { errorMessage } from '../errors.ts';
import { grpcServiceDefinition } from '../grpc/service.ts';
import type { Component, Readiness } from '../lifecycle.ts';
import { type Logger, logger } from '../log.ts';
import {
  CONTROL_PLANE_DEFAULTS,
  type ControlPlaneOptions,
  controlPlaneChannelOptions,
  controlPlaneCredentials,
  controlPlaneMetadata,
  validateControlPlaneOptions,
  waitForChannelReady,
} from './control-plane.ts';
import { XdsClientError, XdsResourceError } from './errors.ts';
import type { XdsNode } from './node.ts';

export type {
  BearerTokenSource,
  ControlPlaneOptions,
  ControlPlaneTls,
  PemSource,
} from './control-plane.ts';
export { bearerTokenFile, CONTROL_PLANE_DEFAULTS } from './control-plane.ts';
export { ControlPlaneError, XdsClientError, XdsResourceError } from './errors.ts';
export { type XdsNode, type ZtunnelNodeParams, ztunnelNode } from './node.ts';

/** One resource of a response, decoded, as a handler receives it. */
export interface XdsResourceUpdate<T> {
  /** The xDS name (Workload uid, `namespace/hostname`, `namespace/name`). */
  readonly name: string;
  /** istiod's content hash; what the client echoes in `initial_resource_versions`. */
  readonly version: string;
  readonly resource: T;
  readonly aliases: readonly string[];
}

/** A resource the client or a handler refused; it is NACKed as `name: reason`. */
export interface XdsReject {
  readonly name: string;
  readonly reason: string;
}

/**
 * Applies one response of a type: the decoded updates and the removed names. Returns the names it
 * refused (with why); everything else is taken as applied. Called once per response, in order.
 */
export type XdsHandleFn<T> = (
  updates: readonly XdsResourceUpdate<T>[],
  removed: readonly string[],
) => readonly XdsReject[] | Promise<readonly XdsReject[]>;

/** What the client needs per type URL; build one with {@link xdsHandler} or {@link rawXdsHandler}. */
export interface XdsTypeHandler {
  readonly typeUrl: string;
  /** Decodes a resource whose `Any.type_url` matched; throwing rejects that resource alone. */
  decode(any: Any): unknown;
  readonly handle: XdsHandleFn<unknown>;
}

/** A handler whose resources are decoded with a protobuf-es schema (`AddressSchema`, …). */
export function xdsHandler<D extends DescMessage>(
  typeUrl: string,
  schema: D,
  handle: XdsHandleFn<MessageShape<D>>,
): XdsTypeHandler {
  return {
    typeUrl,
    decode: (any) => fromBinary(schema, any.value),
    handle: (updates, removed) => handle(updates as readonly XdsResourceUpdate<MessageShape<D>>[], removed),
  };
}

/** A handler that receives each resource's `Any` undecoded (its type URL already checked). */
export function rawXdsHandler(typeUrl: string, handle: XdsHandleFn<Any>): XdsTypeHandler {
  return {
    typeUrl,
    decode: (any) => any,
    handle: (updates, removed) => handle(updates as readonly XdsResourceUpdate<Any>[], removed),
  };
}

/**
 * Decodes every resource of a response before anything is applied. A resource without an `Any`,
 * with another type's `Any`, or whose bytes do not decode becomes a reject, never an exception,
 * so one bad resource is NACKed while the others apply (ztunnel `handle_single_resource`).
 */
export function decodeResources(
  handler: XdsTypeHandler,
  resources: readonly Resource[],
): { updates: XdsResourceUpdate<unknown>[]; rejects: XdsReject[] } {
  const updates: XdsResourceUpdate<unknown>[] = [];
  const rejects: XdsReject[] = [];
  for (const r of resources) {
    try {
      const any = r.resource;
      if (!any) throw new XdsResourceError('RESOURCE_MISSING', 'resource carries no payload');
      if (any.typeUrl !== handler.typeUrl) {
        throw new XdsResourceError(
          'RESOURCE_TYPE_MISMATCH',
          `payload type ${JSON.stringify(any.typeUrl)} is not ${JSON.stringify(handler.typeUrl)}`,
        );
      }
      let resource: unknown;
      try {
        resource = handler.decode(any);
      } catch (err) {
        throw new XdsResourceError('RESOURCE_DECODE_FAILED', `cannot decode payload: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      updates.push({ name: r.name, version: r.version, resource, aliases: r.aliases });
    } catch (err) {
      rejects.push({ name: r.name, reason: errorMessage(err) });
    }
  }
  return { updates, rejects };
}

/** ztunnel's `ConnectionTerminationReason`, the `reason` label of the termination counter. */
export type XdsTerminationReason = 'ConnectionError' | 'Error' | 'Reconnect' | 'Complete';

/** A counter as prom-client's `Counter<L>` is shaped; the client needs nothing else from it. */
export interface XdsCounter<L extends string> {
  inc(labels: Partial<Record<L, string>>, value?: number): void;
}

/**
 * Counters the client increments. Create them with the names in {@link XDS_CLIENT_METRICS} in
 * the binary's registry (common takes no metrics library dependency).
 */
export interface XdsClientMetrics {
  readonly connectionTerminations: XdsCounter<'reason'>;
  readonly messages: XdsCounter<'url'>;
  readonly messageBytes: XdsCounter<'url'>;
}

/** ztunnel's xDS client metric names (spec §9.1). */
export const XDS_CLIENT_METRICS = {
  connectionTerminations: {
    name: 'istio_xds_connection_terminations_total',
    help: 'The total number of completed connections to xds server (unstable)',
    labelNames: ['reason'],
  },
  messages: {
    name: 'istio_xds_message_total',
    help: 'Total number of messages received (unstable)',
    labelNames: ['url'],
  },
  messageBytes: {
    name: 'istio_xds_message_bytes_total',
    help: 'Total number of bytes received (unstable)',
    labelNames: ['url'],
  },
} as const;

/** Defaults of {@link XdsClientOptions}. */
export const XDS_CLIENT_DEFAULTS = {
  // ztunnel `INITIAL_BACKOFF` / `MAX_BACKOFF` (`ztunnel:src/xds/client.rs`).
  backoff: { initialMs: 10, maxMs: 15_000, multiplier: 2, jitter: 0.2 },
  // A stream that delivered a response and stayed up this long resets the backoff, so a
  // MaxConnectionAge close reconnects at once while a server that fails every stream is not
  // hammered.
  healthyAfterMs: 5_000,
} as const;

export interface XdsClientOptions extends ControlPlaneOptions {
  readonly node: XdsNode;
  /** One per subscribed type; each gets a wildcard subscription on connect. */
  readonly handlers: readonly XdsTypeHandler[];
  /** Gets one pending task per type, done when that type's first response is ACKed. */
  readonly readiness?: Readiness;
  readonly metrics?: XdsClientMetrics;
  readonly log?: Logger;
  /** Reconnect backoff; defaults in {@link XDS_CLIENT_DEFAULTS}. */
  readonly backoff?: Partial<BackoffOptions>;
  readonly healthyAfterMs?: number;
}

/** Events of an {@link XdsClient}. */
export interface XdsClientEvents {
  /** The stream is open and the initial requests were written. */
  connected: [info: { readonly attempt: number }];
  /** A response was applied and ACKed. */
  ack: [info: { readonly typeUrl: string; readonly nonce: string }];
  /** A response was NACKed: these resources were refused, the rest applied. */
  nack: [info: { readonly typeUrl: string; readonly nonce: string; readonly rejects: readonly XdsReject[] }];
  /** The stream ended (or never opened); the client retries after `retryInMs`. */
  terminated: [
    info: {
      readonly reason: XdsTerminationReason;
      readonly code?: status;
      readonly details: string;
      readonly retryInMs: number;
    },
  ];
}

interface StreamOutcome {
  readonly reason: XdsTerminationReason;
  readonly code?: status;
  readonly details: string;
  readonly healthy: boolean;
}

const DELTA_METHOD = (() => {
  const m = grpcServiceDefinition(AggregatedDiscoveryService).deltaAggregatedResources;
  if (!m) throw new Error('the generated AggregatedDiscoveryService lacks DeltaAggregatedResources');
  return m;
})();

type DeltaCall = ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

// Statuses after which ztunnel reconnects at once: the stream was torn down, not refused.
function isReconnectStatus(s: StatusObject): boolean {
  if (s.code === status.UNKNOWN || s.code === status.CANCELLED || s.code === status.DEADLINE_EXCEEDED) {
    return true;
  }
  const details = s.details.toLowerCase();
  return (
    s.code === status.UNAVAILABLE && (details.includes('transport is closing') || details.includes('goaway'))
  );
}

/**
 * ztunnel's ADS client (`ztunnel:src/xds/client.rs`): one `DeltaAggregatedResources` stream to
 * istiod, a wildcard subscription per registered type, a handler per type URL, ACK/NACK per
 * response, and reconnects with backoff.
 *
 * Invariants:
 * - Responses are handled strictly in arrival order; each is fully decoded, handed to its handler
 *   once, and answered with exactly one ACK or NACK carrying its nonce.
 * - The client remembers the version of every resource its handlers accepted (never a rejected
 *   one) and sends them as `initial_resource_versions` on reconnect, so istiod re-sends only
 *   what changed and what was refused (reliability checklist 27).
 * - Nothing is cleared on disconnect: handlers keep their state (last known good) while istiod
 *   is unreachable.
 */
export class XdsClient extends EventEmitter<XdsClientEvents> implements Component {
  readonly name = 'xds-client';
  readonly #options: XdsClientOptions;
  readonly #handlers = new Map<string, XdsTypeHandler>();
  readonly #held = new Map<string, Map<string, string>>();
  readonly #pendingReady = new Map<string, () => void>();
  readonly #log: Logger;
  readonly #backoff: ExponentialBackoff;
  readonly #healthyAfterMs: number;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #client: Client | undefined;
  #call: DeltaCall | undefined;
  #attempts = 0;
  #connected = false;

  constructor(options: XdsClientOptions) {
    super();
    validateControlPlaneOptions(options, 'xds');
    if (options.handlers.length === 0) {
      throw new XdsClientError('HANDLERS_INVALID', 'the xds client needs at least one type handler');
    }
    for (const h of options.handlers) {
      if (this.#handlers.has(h.typeUrl)) {
        throw new XdsClientError('HANDLERS_INVALID', `two handlers for type ${h.typeUrl}`);
      }
      this.#handlers.set(h.typeUrl, h);
      this.#held.set(h.typeUrl, new Map());
      if (options.readiness) {
        this.#pendingReady.set(h.typeUrl, options.readiness.register(`xds ${shortType(h.typeUrl)}`));
      }
    }
    this.#options = options;
    this.#log = options.log ?? logger('xds');
    this.#backoff = new ExponentialBackoff({ ...XDS_CLIENT_DEFAULTS.backoff, ...options.backoff });
    this.#healthyAfterMs = options.healthyAfterMs ?? XDS_CLIENT_DEFAULTS.healthyAfterMs;
  }

  /** Starts connecting in the background; readiness and events report progress. */
  start(): void {
    if (this.#loop) throw new XdsClientError('ALREADY_STARTED', 'the xds client was already started');
    this.#loop = this.#run();
  }

  /** Cancels the stream and stops reconnecting. Held versions and handler state are kept. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#call?.cancel();
    this.#client?.close();
    await this.#loop;
  }

  /** Whether a stream is open now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Connection attempts so far (the first connect included). */
  get attempts(): number {
    return this.#attempts;
  }

  /** The name → version pairs held for a type: what the next connect sends as initial versions. */
  held(typeUrl: string): ReadonlyMap<string, string> {
    return new Map(this.#held.get(typeUrl));
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      const attempt = ++this.#attempts;
      const outcome = await this.#connectOnce(attempt);
      this.#connected = false;
      if (signal.aborted) return;
      if (outcome.healthy) this.#backoff.reset();
      const retryInMs = this.#backoff.next();
      this.#options.metrics?.connectionTerminations.inc({ reason: outcome.reason });
      const fields = {
        attempt,
        reason: outcome.reason,
        code: outcome.code,
        details: outcome.details,
        retryInMs,
      };
      if (outcome.reason === 'Reconnect' || outcome.reason === 'Complete') {
        this.#log.info(fields, 'xds stream ended; reconnecting');
      } else {
        this.#log.warn(fields, 'xds connection failed; retrying');
      }
      this.emit('terminated', {
        reason: outcome.reason,
        ...(outcome.code !== undefined && { code: outcome.code }),
        details: outcome.details,
        retryInMs,
      });
      try {
        await sleep(retryInMs, undefined, { signal });
      } catch {
        return;
      }
    }
  }

  /**
   * One connection: read the credentials and the token now (a rotated file is picked up), open a
   * new channel, wait up to the connect timeout for it, open the stream, send one initial request
   * per type, and handle responses until the stream ends.
   */
  async #connectOnce(attempt: number): Promise<StreamOutcome> {
    const o = this.#options;
    let client: Client | undefined;
    try {
      const [creds, metadata] = await Promise.all([controlPlaneCredentials(o.tls), controlPlaneMetadata(o)]);
      if (this.#stop.signal.aborted) return { reason: 'Complete', details: 'stopped', healthy: false };
      client = new Client(o.address, creds, controlPlaneChannelOptions(o));
      this.#client = client;
      await waitForChannelReady(
        client,
        o.address,
        o.connectTimeoutMs ?? CONTROL_PLANE_DEFAULTS.connectTimeoutMs,
      );
      if (this.#stop.signal.aborted) return { reason: 'Complete', details: 'stopped', healthy: false };
      return await this.#stream(client, metadata, attempt);
    } catch (err) {
      return { reason: 'ConnectionError', details: errorMessage(err), healthy: false };
    } finally {
      this.#call = undefined;
      this.#client = undefined;
      client?.close();
    }
  }

  async #stream(
    client: Client,
    metadata: Awaited<ReturnType<typeof controlPlaneMetadata>>,
    attempt: number,
  ): Promise<StreamOutcome> {
    const call = client.makeBidiStreamRequest(
      DELTA_METHOD.path,
      DELTA_METHOD.requestSerialize as (req: DeltaDiscoveryRequest) => Buffer,
      DELTA_METHOD.responseDeserialize as (buf: Buffer) => DeltaDiscoveryResponse,
      metadata,
    );
    this.#call = call;
    const openedAt = Date.now();
    let firstResponseAt: number | undefined;
    let ended = false;
    let chain = Promise.resolve();
    const final = new Promise<StatusObject>((resolve) => {
      call.on('status', (s: StatusObject) => {
        ended = true;
        resolve(s);
      });
    });
    // A failed stream also emits 'error'; its status arrives through 'status'.
    call.on('error', () => {});
    call.on('data', (res: DeltaDiscoveryResponse) => {
      firstResponseAt ??= Date.now();
      chain = chain.then(() =>
        this.#onResponse(res, (req) => {
          if (!ended) call.write(req);
        }),
      );
    });

    for (const typeUrl of this.#handlers.keys()) {
      const initial = Object.fromEntries(this.#held.get(typeUrl) ?? []);
      call.write(
        create(DeltaDiscoveryRequestSchema, {
          typeUrl,
          node: create(NodeSchema, {
            id: this.#options.node.id,
            cluster: this.#options.node.cluster ?? '',
            ...(this.#options.node.metadata && { metadata: this.#options.node.metadata }),
          }),
          initialResourceVersions: initial,
        }),
      );
      this.#log.debug(
        { type: typeUrl, initialResources: Object.keys(initial).length },
        'sent initial request',
      );
    }
    this.#connected = true;
    this.#log.info({ address: this.#options.address, attempt }, 'xds stream established');
    this.emit('connected', { attempt });

    const s = await final;
    this.#connected = false;
    await chain;
    const healthy = firstResponseAt !== undefined && Date.now() - openedAt >= this.#healthyAfterMs;
    const reason: XdsTerminationReason =
      s.code === status.OK ? 'Complete' : isReconnectStatus(s) ? 'Reconnect' : 'Error';
    return { reason, code: s.code, details: s.details, healthy };
  }

  /**
   * Handles one response: decode all, hand the good ones to the handler once, record the
   * accepted versions and drop the removed names, then ACK or NACK with the nonce.
   */
  async #onResponse(res: DeltaDiscoveryResponse, send: (req: DeltaDiscoveryRequest) => void): Promise<void> {
    const typeUrl = res.typeUrl;
    const metrics = this.#options.metrics;
    if (metrics) {
      metrics.messages.inc({ url: typeUrl });
      let bytes = 0;
      for (const r of res.resources) bytes += r.resource?.value.length ?? 0;
      metrics.messageBytes.inc({ url: typeUrl }, bytes);
    }
    const handler = this.#handlers.get(typeUrl);
    if (!handler) {
      // Neither ACK nor NACK: istiod would treat any request for the type as a new wildcard
      // subscription to it.
      this.#log.error(
        { type: typeUrl, nonce: res.nonce },
        'response for a type this client did not subscribe to',
      );
      return;
    }
    this.#log.debug(
      {
        type: typeUrl,
        nonce: res.nonce,
        resources: res.resources.length,
        removed: res.removedResources.length,
      },
      'received response',
    );

    const { updates, rejects: decodeRejects } = decodeResources(handler, res.resources);
    let handlerRejects: readonly XdsReject[];
    let handlerError: XdsClientError | undefined;
    try {
      handlerRejects = await handler.handle(updates, res.removedResources);
    } catch (err) {
      handlerError = new XdsClientError('HANDLER_FAILED', `handler failed: ${errorMessage(err)}`, {
        cause: err,
      });
      handlerRejects = [];
      this.#log.error({ type: typeUrl, nonce: res.nonce, err: handlerError }, 'xds handler threw');
    }

    // The handler's outcome is only known when it returned; after a throw nothing is recorded,
    // so a reconnect asks for all of it again.
    if (!handlerError) {
      const held = this.#held.get(typeUrl) ?? new Map<string, string>();
      const refused = new Set(handlerRejects.map((r) => r.name));
      for (const name of res.removedResources) held.delete(name);
      for (const u of updates) if (!refused.has(u.name)) held.set(u.name, u.version);
      this.#held.set(typeUrl, held);
    }

    const rejects = [...decodeRejects, ...handlerRejects];
    if (rejects.length === 0 && !handlerError) {
      send(create(DeltaDiscoveryRequestSchema, { typeUrl, responseNonce: res.nonce }));
      const done = this.#pendingReady.get(typeUrl);
      if (done) {
        this.#pendingReady.delete(typeUrl);
        done();
      }
      this.emit('ack', { typeUrl, nonce: res.nonce });
      return;
    }
    const parts = rejects.map((r) => `${r.name}: ${r.reason}`);
    if (handlerError) parts.unshift(handlerError.message);
    const message = parts.join('; ');
    send(
      create(DeltaDiscoveryRequestSchema, {
        typeUrl,
        responseNonce: res.nonce,
        errorDetail: create(StatusSchema, { message }),
      }),
    );
    this.#log.warn(
      { type: typeUrl, nonce: res.nonce, rejected: rejects.length, error: message },
      'sent NACK',
    );
    this.emit('nack', {
      typeUrl,
      nonce: res.nonce,
      rejects: handlerError ? [{ name: '*', reason: handlerError.message }, ...rejects] : rejects,
    });
  }
}

function shortType(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}
