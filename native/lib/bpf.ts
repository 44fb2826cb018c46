import { constants, openSync } from 'node:fs';
import { callNative, type RawBpfLink, type RawBpfObject, type RawTcAttachment } from './binding.ts';
import { NativeError } from './errors.ts';

/** Map metadata as compiled into the object file (`type` is the kernel's `enum bpf_map_type`). */
export interface BpfMapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

/** BPF_MAP_TYPE_SOCKMAP and BPF_MAP_TYPE_SOCKHASH, whose values are socket fds on update. */
const socketMapTypes: ReadonlySet<number> = new Set([15, 18]);

const updateFlags = { any: 0, noexist: 1, exist: 2 } as const;
/** BPF_ANY (insert or replace), BPF_NOEXIST (insert only), BPF_EXIST (replace only). */
export type BpfUpdateMode = keyof typeof updateFlags;

/**
 * An eBPF object file opened with libbpf. Open, optionally adjust maps, load(), then attach programs.
 * close() unloads whatever is not attached or pinned; links and tc attachments live on independently.
 */
export class BpfObject {
  readonly path: string;
  #raw: RawBpfObject;

  private constructor(path: string, raw: RawBpfObject) {
    this.path = path;
    this.#raw = raw;
  }

  /** Opens (parses) an object file without loading it into the kernel. */
  static open(path: string): BpfObject {
    return new BpfObject(
      path,
      callNative((n) => new n.BpfObject(path)),
    );
  }

  /** Opens and loads; a verifier rejection is a NativeError whose message ends with libbpf's log. */
  static load(path: string): BpfObject {
    const obj = BpfObject.open(path);
    try {
      obj.load();
    } catch (err) {
      obj.close();
      throw err;
    }
    return obj;
  }

