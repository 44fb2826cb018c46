import { errorMessage, MeshError } from '@ambient/common/errors';
import type { ControlPlane, Node } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import type { Logger } from '@ambient/common/log';
import { type ServerDuplexStream, status } from '@grpc/grpc-js';
import {
  authenticationRequestOf,
  callerIdentity,
  checkProxyIdentity,
  type XdsAuthenticator,
  type XdsCaller,
} from './authorize.ts';
import type { NackRecord } from './delta-watch.ts';
import { grpcStatusOf, XdsError } from './errors.ts';
import type { WildcardSnapshot } from './generators.ts';
import type { XdsMetrics } from './metrics.ts';
import { type ProxyNode, parseProxyNode } from './node.ts';
import type { PushBatch } from './push-queue.ts';
import type { ResourceSource } from './resources.ts';

/** What a connection needs from its server. */
export interface ConnectionContext {
  readonly source: ResourceSource;
  readonly metrics: XdsMetrics;
  readonly log: Logger;
  /** Undefined on a listener that does not authenticate (upstream plaintext 15010). */
  readonly authenticator: XdsAuthenticator | undefined;
  readonly identityCheck: boolean;
  readonly controlPlane: ControlPlane | undefined;
  readonly draining: boolean;
  /** The current `system_version_info`. */
  systemVersion(): string;
  /** The shared full push of a fresh wildcard watch of a served type, as the source is now. */
  wildcardSnapshot(typeUrl: string): WildcardSnapshot;
  /** Whether the source serves the type (otherwise it is answered as empty). */
  serves(typeUrl: string): boolean;
  connectionId(node: ProxyNode): string;
  register(conn: XdsConnection): void;
  unregister(conn: XdsConnection): void;
}

/** Per-type state of a connection, as {@link XdsServer.debugState} reports it. */
export interface XdsTypeDebug {
  readonly typeUrl: string;
  readonly wildcard: boolean;
  /** Explicitly subscribed names. */
  readonly names: readonly string[];
  readonly lastNonceSent?: string;
  readonly lastAckedNonce?: string;
  readonly lastNack?: {
    readonly nonce: string;
    readonly message: string;
    readonly code: number;
    readonly at: string;
  };
  readonly nacks: number;
  readonly responsesSent: number;
  readonly resourcesSent: number;
  /** Resources the proxy confirmed holding (delta only). */
  readonly resourcesAcked?: number;
  /** The version last ACKed (state of the world only). */
  readonly ackedVersion?: string;
  readonly lastPushAt?: string;
}

/** One connected proxy, as {@link XdsServer.debugState} reports it. */
export interface XdsConnectionDebug {
  readonly id: string;
  readonly variant: 'delta' | 'sotw';
  readonly peer: string;
  readonly proxyType: string;
  readonly nodeId: string;
  readonly node: {
    readonly ipAddresses: readonly string[];
    readonly namespace: string;
    readonly name?: string;
    readonly nodeName?: string;
    readonly clusterId?: string;
    readonly serviceAccount?: string;
    readonly cluster: string;
  };
  /** The authenticated SPIFFE identity; absent on a listener that does not authenticate. */
  readonly identity?: string;
  readonly connectedAt: string;
  readonly types: readonly XdsTypeDebug[];
}

interface XdsRequestBase {
  readonly node?: Node | undefined;
  readonly typeUrl: string;
}

/** The debug form of a NACK record. */
export function nackDebug(n: NackRecord): NonNullable<XdsTypeDebug['lastNack']> {
  return { nonce: n.nonce, message: n.message, code: n.code, at: new Date(n.at).toISOString() };
}

/**
 * One ADS stream: authentication, the node handshake on the first request, identity check,
 * request ordering, backpressure, and the end of the stream. Subclasses implement the protocol
 * variant (delta or state of the world).
 *
 * Requests are handled strictly in order: the first waits for authentication, and later ones
 * queue behind it, so an ACK can never overtake the request that created its type's state.
 */
export abstract class XdsConnection<Req extends XdsRequestBase = XdsRequestBase, Res = unknown> {
  abstract readonly variant: 'delta' | 'sotw';
  protected readonly ctx: ConnectionContext;
  protected readonly call: ServerDuplexStream<Req, Res>;
  protected log: Logger;
  readonly peer: string;
  readonly connectedAt = Date.now();
  #id: string | undefined;
  #node: ProxyNode | undefined;
  #caller: XdsCaller | undefined;
  #auth: Promise<XdsCaller | undefined>;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #registered = false;
  #blocked = false;

  constructor(ctx: ConnectionContext, call: ServerDuplexStream<Req, Res>) {
    this.ctx = ctx;
    this.call = call;
    this.peer = call.getPeer();
    this.log = ctx.log.child({ peer: this.peer });
    // Authenticate at once, like upstream's Stream(): bad credentials end the stream without
    // waiting for a request.
    const authenticator = ctx.authenticator;
    this.#auth = authenticator
      ? authenticator.authenticate(authenticationRequestOf(call)).then(
          (caller) => caller,
          (err: unknown) => {
            // The reason is logged (as the cause) but not told to the caller, which could
            // otherwise probe which credentials almost work.
            throw new XdsError('UNAUTHENTICATED', 'authentication failed', { cause: err });
          },
        )
      : Promise.resolve(undefined);
    this.#auth.catch((err: unknown) => this.fail(err));
  }

