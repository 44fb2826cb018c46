/**
 * The benchmark's proxies: N delta xDS clients in a process of their own, so decoding what istiod
 * sends does not take CPU from istiod's process. Driven over the IPC channel by `istiod.ts`;
 * every timestamp is taken here, on receipt, as `performance.timeOrigin + performance.now()`
 * (wall-clock milliseconds with sub-millisecond resolution, comparable across the two processes).
 */
import { NodeSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import {
  type DeltaDiscoveryRequest,
  DeltaDiscoveryRequestSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { applyMallocTuning } from '@ambient/common/malloc-tuning';
import { CONTROL_PLANE_DEFAULTS } from '@ambient/common/xds/client';
import { create, toBinary } from '@bufbuild/protobuf';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { Client, type ClientDuplexStream, credentials, Metadata } from '@grpc/grpc-js';

const DELTA_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';

/** Messages from the orchestrator. */
export type ClientsCommand =
  | {
      readonly type: 'connect';
      readonly address: string;
      readonly rootPem: string;
      readonly tokens: readonly string[];
      /** Resources each client must hold per type before its initial state counts as complete. */
      readonly expected: Readonly<Record<string, number>>;
    }
  /** Report when every client has received a response carrying `name`. */
  | { readonly type: 'watch'; readonly name: string }
  | { readonly type: 'close' };

/** Messages to the orchestrator. */
export type ClientsReport =
  | { readonly type: 'ready' }
  | {
      readonly type: 'full';
      readonly connectAt: number;
      readonly completedAt: readonly number[];
      /** CPU this process spent from connecting until the last client was complete. */
      readonly cpuMs: number;
    }
  | { readonly type: 'watching'; readonly name: string }
  | { readonly type: 'seen'; readonly name: string; readonly at: readonly number[] }
  | { readonly type: 'failed'; readonly error: string };

// As our ztunnel's main does (and upstream ztunnel gets the same from jemalloc).
applyMallocTuning();

const now = (): number => performance.timeOrigin + performance.now();

/** What a client reads of a DeltaDiscoveryResponse. */
interface Received {
  readonly typeUrl: string;
  readonly nonce: string;
  readonly names: string[];
  readonly removed: string[];
}

/**
 * Reads a DeltaDiscoveryResponse's type, nonce, resource names and removals from the wire,
 * skipping the resource bodies. A ztunnel decodes those in Rust on its own node; decoding 550,000
 * of them with protobuf-es here would make the clients, not istiod, what the numbers measure.
 */
function decodeResponse(buf: Uint8Array): Received {
  const r = new BinaryReader(buf);
  const out: Received = { typeUrl: '', nonce: '', names: [], removed: [] };
  let typeUrl = '';
  let nonce = '';
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 2 && wire === WireType.LengthDelimited) {
      // envoy.service.discovery.v3.Resource: name = 3.
      const res = new BinaryReader(r.bytes());
      while (res.pos < res.len) {
        const [f, w] = res.tag();
        if (f === 3 && w === WireType.LengthDelimited) out.names.push(res.string());
        else res.skip(w, f);
      }
    } else if (field === 4 && wire === WireType.LengthDelimited) typeUrl = r.string();
    else if (field === 5 && wire === WireType.LengthDelimited) nonce = r.string();
    else if (field === 6 && wire === WireType.LengthDelimited) out.removed.push(r.string());
    else r.skip(wire, field);
  }
  return { ...out, typeUrl, nonce };
}

function send(report: ClientsReport): void {
  process.send?.(report);
}

/** One ztunnel-shaped delta ADS stream: wildcard on both types, ACKs everything, counts what it holds. */
class BenchClient {
  readonly #client: Client;
  readonly #call: ClientDuplexStream<DeltaDiscoveryRequest, Received>;
  readonly #held = new Map<string, Set<string>>();
  readonly #expected: Readonly<Record<string, number>>;
  #nodeSent = false;
  completedAt: number | undefined;
  onResponse: ((res: Received, at: number) => void) | undefined;
  onComplete: (() => void) | undefined;