  load(): void {
    callNative(() => this.#raw.load());
  }

  programs(): { name: string; section: string }[] {
    return callNative(() => this.#raw.programs());
  }

  maps(): BpfMapInfo[] {
    return callNative(() => this.#raw.maps());
  }

  /** @throws NativeError `ENOENT` when the object has no such program. */
  program(name: string): BpfProgram {
    if (!this.programs().some((p) => p.name === name)) {
      throw new NativeError('ENOENT', `program ${name} not found in ${this.path}`, {
        syscall: 'bpf_object__find_program_by_name',
      });
    }
    return new BpfProgram(this.#raw, name);
  }

  /** @throws NativeError `ENOENT` when the object has no such map. */
  map(name: string): BpfMap {
    const info = this.maps().find((m) => m.name === name);
    if (!info) {
      throw new NativeError('ENOENT', `map ${name} not found in ${this.path}`, {
        syscall: 'bpf_object__find_map_by_name',
      });
    }
    return new BpfMap(this.#raw, info);
  }

  close(): void {
    this.#raw.close();
  }
}

/** A program of a loaded BpfObject; valid while the object is open. */
export class BpfProgram {
  readonly name: string;
  #raw: RawBpfObject;

  /** @internal Use BpfObject.program(). */
  constructor(raw: RawBpfObject, name: string) {
    this.#raw = raw;
    this.name = name;
  }

  /** Attaches a cgroup program (cgroup/connect4, cgroup/getpeername4, ...) to a cgroup v2 directory fd. */
  attachCgroup(cgroupFd: number): BpfLink {
    return new BpfLink(callNative(() => this.#raw.attachCgroup(this.name, cgroupFd)));
  }

  /** Attaches an sk_lookup (or flow_dissector) program to a network namespace fd. */
  attachNetns(netnsFd: number): BpfLink {
    return new BpfLink(callNative(() => this.#raw.attachNetns(this.name, netnsFd)));
  }

  /**
   * Attaches a tc classifier on an interface, creating the clsact qdisc if needed. `ifindex` belongs to
   * `netnsFd`'s namespace when given. `handle` and `priority` 0 let the kernel choose.
   */
  attachTc(options: {
    ifindex: number;
    direction: 'ingress' | 'egress';
    netnsFd?: number;
    handle?: number;
    priority?: number;
  }): TcAttachment {
    return new TcAttachment(
      callNative(() =>
        this.#raw.attachTc(this.name, {
          ifindex: options.ifindex,
          egress: options.direction === 'egress',
          handle: options.handle ?? 0,
          priority: options.priority ?? 0,
          netnsFd: options.netnsFd ?? -1,
        }),
      ),
    );
  }
}

/** A map of a loaded BpfObject; keys and values are raw bytes in the program's layout. */
export class BpfMap {
  readonly info: BpfMapInfo;
  #raw: RawBpfObject;

  /** @internal Use BpfObject.map(). */
  constructor(raw: RawBpfObject, info: BpfMapInfo) {
    this.#raw = raw;
    this.info = info;
  }

  get name(): string {
    return this.info.name;
  }

  /** The value, or undefined when the key is absent. Per-CPU maps return one 8-byte-aligned slot per CPU. */
  lookup(key: Uint8Array): Buffer | undefined {
    return callNative(() => this.#raw.mapLookup(this.name, toBuffer(key)));
  }

  update(key: Uint8Array, value: Uint8Array, mode: BpfUpdateMode = 'any'): void {
    callNative(() => this.#raw.mapUpdate(this.name, toBuffer(key), toBuffer(value), updateFlags[mode]));
  }

  /** True when the key existed. */
  delete(key: Uint8Array): boolean {
    return callNative(() => this.#raw.mapDelete(this.name, toBuffer(key)));
  }

  /**
   * Puts a socket into a SOCKMAP/SOCKHASH. The map takes its own reference: the caller keeps owning fd.
   * @throws NativeError `EINVAL` when this is not a socket map.
   */
  setSocket(key: Uint8Array, fd: number, mode: BpfUpdateMode = 'any'): void {
    if (!socketMapTypes.has(this.info.type)) {
      throw new NativeError(
        'EINVAL',
        `map ${this.name} (type ${this.info.type}) is not a SOCKMAP or SOCKHASH`,
        {
          syscall: 'bpf_map__update_elem',
        },
      );
    }
    const value = Buffer.alloc(this.info.valueSize);
    if (value.length === 8) value.writeBigUInt64LE(BigInt(fd));
    else value.writeUInt32LE(fd);
    this.update(key, value, mode);
  }

  /** Pins the map at a bpffs path (the directory must exist). */
  pin(path: string): void {
    callNative(() => this.#raw.pinMap(this.name, path));
  }

  unpin(path: string): void {
    callNative(() => this.#raw.unpinMap(this.name, path));
  }
}

/**
 * An attached program. close() releases the link, which detaches it unless pinned; detach() detaches
 * even a pinned link. Dropping a BpfLink without close() detaches it when it is garbage collected.
 */
export class BpfLink {
  #raw: RawBpfLink;

  /** @internal Created by BpfProgram attach calls. */
  constructor(raw: RawBpfLink) {
    this.#raw = raw;
  }

  /** Pins at a bpffs path: the program stays attached after this process exits. */
  pin(path: string): void {
    callNative(() => this.#raw.pin(path));
  }

  unpin(): void {
    callNative(() => this.#raw.unpin());
  }

  detach(): void {
    callNative(() => this.#raw.detach());
  }

  close(): void {
    this.#raw.close();
  }
}

/**
 * A tc filter. It is netlink state, not tied to any fd: only close() removes it (the clsact qdisc stays,
 * other filters may use it).
 */
export class TcAttachment {
  #raw: RawTcAttachment;

  /** @internal Created by BpfProgram.attachTc(). */
  constructor(raw: RawTcAttachment) {
    this.#raw = raw;
  }

  get handle(): number {
    return this.#raw.handle;
  }

  get priority(): number {
    return this.#raw.priority;
  }

  close(): void {
    callNative(() => this.#raw.close());
  }
}

/**
 * Opens a cgroup v2 directory for attachCgroup() (close-on-exec, as all libuv opens); the caller
 * closes the fd (closeFd).
 * @throws NativeError `ENOENT`/`ENOTDIR` for a bad path.
 */
export function openCgroup(path: string): number {
  try {
    return openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const code = (e.code ?? 'EIO') as `E${string}`;
    throw new NativeError(code, `open ${path}: ${e.message}`, { syscall: 'open', cause: err });
  }
}

/**
 * Puts a socket (an fd of this process) at u32 `key` of a SOCKMAP another process pinned at
 * `path`. The map takes its own reference; the caller keeps owning `socketFd`, and a socket that
 * closes leaves the map by itself.
 * @throws NativeError `ENOENT` when nothing is pinned there, `EINVAL` when it is not such a map.
 */
export function setPinnedSockmapSocket(path: string, key: number, socketFd: number): void {
  if (!Number.isInteger(key) || key < 0 || key > 0xffffffff) {
    throw new RangeError(`map key ${key} is not a u32`);
  }
  callNative((n) => n.pinnedMapSetSocket(path, key, socketFd));
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
