import { Logging } from '@ambient/common/log';
import { ServerCredentials } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { XdsServer, type XdsServerOptions } from '../../src/xds/server.ts';
import { DeltaXdsClient, type DeltaXdsClientOptions } from './delta-xds-client.ts';
import type { MemoryResourceSource } from './memory-resource-source.ts';

/** A ztunnel's node as ztunnel builds it (spec §3.2). */
export function ztunnelNode(
  pod = 'ztunnel-a',
  ip = '10.0.0.1',
): Pick<DeltaXdsClientOptions, 'nodeId' | 'metadata'> {
  return {
    nodeId: `ztunnel~${ip}~${pod}.istio-system~istio-system.svc.cluster.local`,
    metadata: {
      NAME: pod,
      NAMESPACE: 'istio-system',
      NODE_NAME: 'node-a',
      INSTANCE_IPS: ip,
      CLUSTER_ID: 'Kubernetes',
    },
  };
}

export interface Harness {
  readonly server: XdsServer;
  readonly registry: Registry;
  readonly address: string;
  readonly clients: DeltaXdsClient[];
  /** A client to this server; closed by {@link Harness.close}. */
  client(options?: Partial<DeltaXdsClientOptions>): DeltaXdsClient;
  /** Stops the server immediately and closes every client. */
  close(): Promise<void>;
}

/** Starts an XdsServer on 127.0.0.1:0, plaintext, with small debounce values. */
export async function startHarness(
  source: MemoryResourceSource,
  options: Partial<XdsServerOptions> & { readonly authenticate?: boolean } = {},
): Promise<Harness> {
  const registry = options.registry ?? new Registry();
  const { authenticate = false, ...rest } = options;
  const server = new XdsServer({
    source,
    registry,
    log: new Logging({ levels: 'off' }).logger('xds'),
    debounce: { quietMs: 20, maxDelayMs: 200 },
    listeners: [
      { host: '127.0.0.1', port: 0, credentials: ServerCredentials.createInsecure(), authenticate },
    ],
    ...rest,
  });
  await server.start();
  const port = server.addresses()[0]?.port;
  if (port === undefined) throw new Error('the xds server bound no listener');
  const address = `127.0.0.1:${port}`;
  const clients: DeltaXdsClient[] = [];
  return {
    server,
    registry,
    address,
    clients,
    client(o = {}) {
      const c = new DeltaXdsClient({ address, ...ztunnelNode(), ...o });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      const force = new AbortController();
      force.abort();
      await server.stop({ mode: 'immediate', force: force.signal, deadline: Date.now() });
    },
  };
}

/** Polls `cond` until it holds or `timeoutMs` passes. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
