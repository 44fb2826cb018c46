import { readFile } from 'node:fs/promises';
import {
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  connectivityState,
  credentials,
  Metadata,
} from '@grpc/grpc-js';
import { errorMessage } from '../errors.ts';
import { ControlPlaneError } from './errors.ts';

/**
 * The channel settings ztunnel uses towards istiod (`ztunnel:src/tls/control.rs`; spec §3.1):
 * HTTP/2 keepalive pings every 30 s with a 10 s timeout, a 5 s connect timeout, and a 200 MiB
 * decode limit because the first WDS response carries the whole mesh.
 */
export const CONTROL_PLANE_DEFAULTS = {
  connectTimeoutMs: 5_000,
  keepaliveTimeMs: 30_000,
  keepaliveTimeoutMs: 10_000,
  maxReceiveMessageBytes: 200 * 1024 * 1024,
  /** HTTP/2 receive window of the control channel (stream and connection). */
  flowControlWindowBytes: 4 * 1024 * 1024,
} as const;

/** Reads the bearer token; called on every (re)connect and every CA request. Undefined sends none. */
export type BearerTokenSource = () => string | undefined | Promise<string | undefined>;

/** PEM material, or a function read each time a channel is built (a rotated file is picked up). */
export type PemSource = string | Buffer | (() => string | Buffer | Promise<string | Buffer>);

/** TLS towards istiod (port 15012). */
export interface ControlPlaneTls {
  /** Roots that verify istiod's serving certificate (`XDS_ROOT_CA` / `CA_ROOT_CA`, `root-cert.pem`). */
  readonly rootCert: PemSource;
  /** A client certificate to present (optional; istiod authenticates by the bearer token). */
  readonly clientCertificate?: { readonly key: PemSource; readonly certChain: PemSource };
  /**
   * The name istiod's certificate must carry when it differs from the address host
   * (`ALT_XDS_HOSTNAME` / `ALT_CA_HOSTNAME`, or an IP address in tests).
   */
  readonly serverName?: string;
}

/** How the data plane reaches istiod: shared by the xDS client and the CA client. */
export interface ControlPlaneOptions {
  /** `host:port`, e.g. `istiod.istio-system.svc:15012`. */
  readonly address: string;
  /** TLS settings; absent means plaintext (istiod's 15010, local tests). */
  readonly tls?: ControlPlaneTls;
  /** The projected service-account JWT, sent as `authorization: Bearer <token>` (spec §3.2). */
  readonly token?: BearerTokenSource;
  /** Sent as the `clusterid` header on every call (`ISTIO_META_CLUSTER_ID`, default `Kubernetes`). */
  readonly clusterId: string;
  /** Extra headers (`XDS_HEADER_<name>` / `CA_HEADER_<name>`). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Connect timeout; default 5 s. */
  readonly connectTimeoutMs?: number;
}

const RESERVED_HEADERS = new Set(['authorization', 'clusterid']);

/**
 * Checks what can be checked before connecting: a non-empty address and headers gRPC accepts.
 * Throws ControlPlaneError `OPTIONS_INVALID` naming the value.
 */
export function validateControlPlaneOptions(options: ControlPlaneOptions, what: string): void {
  if (options.address.trim() === '') {
    throw new ControlPlaneError('OPTIONS_INVALID', `${what} address is empty`);
  }
  const probe = new Metadata();
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new ControlPlaneError(
        'OPTIONS_INVALID',
        `${what} header ${JSON.stringify(name)} is set by the client itself; it cannot be overridden`,
      );
    }
    try {
      probe.set(name, value);
    } catch (err) {
      throw new ControlPlaneError(
        'OPTIONS_INVALID',
        `${what} header ${JSON.stringify(name)}=${JSON.stringify(value)} is not a valid gRPC header: ${errorMessage(err)}`,
        { cause: err },
      );
    }
  }
}