  /** `<proxyId>-<n>`, set once the node is known. */
  get id(): string {
    return this.#id ?? `unidentified@${this.peer}`;
  }

  get node(): ProxyNode | undefined {
    return this.#node;
  }

  get caller(): XdsCaller | undefined {
    return this.#caller;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True while the stream's buffer is full; writes resume on `drain`. */
  protected get blocked(): boolean {
    return this.#blocked;
  }

  /** Wires the stream's events; call once. */
  start(): void {
    if (this.ctx.draining) {
      this.fail(new XdsError('SHUTTING_DOWN', 'istiod is shutting down; reconnect to another instance'));
      return;
    }
    this.call.on('data', (req: Req) => {
      this.#chain = this.#chain.then(() => this.#handle(req)).catch((err: unknown) => this.fail(err));
    });
    // The proxy half-closed: it wants no more responses.
    this.call.on('end', () => this.end(status.OK, 'client closed the stream'));
    this.call.on('cancelled', () => this.#cleanup('cancelled by client'));
    this.call.on('error', (err: unknown) => this.#cleanup(`stream error: ${errorMessage(err)}`));
    this.call.on('close', () => this.#cleanup('closed'));
    this.call.on('drain', () => {
      this.#blocked = false;
      if (!this.#closed) this.onDrain();
    });
  }

  async #handle(req: Req): Promise<void> {
    if (this.#closed) return;
    if (!this.#node) {
      // 1. the node identifies the proxy; 2. wait for authentication; 3. the caller must be
      // allowed to be that proxy; 4. only then is the proxy counted as connected.
      const node = parseProxyNode(req.node);
      const caller = await this.#auth;
      if (this.#closed) return;
      if (caller && this.ctx.identityCheck) checkProxyIdentity(caller, node);
      this.#node = node;
      this.#caller = caller;
      this.#id = this.ctx.connectionId(node);
      this.log = this.ctx.log.child({ conn: this.#id });
      this.ctx.register(this);
      this.#registered = true;
      this.log.info(
        {
          node: node.id,
          proxyType: node.type,
          identity: caller ? callerIdentity(caller) : undefined,
          peer: this.peer,
          variant: this.variant,
        },
        'proxy connected',
      );
    }
    if (req.typeUrl === '') {
      throw new XdsError('TYPE_URL_MISSING', 'a request carries no type_url; ADS needs it on every request');
    }
    this.onRequest(req);
  }

  /** Handles one request after the handshake; synchronous so state changes never interleave. */
  protected abstract onRequest(req: Req): void;

  /** Pushes a debounced batch to this connection. */
  abstract push(batch: PushBatch): void;

  /** The stream's buffer drained; deferred pushes may go now. */
  protected onDrain(): void {}

  abstract typeDebug(): XdsTypeDebug[];

  /** Writes one response; `onWritten` runs once it reached the transport. */
  protected write(res: Res, onWritten?: () => void): void {
    const ok = this.call.write(res, (err?: Error | null) => {
      if (!err) onWritten?.();
    });
    if (!ok) this.#blocked = true;
  }

  /** Ends the stream with `err`'s status (INTERNAL for anything that is not an XdsError). */
  fail(err: unknown): void {
    if (this.#closed) return;
    const code = grpcStatusOf(err);
    if (!this.#registered) this.ctx.metrics.rejectedStreams.inc({ reason: reasonLabel(code) });
    const fields = { err: err instanceof MeshError ? err.toJSON() : errorMessage(err), code: status[code] };
    if (code === status.INTERNAL) this.log.error(fields, 'xds stream failed');
    else this.log.warn(fields, this.#registered ? 'xds stream ended with an error' : 'xds stream refused');
    // An unexpected error's message is for istiod's log, not for the proxy.
    this.end(code, code === status.INTERNAL ? 'internal error' : errorMessage(err));
  }

  /** Ends the stream with a status; idempotent. */
  end(code: status, details: string): void {
    if (this.#closed) return;
    this.#cleanup(details);
    if (code === status.OK) this.call.end();
    else this.call.emit('error', { code, details });
  }

  #cleanup(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#registered) {
      this.#registered = false;
      this.ctx.unregister(this);
      this.log.info({ reason }, 'proxy disconnected');
    }
  }

  debug(): XdsConnectionDebug | undefined {
    const node = this.#node;
    if (!node) return undefined;
    const md = node.metadata;
    return {
      id: this.id,
      variant: this.variant,
      peer: this.peer,
      proxyType: node.type,
      nodeId: node.id,
      node: {
        ipAddresses: node.ipAddresses,
        namespace: node.configNamespace,
        ...(md.name !== undefined && { name: md.name }),
        ...(md.nodeName !== undefined && { nodeName: md.nodeName }),
        ...(md.clusterId !== undefined && { clusterId: md.clusterId }),
        ...(md.serviceAccount !== undefined && { serviceAccount: md.serviceAccount }),
        cluster: node.cluster,
      },
      ...(this.#caller && { identity: callerIdentity(this.#caller) }),
      connectedAt: new Date(this.connectedAt).toISOString(),
      types: this.typeDebug(),
    };
  }
}

function reasonLabel(code: status): string {
  switch (code) {
    case status.UNAUTHENTICATED:
      return 'unauthenticated';
    case status.PERMISSION_DENIED:
      return 'permission_denied';
    case status.INVALID_ARGUMENT:
      return 'invalid_argument';
    case status.UNAVAILABLE:
      return 'unavailable';
    default:
      return 'internal';
  }
}
