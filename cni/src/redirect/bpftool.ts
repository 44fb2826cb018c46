/**
 * Access to pinned eBPF objects from a process that did not load them (the node agent after a
 * restart, ztunnel registering its listener). @ambient/native reaches maps only through a
 * BpfObject it loaded itself, so this goes through `bpftool`; it is used for control-plane calls
 * only (check, reconcile, listener registration), never per connection. A native
 * `BpfMap.openPinned(path)` (bpf_obj_get) would replace it.
 */
import { failureStderr, inNetns, runCommand } from './command.ts';
import { RedirectError } from './errors.ts';

/** What `bpftool -j link show pinned` reports about a link. */
export interface PinnedLinkInfo {
  readonly id: number;
  readonly type: string;
  readonly progId: number;
  readonly attachType: string | undefined;
  /** For cgroup links: the cgroup's id (its directory inode). */
  readonly cgroupId: number | undefined;
  /** For netns links: the namespace inode. */
  readonly netnsIno: number | undefined;
}

function parseJson(argv: readonly string[], stdout: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch (err) {
    throw new RedirectError('OUTPUT_UNPARSEABLE', `${argv.join(' ')} printed ${stdout.slice(0, 200)}`, {
      cause: err,
    });
  }
}

export async function showPinnedLink(path: string): Promise<PinnedLinkInfo> {
  const argv = ['bpftool', '-j', 'link', 'show', 'pinned', path];
  const { stdout } = await runCommand(argv);
  const v = parseJson(argv, stdout) as Record<string, unknown>;
  const num = (x: unknown): number | undefined => (typeof x === 'number' ? x : undefined);
  return {
    id: num(v.id) ?? -1,
    type: String(v.type),
    progId: num(v.prog_id) ?? -1,
    attachType: typeof v.attach_type === 'string' ? v.attach_type : undefined,
    cgroupId: num(v.cgroup_id),
    netnsIno: num(v.netns_ino),
  };
}

/** Little-endian hex bytes as bpftool's `hex` arguments take them. */
function hexBytes(value: number, size: number): string[] {
  const buf = Buffer.alloc(size);
  if (size === 8) buf.writeBigUInt64LE(BigInt(value));
  else buf.writeUInt32LE(value);
  return [...buf].map((b) => b.toString(16).padStart(2, '0'));
}

/**
 * Puts socket `fd` (of this process) into a pinned SOCKMAP at u32 `key`. The kernel reads a
 * SOCKMAP value as a descriptor of the calling process, so the socket is handed to bpftool as its
 * fd 3 and the value written is 3. The map keeps its own reference; the caller still owns `fd`.
 */
export async function setPinnedSockmapEntry(
  mapPath: string,
  key: number,
  fd: number,
  valueSize = 8,
): Promise<void> {
  const childFd = 3;
  const argv = [
    'bpftool',
    'map',
    'update',
    'pinned',
    mapPath,
    'key',
    'hex',
    ...hexBytes(key, 4),
    'value',
    'hex',
    ...hexBytes(childFd, valueSize),
  ];
  await runCommand(argv, { fds: [fd] });
}

/**
 * The value at u32 `key` of a pinned map as raw bytes, or undefined when absent. For a SOCKMAP the
 * kernel returns the socket's cookie.
 */
export async function lookupPinnedMap(mapPath: string, key: number): Promise<Buffer | undefined> {
  const argv = ['bpftool', '-j', 'map', 'lookup', 'pinned', mapPath, 'key', 'hex', ...hexBytes(key, 4)];
  let stdout: string;
  try {
    ({ stdout } = await runCommand(argv));
  } catch (err) {
    // bpftool -j exits non-zero and prints `null` for an absent key.
    if (failureStderr(err).trim() === 'null') return undefined;
    throw err;
  }
  const v = parseJson(argv, stdout) as { value?: unknown };
  if (!Array.isArray(v.value)) return undefined;
  return Buffer.from(v.value.map((b: unknown) => Number.parseInt(String(b), 16)));
}

/** A tc filter as `tc -j filter show` lists it. */
export interface TcFilterInfo {
  readonly pref: number | undefined;
  readonly handle: string | undefined;
  readonly kind: string | undefined;
  readonly programName: string | undefined;
}

/** The bpf filters on a device's ingress hook inside a netns. */
export async function listTcIngressFilters(netnsPath: string, dev: string): Promise<TcFilterInfo[]> {
  const argv = inNetns(netnsPath, ['tc', '-j', 'filter', 'show', 'dev', dev, 'ingress']);
  const { stdout } = await runCommand(argv);
  if (stdout.trim() === '') return [];
  const list = parseJson(argv, stdout);
  if (!Array.isArray(list)) return [];
  const out: TcFilterInfo[] = [];
  for (const f of list as Record<string, unknown>[]) {
    const options = (f.options ?? {}) as Record<string, unknown>;
    if (options.handle === undefined && f.kind === undefined) continue;
    const prog = (options.prog ?? {}) as Record<string, unknown>;
    out.push({
      pref: typeof f.pref === 'number' ? f.pref : undefined,
      handle: typeof options.handle === 'string' ? options.handle : undefined,
      kind: typeof f.kind === 'string' ? f.kind : undefined,
      programName:
        typeof prog.name === 'string'
          ? prog.name
          : typeof options.bpf_name === 'string'
            ? options.bpf_name
            : undefined,
    });
  }
  return out;
}
