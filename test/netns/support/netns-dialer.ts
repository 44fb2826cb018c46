import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { type ConnectOptions, connectInNetns } from '@ambient/native';
import type { HboneDialer } from './hbone-api.ts';

/**
 * A byte Duplex over a TCP socket that is still being connected by the addon. Writes made before
 * the connect completes (the TLS ClientHello) wait for it; a failed connect destroys the stream
 * with the addon's NativeError.
 *
 * It exists because `HboneDialer` must return a `tls.TLSSocket` synchronously while
 * `connectInNetns` resolves only once the non-blocking connect inside the netns has completed.
 */
class ConnectingSocket extends Duplex {
  #socket: Socket | undefined;
  readonly #waiting: (() => void)[] = [];

  constructor(connecting: Promise<Socket>) {
    super({ allowHalfOpen: false });
    connecting.then(
      (socket) => this.#adopt(socket),
      (err: Error) => this.destroy(err),
    );
  }

  #adopt(socket: Socket): void {
    if (this.destroyed) {
      socket.destroy();
      return;
    }
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
    for (const go of this.#waiting.splice(0)) go();
  }

  #whenConnected(go: (socket: Socket) => void): void {
    const socket = this.#socket;
    if (socket !== undefined) go(socket);
    else this.#waiting.push(() => go(this.#socket as Socket));
  }

  override _read(): void {
    if (this.#socket?.isPaused()) this.#socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#whenConnected((socket) => {
      if (socket.write(chunk)) callback();
      else socket.once('drain', () => callback());
    });
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#whenConnected((socket) => socket.end(() => callback()));
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#socket?.destroy();
    callback(err);
  }
}

/** An {@link HboneDialer} whose TCP sockets live in one network namespace, plus what it dialled. */
export interface NetnsDialer {
  readonly dial: HboneDialer;
  /** Every dial made, in order: the destination and the source it bound. */
  readonly dials: readonly { readonly address: string; readonly port: number; readonly source?: string }[];
}

/**
 * Dials HBONE peers from inside the network namespace `netnsFd`, as ztunnel does for a pod: the
 * TCP socket is created there by the addon (bound to the pool's source IP, marked with `mark`),
 * and TLS runs over it in this process.
 */
export function netnsDialer(
  netnsFd: number,
  options: { mark?: number; timeoutMs?: number } = {},
): NetnsDialer {
  const dials: { address: string; port: number; source?: string }[] = [];
  const dial: HboneDialer = (tlsOptions) => {
    // The pool passes the source IP as `localAddress`, which tls.connect hands on to net.connect.
    const {
      host: address,
      port,
      localAddress,
    } = tlsOptions as tls.ConnectionOptions & { localAddress?: string };
    if (address === undefined || port === undefined) {
      throw new TypeError(`hbone dial needs host and port, got ${String(address)}:${String(port)}`);
    }
    dials.push({ address, port, ...(localAddress === undefined ? {} : { source: localAddress }) });
    const connect: ConnectOptions = {
      netnsFd,
      address,
      port,
      timeoutMs: options.timeoutMs ?? 10_000,
      ...(options.mark === undefined ? {} : { mark: options.mark }),
      ...(localAddress === undefined ? {} : { source: { address: localAddress } }),
    };
    return tls.connect({ ...tlsOptions, socket: new ConnectingSocket(connectInNetns(connect)) });
  };
  return { dial, dials };
}