  constructor(index: number, cmd: Extract<ClientsCommand, { type: 'connect' }>) {
    this.#expected = cmd.expected;
    // Each client gets its own channel and TCP connection, as 50 ztunnels on 50 nodes would:
    // grpc-js otherwise shares one subchannel between clients with equal options.
    this.#client = new Client(cmd.address, credentials.createSsl(Buffer.from(cmd.rootPem)), {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': -1,
      // What ztunnel's control channel (and ours, CONTROL_PLANE_DEFAULTS) uses: grpc-js's 64 KiB
      // default would make the bench measure round trips per 64 KiB instead of istiod.
      'grpc-node.flow_control_window': CONTROL_PLANE_DEFAULTS.flowControlWindowBytes,
    });
    const md = new Metadata();
    md.set('authorization', `Bearer ${cmd.tokens[index % cmd.tokens.length]}`);
    this.#call = this.#client.makeBidiStreamRequest(
      DELTA_METHOD,
      (req: DeltaDiscoveryRequest) => Buffer.from(toBinary(DeltaDiscoveryRequestSchema, req)),
      (buf: Buffer) => decodeResponse(buf),
      md,
    );
    this.#call.on('data', (res: Received) => this.#receive(res, index));
    this.#call.on('error', (err: Error) => {
      if (!closing) send({ type: 'failed', error: `client ${index}: ${err.message}` });
    });
    for (const typeUrl of Object.keys(cmd.expected)) this.#send(index, { typeUrl });
  }

  #send(index: number, init: { typeUrl: string; responseNonce?: string }): void {
    const req = create(DeltaDiscoveryRequestSchema, init);
    if (!this.#nodeSent) {
      this.#nodeSent = true;
      const id = String(index).padStart(3, '0');
      req.node = create(NodeSchema, {
        id: `ztunnel~10.255.0.${index + 1}~ztunnel-${id}.istio-system~istio-system.svc.cluster.local`,
        cluster: 'Kubernetes',
        metadata: { NAME: `ztunnel-${id}`, NAMESPACE: 'istio-system', NODE_NAME: `node-${id}` },
      });
    }
    this.#call.write(req);
  }

  #receive(res: Received, index: number): void {
    const at = now();
    let held = this.#held.get(res.typeUrl);
    if (!held) {
      held = new Set();
      this.#held.set(res.typeUrl, held);
    }
    for (const n of res.names) held.add(n);
    for (const n of res.removed) held.delete(n);
    this.#send(index, { typeUrl: res.typeUrl, responseNonce: res.nonce });
    this.onResponse?.(res, at);
    if (this.completedAt === undefined && this.#complete()) {
      this.completedAt = at;
      this.onComplete?.();
    }
  }

  #complete(): boolean {
    return Object.entries(this.#expected).every(([t, n]) => (this.#held.get(t)?.size ?? 0) >= n);
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

let clients: BenchClient[] = [];
let closing = false;

process.on('message', (cmd: ClientsCommand) => {
  switch (cmd.type) {
    case 'connect': {
      const count = cmd.tokens.length;
      const connectAt = now();
      const cpuAtConnect = process.cpuUsage();
      let complete = 0;
      clients = Array.from({ length: count }, (_, i) => new BenchClient(i, cmd));
      for (const c of clients) {
        c.onComplete = () => {
          if (++complete === count) {
            const cpu = process.cpuUsage(cpuAtConnect);
            send({
              type: 'full',
              connectAt,
              completedAt: clients.map((x) => x.completedAt ?? Number.NaN),
              cpuMs: (cpu.user + cpu.system) / 1000,
            });
          }
        };
      }
      break;
    }
    case 'watch': {
      const at: number[] = new Array(clients.length).fill(Number.NaN);
      let remaining = clients.length;
      clients.forEach((c, i) => {
        c.onResponse = (res, t) => {
          if (!Number.isNaN(at[i] as number) || !res.names.includes(cmd.name)) return;
          at[i] = t;
          if (--remaining === 0) {
            for (const x of clients) x.onResponse = undefined;
            send({ type: 'seen', name: cmd.name, at });
          }
        };
      });
      send({ type: 'watching', name: cmd.name });
      break;
    }
    case 'close':
      closing = true;
      for (const c of clients) c.close();
      process.disconnect?.();
      break;
  }
});

send({ type: 'ready' });
