import { NodeSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import {
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  type DiscoveryResponse,
  DiscoveryResponseSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { type Status, StatusSchema } from '@ambient/common/gen/google/rpc/status_pb';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Client, type ClientDuplexStream, credentials, type StatusObject } from '@grpc/grpc-js';

const SOTW_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';

/** A state-of-the-world ADS client for tests, from the protocol and generated messages only. */
export class SotwXdsClient {
  readonly #client: Client;
  readonly #call: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  readonly #nodeId: string;
  readonly #metadata: Readonly<Record<string, string>>;
  readonly #queue: DiscoveryResponse[] = [];
  #waiter: (() => void) | undefined;
  #nodeSent = false;
  #ended: StatusObject | undefined;
  readonly status: Promise<StatusObject>;

  constructor(address: string, nodeId: string, metadata: Readonly<Record<string, string>> = {}) {
    this.#nodeId = nodeId;
    this.#metadata = metadata;
    this.#client = new Client(address, credentials.createInsecure());
    this.#call = this.#client.makeBidiStreamRequest(
      SOTW_METHOD,
      (req: DiscoveryRequest) => Buffer.from(toBinary(DiscoveryRequestSchema, req)),
      (buf: Buffer) => fromBinary(DiscoveryResponseSchema, buf),
    );
    this.#call.on('data', (res: DiscoveryResponse) => {
      this.#queue.push(res);
      this.#wake();
    });
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

  send(init: {
    typeUrl: string;
    resourceNames?: string[];
    versionInfo?: string;
    responseNonce?: string;
    errorDetail?: Status;
  }): void {
    const req = create(DiscoveryRequestSchema, init);
    if (!this.#nodeSent) {
      this.#nodeSent = true;
      req.node = create(NodeSchema, { id: this.#nodeId, metadata: { ...this.#metadata } });
    }
    this.#call.write(req);
  }

  ack(res: DiscoveryResponse, resourceNames: string[] = []): void {
    this.send({
      typeUrl: res.typeUrl,
      versionInfo: res.versionInfo,
      responseNonce: res.nonce,
      resourceNames,
    });
  }

  nack(res: DiscoveryResponse, message: string, resourceNames: string[] = []): void {
    this.send({
      typeUrl: res.typeUrl,
      responseNonce: res.nonce,
      resourceNames,
      errorDetail: create(StatusSchema, { code: 3, message }),
    });
  }

  async next(timeoutMs = 3000): Promise<DiscoveryResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = this.#queue.shift();
      if (res) return res;
      if (this.#ended) throw new Error(`stream ended (${this.#ended.code} ${this.#ended.details})`);
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

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}
