import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { NativeError, toNativeError } from './errors.ts';

/** The raw exports of build/Release/ambient_native.node; only the wrappers in this directory use them. */
export interface NativeBinding {
  openNetns(path: string): number;
  isNetns(fd: number): boolean;
  netnsInode(fd: number): number;
  currentNetnsInode(): number;
  closeFd(fd: number): void;

  createListener(options: RawListenerOptions): { fd: number; transparent: boolean };
  PendingConnect: new (
    options: RawConnectOptions,
    callback: (err: Error | null, fd?: number) => void,
  ) => { cancel(): void };
  originalDst(fd: number): AddressInfo;
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  socketCookie(fd: number): bigint;
  setSendBufferSize(fd: number, bytes: number): number;
  tuneMalloc(mmapThreshold: number, trimThreshold: number, topPad: number): boolean;

  SeqpacketHandle: {
    listen(path: string, backlog: number): RawSeqpacketHandle;
    connect(path: string): RawSeqpacketHandle;
  };

  BpfObject: new (path: string) => RawBpfObject;
  pinnedMapSetSocket(path: string, key: number, socketFd: number): void;
}

export interface RawListenerOptions {
  netnsFd: number;
  address: string;
  port: number;
  backlog: number;
  mark: number;
  reusePort: boolean;
  /** 0 off, 1 best effort, 2 required. */
  transparent: 0 | 1 | 2;
  ipv6Only: boolean | undefined;
}

export interface RawConnectOptions {
  netnsFd: number;
  address: string;
  port: number;
  mark: number;
  sourceAddress: string | undefined;
  sourcePort: number;
  transparent: boolean;
  timeoutMs: number;
}

export interface RawSeqpacketHandle {
  readonly fd: number;
  startAccept(callback: (err: Error | null, handle?: RawSeqpacketHandle) => void): void;
  startRead(
    callback: (err: Error | null, data?: Buffer | null, fds?: number[]) => void,
    maxMessageSize: number,
    maxFds: number,
  ): void;
  stopRead(): void;
  /** True when sent at once; false when queued, and `callback` reports the outcome later. */
  write(data: Buffer, fds: number[], callback: (err: Error | null) => void): boolean;
  close(): void;
  setRef(ref: boolean): void;
}

export interface RawBpfObject {
  load(): void;
  programs(): { name: string; section: string }[];
  maps(): { name: string; type: number; keySize: number; valueSize: number; maxEntries: number }[];
  attachCgroup(program: string, cgroupFd: number): RawBpfLink;
  attachNetns(program: string, netnsFd: number): RawBpfLink;
  attachTc(
    program: string,
    options: { ifindex: number; egress: boolean; handle: number; priority: number; netnsFd: number },
  ): RawTcAttachment;
  mapLookup(map: string, key: Buffer): Buffer | undefined;
  mapUpdate(map: string, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(map: string, key: Buffer): boolean;
  pinMap(map: string, path: string): void;
  unpinMap(map: string, path: string): void;
  close(): void;
}

export interface RawBpfLink {
  pin(path: string): void;
  unpin(): void;
  detach(): void;
  close(): void;
}

export interface RawTcAttachment {
  readonly handle: number;
  readonly priority: number;
  close(): void;
}

let loaded: NativeBinding | undefined;

/** True on the platform the addon supports (Linux); everything else throws NativeError ENOSYS. */
export function isSupported(): boolean {
  return process.platform === 'linux';
}

/** Loads the addon on first use, so importing this package never fails by itself. */
export function binding(): NativeBinding {
  if (loaded) return loaded;
  if (!isSupported()) {
    throw new NativeError(
      'ENOSYS',
      `@ambient/native is linux-only; platform ${process.platform} is not supported`,
      {
        syscall: 'dlopen',
      },
    );
  }
  const require = createRequire(import.meta.url);
  try {
    loaded = require('../build/Release/ambient_native.node') as NativeBinding;
  } catch (err) {
    const missing = (err as { code?: unknown }).code === 'MODULE_NOT_FOUND';
    throw new NativeError(
      missing ? 'ENOENT' : 'ELIBBAD',
      missing
        ? 'native addon build/Release/ambient_native.node is missing; run `npm run build -w @ambient/native`'
        : `native addon build/Release/ambient_native.node failed to load: ${(err as Error).message}`,
      { syscall: 'dlopen', cause: err },
    );
  }
  return loaded;
}

/** Runs one addon call and rethrows its errno errors as NativeError. */
export function callNative<T>(fn: (native: NativeBinding) => T): T {
  const native = binding();
  try {
    return fn(native);
  } catch (err) {
    throw toNativeError(err);
  }
}
