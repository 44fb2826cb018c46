import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { connectHbone, type HboneClientConnection, type HboneConnectOptions } from '../hbone/client.ts';
import {
  type HboneRequest,
  type HboneRequestHandler,
  HboneServer,
  type HboneServerOptions,
} from '../hbone/server.ts';
import type { HboneTunnel } from '../hbone/tunnel.ts';
import { type Identity, makeIdentity } from '../identity/identity.ts';
import type { TlsError } from '../tls/errors.ts';
import type { TlsCredentials } from '../tls/secure-context.ts';
import { type IssueOptions, TestCa, tlsCredentials } from './pki.ts';

/** A trust domain with a server and a client workload, as most HBONE tests need. */
export interface HbonePki {
  readonly ca: TestCa;
  readonly serverIdentity: Identity;
  readonly clientIdentity: Identity;
  readonly server: TlsCredentials;
  readonly client: TlsCredentials;
  /** Issues more credentials from the same CA. */
  issue(options: IssueOptions): Promise<TlsCredentials>;
}

export async function hbonePki(trustDomain = 'td'): Promise<HbonePki> {
  const ca = await TestCa.create();
  const serverIdentity = makeIdentity(trustDomain, 'ns', 'server');
  const clientIdentity = makeIdentity(trustDomain, 'ns', 'client');
  const issue = async (options: IssueOptions): Promise<TlsCredentials> =>
    tlsCredentials(await ca.issue(options));
  return {
    ca,
    serverIdentity,
    clientIdentity,
    server: await issue({ identity: serverIdentity }),
    client: await issue({ identity: clientIdentity }),
    issue,
  };
}

/** A running HboneServer on 127.0.0.1 with what it saw, for assertions. */
export interface RunningHboneServer extends AsyncDisposable {
  readonly server: HboneServer;
  readonly port: number;
  readonly requests: HboneRequest[];
  readonly rejections: TlsError[];
  /** Dials it as `credentials` (default: the fixture client), expecting `expected` (default: the server). */
  connect(options?: Partial<HboneConnectOptions>): Promise<HboneClientConnection>;
}

/** Accepts and echoes every byte back, ending its side when the client ends (half-close). */
export const echoHandler: HboneRequestHandler = (request) => {
  const tunnel = request.accept();
  tunnel.on('error', () => {});
  tunnel.pipe(tunnel);
};

/** Accepts and discards everything, keeping the tunnel open until the client ends or resets it. */
export const sinkHandler: HboneRequestHandler = (request) => {
  const tunnel = request.accept();
  tunnel.on('error', () => {});
  tunnel.on('end', () => tunnel.end());
  tunnel.resume();
};

export async function startHboneServer(
  pki: HbonePki,
  options: Partial<HboneServerOptions> = {},
): Promise<RunningHboneServer> {
  const requests: HboneRequest[] = [];
  const rejections: TlsError[] = [];
  const handler = options.handler ?? echoHandler;
  const server = new HboneServer({
    credentials: options.credentials ?? pki.server,
    settings: options.settings,
    ...(options.writeBudget ? { writeBudget: options.writeBudget } : {}),
    handler: (request) => {
      requests.push(request);
      return handler(request);
    },
  });
  server.on('connectionRejected', (err) => rejections.push(err));
  const { port } = (await server.listen({ port: 0, host: '127.0.0.1' })) as AddressInfo;
  return {
    server,
    port,
    requests,
    rejections,
    connect: (o = {}) =>
      connectHbone({
        address: '127.0.0.1',
        port,
        credentials: pki.client,
        expectedIdentities: [pki.serverIdentity],
        ...o,
      }),
    async [Symbol.asyncDispose]() {
      server.destroy();
    },
  };
}

/**
 * Reads a stream to its end without destroying it afterwards (async iteration would, which on a
 * Duplex also kills the writable side: no half-close).
 */
export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onError = (err: Error): void => reject(err);
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('error', onError);
    stream.once('end', () => {
      stream.off('error', onError);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** Resolves when the tunnel has closed, with the error it closed with (if any). */
export function closed(tunnel: HboneTunnel): Promise<Error | undefined> {
  return new Promise((resolve) => {
    let error: Error | undefined;
    tunnel.on('error', (e) => {
      error ??= e;
    });
    if (tunnel.closed) resolve(error ?? tunnel.errored ?? undefined);
    else tunnel.once('close', () => resolve(error ?? tunnel.errored ?? undefined));
  });
}
