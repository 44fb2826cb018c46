import { NodeSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import {
  type DeltaDiscoveryRequest,
  DeltaDiscoveryRequestSchema,
  type DeltaDiscoveryResponse,
  DeltaDiscoveryResponseSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { type Status, StatusSchema } from '@ambient/common/gen/google/rpc/status_pb';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  type ChannelCredentials,
  Client,
  type ClientDuplexStream,
  credentials,
  Metadata,
  type StatusObject,
} from '@grpc/grpc-js';

const DELTA_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';

export interface DeltaXdsClientOptions {
  /** `host:port` of the xDS server. */
  readonly address: string;
  /** e.g. `ztunnel~10.0.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local`. */
  readonly nodeId: string;
  /** Node metadata (a Struct of strings here, as ztunnel sends). */
  readonly metadata?: Readonly<Record<string, string>>;
  readonly cluster?: string;
  /** Request headers, e.g. `authorization: Bearer …`. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly credentials?: ChannelCredentials;
}

/** A resource as the client holds it. */
export interface HeldResource {
  readonly version: string;
  readonly value: Uint8Array;
}

/** The fields of a request a test sets; the client adds `node` to the first. */
export interface RequestInit {
  readonly typeUrl: string;
  readonly resourceNamesSubscribe?: string[];
  readonly resourceNamesUnsubscribe?: string[];
  readonly initialResourceVersions?: Record<string, string>;
  readonly responseNonce?: string;
  readonly errorDetail?: Status;
}

/**
 * A delta xDS client for tests, written from the protocol (Envoy's incremental xDS) and the
 * generated messages alone, independent of any ztunnel code. It sends `node` on the first
 * request, queues responses for the test to take in order, and keeps the resources it applied
 * per type so a test can reconnect with `initial_resource_versions`.
 */
export class DeltaXdsClient {
  readonly #client: Client;
  readonly #call: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  readonly #options: DeltaXdsClientOptions;
  readonly #queue: DeltaDiscoveryResponse[] = [];
  #waiter: (() => void) | undefined;
  #nodeSent = false;
  #ended: StatusObject | undefined;
  readonly #held = new Map<string, Map<string, HeldResource>>();
  /** Resolves with the stream's final status. */
  readonly status: Promise<StatusObject>;
  /** Every response received, in order (for counting). */
  readonly received: DeltaDiscoveryResponse[] = [];

  constructor(options: DeltaXdsClientOptions) {
    this.#options = options;
    this.#client = new Client(options.address, options.credentials ?? credentials.createInsecure());
    const md = new Metadata();
    for (const [k, v] of Object.entries(options.headers ?? {})) md.set(k, v);
    this.#call = this.#client.makeBidiStreamRequest(
      DELTA_METHOD,
      (req: DeltaDiscoveryRequest) => Buffer.from(toBinary(DeltaDiscoveryRequestSchema, req)),
      (buf: Buffer) => fromBinary(DeltaDiscoveryResponseSchema, buf),
      md,
    );
    this.#call.on('data', (res: DeltaDiscoveryResponse) => {
      this.received.push(res);
      this.#queue.push(res);
      this.#wake();
    });
    // Non-OK statuses arrive as 'error' as well; the status promise reports them.
    this.#call.on('error', () => {});
    this.status = new Promise((resolve) => {
      this.#call.on('status', (s: StatusObject) => {
        this.#ended = s;
        this.#wake();
        resolve(s);
      });
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Sends a request; the first one carries the node. */
  send(init: RequestInit): void {
    const req = create(DeltaDiscoveryRequestSchema, init);
    if (!this.#nodeSent) {
      this.#nodeSent = true;
      req.node = create(NodeSchema, {
        id: this.#options.nodeId,
        cluster: this.#options.cluster ?? 'Kubernetes',
        metadata: { ...this.#options.metadata },
      });
    }
    this.#call.write(req);
  }

  /** Subscribes to a type: wildcard by default, as ztunnel does. */
  subscribe(
    typeUrl: string,
    opts: {
      readonly subscribe?: readonly string[];
      readonly unsubscribe?: readonly string[];
      readonly initialVersions?: Readonly<Record<string, string>>;
    } = {},
  ): void {
    this.send({
      typeUrl,
      resourceNamesSubscribe: [...(opts.subscribe ?? [])],
      resourceNamesUnsubscribe: [...(opts.unsubscribe ?? [])],
      initialResourceVersions: { ...opts.initialVersions },
    });
  }

  /** The next response, in arrival order; rejects after `timeoutMs` or when the stream ended. */
  async next(timeoutMs = 3000): Promise<DeltaDiscoveryResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = this.#queue.shift();
      if (res) return res;
      if (this.#ended) {
        throw new Error(
          `stream ended (${this.#ended.code} ${this.#ended.details}) while waiting for a response`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs}ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Resolves when no response arrives within `ms`; rejects with the response otherwise. */
  async expectNoResponse(ms: number): Promise<void> {
    try {
      const res = await this.next(ms);
      throw new Error(
        `unexpected response ${res.typeUrl}: ${res.resources.map((r) => r.name).join(',')} removed ${res.removedResources.join(',')}`,
      );
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('no response within')) return;
      throw err;
    }
  }

  /** Applies a response to the held resources, except the names in `rejected`. */
  apply(res: DeltaDiscoveryResponse, rejected: readonly string[] = []): void {
    let held = this.#held.get(res.typeUrl);
    if (!held) {
      held = new Map();
      this.#held.set(res.typeUrl, held);
    }
    for (const r of res.resources) {
      if (rejected.includes(r.name)) continue;
      held.set(r.name, { version: r.version, value: r.resource?.value ?? new Uint8Array() });
    }
    for (const name of res.removedResources) held.delete(name);
  }

  /** Applies the response and ACKs its nonce. */
  ack(res: DeltaDiscoveryResponse): void {
    this.apply(res);
    this.send({ typeUrl: res.typeUrl, responseNonce: res.nonce });
  }

  /**
   * Applies all but the rejected resources and NACKs the nonce with `error_detail`, as ztunnel
   * does: one bad resource does not keep the others out.
   */
  nack(res: DeltaDiscoveryResponse, rejected: readonly string[], message: string): void {
    this.apply(res, rejected);
    this.send({
      typeUrl: res.typeUrl,
      responseNonce: res.nonce,
      errorDetail: create(StatusSchema, { code: 3, message }),
    });
  }

  /** What the client holds for a type. */
  held(typeUrl: string): ReadonlyMap<string, HeldResource> {
    return this.#held.get(typeUrl) ?? new Map();
  }

  /** name → version for a reconnect's `initial_resource_versions`. */
  versions(typeUrl: string): Record<string, string> {
    return Object.fromEntries([...this.held(typeUrl)].map(([n, r]) => [n, r.version]));
  }

  /** Carries held resources over to a new client, as a reconnecting proxy keeps its state. */
  adoptHeld(from: DeltaXdsClient): void {
    for (const [t, m] of from.#held) this.#held.set(t, new Map(m));
  }

  /** Stops reading responses, so HTTP/2 flow control pushes back on the server. */
  pause(): void {
    this.#call.pause();
  }

  resume(): void {
    this.#call.resume();
  }

  /** Half-closes the stream (the server then ends it OK). */
  end(): void {
    this.#call.end();
  }

  /** Cancels the stream and closes the channel. */
  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}