/** A token source that reads a file on every call (a projected token is rotated in place). */
export function bearerTokenFile(path: string): BearerTokenSource {
  return async () => {
    try {
      const token = (await readFile(path, 'utf8')).trim();
      return token === '' ? undefined : token;
    } catch (err) {
      throw new ControlPlaneError(
        'TOKEN_UNAVAILABLE',
        `cannot read token file ${path}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
  };
}

async function readPem(source: PemSource, what: string): Promise<Buffer> {
  try {
    const value = typeof source === 'function' ? await source() : source;
    return Buffer.isBuffer(value) ? value : Buffer.from(value);
  } catch (err) {
    throw new ControlPlaneError('ROOT_CERT_UNAVAILABLE', `cannot read the ${what}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** Credentials for a new channel: TLS (reading the PEM sources now) or plaintext. */
export async function controlPlaneCredentials(tls: ControlPlaneTls | undefined): Promise<ChannelCredentials> {
  if (!tls) return credentials.createInsecure();
  const root = await readPem(tls.rootCert, 'control plane root certificate');
  const client = tls.clientCertificate;
  if (!client) return credentials.createSsl(root);
  const [key, chain] = await Promise.all([
    readPem(client.key, 'control plane client key'),
    readPem(client.certChain, 'control plane client certificate'),
  ]);
  return credentials.createSsl(root, key, chain);
}

/** grpc-js channel options for a connection to istiod. */
export function controlPlaneChannelOptions(options: ControlPlaneOptions): ChannelOptions {
  const d = CONTROL_PLANE_DEFAULTS;
  return {
    'grpc.keepalive_time_ms': d.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': d.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_receive_message_length': d.maxReceiveMessageBytes,
    'grpc.max_send_message_length': -1,
    // Each client owns its subchannels: a shared, globally pooled subchannel would carry another
    // client's reconnect backoff (up to 120 s in grpc-js) into ours.
    'grpc.use_local_subchannel_pool': 1,
    // grpc-js's default 64 KiB window makes a multi-megabyte initial push cost one round trip
    // per 64 KiB; ztunnel's control channel uses its HBONE windows (4 MiB per stream).
    'grpc-node.flow_control_window': d.flowControlWindowBytes,
    ...(options.tls?.serverName !== undefined && {
      'grpc.ssl_target_name_override': options.tls.serverName,
      'grpc.default_authority': options.tls.serverName,
    }),
  };
}

/**
 * The headers of one call: `authorization: Bearer <token>` (read now), `clusterid`, and the extra
 * headers. Throws ControlPlaneError `TOKEN_UNAVAILABLE` when the token source fails.
 */
export async function controlPlaneMetadata(options: ControlPlaneOptions): Promise<Metadata> {
  const md = new Metadata();
  for (const [name, value] of Object.entries(options.headers ?? {})) md.set(name, value);
  let token: string | undefined;
  try {
    token = await options.token?.();
  } catch (err) {
    if (err instanceof ControlPlaneError) throw err;
    throw new ControlPlaneError('TOKEN_UNAVAILABLE', `cannot read the bearer token: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  md.set('clusterid', options.clusterId);
  return md;
}

/**
 * Resolves once the client's channel is connected. Fails fast, like ztunnel's tonic connector,
 * when the attempt fails (refused, reset, TLS handshake), instead of letting grpc-js retry
 * internally; rejects at the connect timeout when nothing answers at all. Both reject with
 * ControlPlaneError `CONNECT_FAILED`, so the caller's own backoff decides when to try again.
 */
export function waitForChannelReady(client: Client, address: string, timeoutMs: number): Promise<void> {
  const channel = client.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY) {
        resolve();
        return;
      }
      if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN) {
        reject(
          new ControlPlaneError(
            'CONNECT_FAILED',
            state === connectivityState.SHUTDOWN
              ? `the channel to ${address} was closed`
              : `cannot connect to ${address} (refused, reset, or the TLS handshake failed)`,
          ),
        );
        return;
      }
      channel.watchConnectivityState(state, deadline, (err) => {
        if (err) {
          reject(
            new ControlPlaneError('CONNECT_FAILED', `no connection to ${address} within ${timeoutMs} ms`),
          );
        } else {
          check();
        }
      });
    };
    check();
  });
}
