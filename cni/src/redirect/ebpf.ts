/**
 * eBPF mode: the capture semantics of the in-pod nftables rules without netfilter in the pod,
 * loaded with @ambient/native from `cni/build/bpf/inpod_redirect.bpf.o` (source in cni/bpf/).
 *
 * One copy of the object per pod. Everything it attaches is a pinned bpf_link, so it keeps
 * working when the agent exits and can be checked and removed by a later agent:
 *
 * ```
 * <pinDir>                      default /sys/fs/bpf/ambient/<pod uid>
 *   links/connect4, connect6    cgroup/connect{4,6}      on the pod cgroup
 *   links/getpeername4, 6       cgroup/getpeername{4,6}  on the pod cgroup
 *   links/sendmsg4, 6           cgroup/sendmsg{4,6}      on the pod cgroup (UDP DNS)
 *   links/recvmsg4, 6           cgroup/recvmsg{4,6}      on the pod cgroup (UDP DNS answers)
 *   links/sockops               sockops                  on the pod cgroup
 *   links/getsockopt            cgroup/getsockopt        on the proxy (ztunnel) cgroup
 *   links/sk_lookup             sk_lookup                on the pod netns
 *   maps/orig_by_cookie         app socket cookie -> original destination
 *   maps/orig_by_peer           app socket (ip, port) -> original destination
 *   maps/inbound_listeners      SOCKMAP: 0 = ztunnel's 15006 listener for IPv4, 1 = for IPv6
 *   maps/proxy_syns             SYNs ztunnel sent to the app, which sk_lookup must not steer
 * ```
 *
 * Outside bpffs, in the pod netns: a tc filter on lo ingress (pref/handle 0x539, program
 * `mark_proxy_to_app`, from the same object so it shares `proxy_syns`),
 * `net.ipv4.tcp_fwmark_accept=1`, and the same policy routing as nftables mode. Together they
 * replace the connmark: ztunnel's packets to the app (mark 0x539) get mark 0x111 on lo ingress,
 * the app's accepted socket inherits it, and its replies to a spoofed client address take table
 * 100 back to ztunnel. The tc filter is netlink state: it outlives the agent like the pins do.
 *
 * The contract with ztunnel:
 * - Outbound: ztunnel accepts on its 15001 listener as usual and calls SO_ORIGINAL_DST
 *   (native `originalDst`). The getsockopt program answers that call from `orig_by_peer`, keyed
 *   by the accepted socket's peer (ip, port), which is the app socket's local address: a sockops
 *   callback copied the record there when the app's connect() got its source port. The program
 *   must be attached to ztunnel's cgroup (a socket belongs to its creator's cgroup), given as
 *   `proxyCgroupPath` (see {@link cgroupOfPid}).
 * - Inbound: ztunnel calls {@link registerInboundListener} with its 15006 listener once it has
 *   created it for the pod (after ZDS Add). The accepted socket's local address is the original
 *   destination: SO_ORIGINAL_DST fails (no NAT) and ztunnel falls back to the local address, as it
 *   already does (spec §2.3). Until a listener is registered, inbound connections are refused.
 * - ztunnel's own sockets are outside the pod cgroup, so the connect programs never see them;
 *   an app socket carrying the 0x539 mark is exempt too, as in nftables mode.
 * - Kubelet probes: the host keeps the nftables probe SNAT (host-probe.ts); sk_lookup lets
 *   169.254.7.127 through to the app.
 * - DNS (when captured): the app's TCP connects and UDP datagrams to port 53 go to 127.0.0.1:15053
 *   (::1 for IPv6), where ztunnel's DNS proxy listens; answers read back as coming from the
 *   server the app asked.
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, closeFd, openCgroup, openNetns } from '@ambient/native';
import {
  listTcIngressFilters,
  lookupPinnedMap,
  type PinnedLinkInfo,
  setPinnedSockmapEntry,
  showPinnedLink,
} from './bpftool.ts';
import { checkResult, type RedirectCheck, type RedirectReconcile } from './check.ts';
import { failureStderr, inNetns, runCommand } from './command.ts';
import { type PodRedirectOptions, type RedirectConfig, resolveRedirectConfig } from './config.ts';
import { encodeEbpfConfig } from './ebpf-config.ts';
import { RedirectError } from './errors.ts';
import { applyPolicyRouting, checkPolicyRouting, removePolicyRouting } from './policy-routing.ts';

/** Where per-pod directories go by default. */
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/ambient';

/** The compiled object, built by `npm run build -w @ambient/cni`. */
export const REDIRECT_OBJECT_PATH = fileURLToPath(
  new URL('../../build/bpf/inpod_redirect.bpf.o', import.meta.url),
);

/** tc filter preference and handle on the pod's lo ingress. */
export const TC_FILTER_PREF = 0x539;
export const TC_FILTER_HANDLE = 0x539;
const TC_PROGRAM = 'mark_proxy_to_app';
const LOOPBACK_IFINDEX = 1;
const BPF_FS_MAGIC = 0xcafe4a11;

type LinkTarget = 'pod-cgroup' | 'proxy-cgroup' | 'netns';

interface LinkSpec {
  readonly pin: string;
  readonly program: string;
  readonly target: LinkTarget;
  /** bpftool's name for the attach type, checked by {@link checkEbpfRedirection}. */
  readonly attachType: string;
}

const LINKS: readonly LinkSpec[] = [
  { pin: 'connect4', program: 'redirect_connect4', target: 'pod-cgroup', attachType: 'cgroup_inet4_connect' },
  { pin: 'connect6', program: 'redirect_connect6', target: 'pod-cgroup', attachType: 'cgroup_inet6_connect' },
  {
    pin: 'getpeername4',
    program: 'restore_getpeername4',
    target: 'pod-cgroup',
    attachType: 'cgroup_inet4_getpeername',
  },
  {
    pin: 'getpeername6',
    program: 'restore_getpeername6',
    target: 'pod-cgroup',
    attachType: 'cgroup_inet6_getpeername',
  },
  { pin: 'sendmsg4', program: 'redirect_sendmsg4', target: 'pod-cgroup', attachType: 'cgroup_udp4_sendmsg' },
  { pin: 'sendmsg6', program: 'redirect_sendmsg6', target: 'pod-cgroup', attachType: 'cgroup_udp6_sendmsg' },
  { pin: 'recvmsg4', program: 'restore_recvmsg4', target: 'pod-cgroup', attachType: 'cgroup_udp4_recvmsg' },
  { pin: 'recvmsg6', program: 'restore_recvmsg6', target: 'pod-cgroup', attachType: 'cgroup_udp6_recvmsg' },
  { pin: 'sockops', program: 'track_sockops', target: 'pod-cgroup', attachType: 'cgroup_sock_ops' },
  {
    pin: 'getsockopt',
    program: 'answer_original_dst',
    target: 'proxy-cgroup',
    attachType: 'cgroup_getsockopt',
  },
  { pin: 'sk_lookup', program: 'steer_inbound', target: 'netns', attachType: 'sk_lookup' },
];

const MAPS = ['orig_by_cookie', 'orig_by_peer', 'inbound_listeners', 'proxy_syns'] as const;
const INBOUND_LISTENERS = 'inbound_listeners';

/** Where a pod's objects are pinned. */
export function podPinDir(podUid: string, root = DEFAULT_PIN_ROOT): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(podUid) || podUid.startsWith('.')) {
    throw new RedirectError(
      'PIN_DIR_INVALID',
      `pod uid ${JSON.stringify(podUid)} cannot name a pin directory`,
    );
  }
  return join(root, podUid);
}

/** The pinned SOCKMAP ztunnel registers its inbound listener in. */
export function inboundListenerMapPath(pinDir: string): string {
  return join(pinDir, 'maps', INBOUND_LISTENERS);
}

/** What one pod's eBPF redirection is attached to. */
export interface EbpfTarget {
  /** The pod's network namespace (`/var/run/netns/...`, `/proc/<pid>/ns/net`). */
  readonly netnsPath: string;
  /** The pod's cgroup v2 directory ({@link findPodCgroup} in Kubernetes). */
  readonly cgroupPath: string;
  /** ztunnel's cgroup v2 directory (or an ancestor holding only it): see the module comment. */
  readonly proxyCgroupPath: string;
  /** The pod's bpffs directory, {@link podPinDir}. */
  readonly pinDir: string;
}

export interface EbpfAttachOptions extends EbpfTarget {
  readonly pod: PodRedirectOptions;
  readonly config?: Partial<RedirectConfig>;
  /** A 15006 listener to register right away (when the caller already has one). */
  readonly inboundListenerFd?: number;
  /** Defaults to {@link REDIRECT_OBJECT_PATH}. */
  readonly objectPath?: string;
}

/** The outcome of {@link checkEbpfRedirection}. */
export interface EbpfCheck extends RedirectCheck {
  /** Whether a listener is in the inbound SOCKMAP for IPv4 (ztunnel's job, not counted in `ok`). */
  readonly inboundListenerRegistered: boolean;
}

function assertOnBpffs(dir: string): void {
  let parent = dir;
  while (!existsSync(parent)) parent = join(parent, '..');
  const type = statfsSync(parent).type;
  if (type !== BPF_FS_MAGIC) {
    throw new RedirectError(
      'PIN_DIR_INVALID',
      `pin directory ${dir} is not on a bpf file system (${parent} has type 0x${type.toString(16)}); mount -t bpf bpf /sys/fs/bpf`,
    );
  }
}

function targetFd(target: LinkTarget, t: EbpfTarget): number {
  if (target === 'netns') return openNetns(t.netnsPath);
  return openCgroup(target === 'pod-cgroup' ? t.cgroupPath : t.proxyCgroupPath);
}

/**
 * Loads and attaches the pod's programs and pins them under `pinDir`, then sets up the tc filter,
 * the sysctl and policy routing in the pod netns. Idempotent: when everything is already in place
 * it only registers `inboundListenerFd` (if given); a partial leftover is removed and redone (the
 * inbound SOCKMAP is then new, and ztunnel must register again).
 */
export async function attachPodRedirection(options: EbpfAttachOptions): Promise<void> {
  const cfg = resolveRedirectConfig(options.config);
  const configValue = encodeEbpfConfig(cfg, options.pod);
  assertOnBpffs(options.pinDir);
  if (existsSync(options.pinDir)) {
    const current = await checkEbpfRedirection(options, cfg);
    if (current.ok) {
      if (options.inboundListenerFd !== undefined)
        await registerInboundListener(options.pinDir, options.inboundListenerFd);
      return;
    }
    await detachBpf(options.pinDir);
  }
  await attachBpf(options, cfg, configValue);
  try {
    await applyNetnsPieces(options.netnsPath, cfg);
  } catch (err) {
    await detachBpf(options.pinDir).catch(() => {});
    await deleteTcFilter(options.netnsPath).catch(() => {});
    throw err;
  }
}

/** Attaches one program to its target and pins the link; errors name the link and its target. */
function attachLink(obj: BpfObject, spec: LinkSpec, options: EbpfAttachOptions): void {
  const targetPath =
    spec.target === 'netns'
      ? options.netnsPath
      : spec.target === 'pod-cgroup'
        ? options.cgroupPath
        : options.proxyCgroupPath;
  let fd: number;
  try {
    fd = targetFd(spec.target, options);
  } catch (err) {
    throw new RedirectError(
      spec.target === 'netns' ? 'BPF_ATTACH_FAILED' : 'CGROUP_NOT_FOUND',
      `${spec.pin}: cannot open ${targetPath}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    const program = obj.program(spec.program);
    const link = spec.target === 'netns' ? program.attachNetns(fd) : program.attachCgroup(fd);
    try {
      link.pin(join(options.pinDir, 'links', spec.pin));
    } finally {
      // Pinned, the link outlives this handle; unpinned (pin failed), closing detaches it.
      link.close();
    }
  } catch (err) {
    // The kernel allows 64 programs per cgroup and attach type (BPF_CGROUP_MAX_PROGS).
    const full =
      (err as { code?: unknown }).code === 'E2BIG'
        ? ` (${targetPath} already holds the kernel's maximum of 64 ${spec.attachType} programs; with one getsockopt program per pod on the proxy cgroup, eBPF mode serves at most 64 pods per ztunnel)`
        : '';
    throw new RedirectError(
      'BPF_ATTACH_FAILED',
      `${spec.program} on ${targetPath}: ${(err as Error).message}${full}`,
      { cause: err },
    );
  } finally {
    closeFd(fd);
  }
}

async function attachBpf(
  options: EbpfAttachOptions,
  cfg: RedirectConfig,
  configValue: Buffer,
): Promise<void> {
  const objectPath = options.objectPath ?? REDIRECT_OBJECT_PATH;
  if (!existsSync(objectPath)) {
    throw new RedirectError(
      'BPF_OBJECT_MISSING',
      `eBPF object ${objectPath} is not built; run npm run build -w @ambient/cni`,
    );
  }
  mkdirSync(join(options.pinDir, 'links'), { recursive: true });
  mkdirSync(join(options.pinDir, 'maps'), { recursive: true });
  let obj: BpfObject | undefined;
  try {
    obj = BpfObject.load(objectPath);
    obj.map('config').update(Buffer.alloc(4), configValue);
    for (const spec of LINKS) attachLink(obj, spec, options);
    for (const name of MAPS) obj.map(name).pin(join(options.pinDir, 'maps', name));
    if (options.inboundListenerFd !== undefined) {
      obj.map(INBOUND_LISTENERS).setSocket(Buffer.alloc(4), options.inboundListenerFd);
    }
    await deleteTcFilter(options.netnsPath);
    const netnsFd = openNetns(options.netnsPath);
    try {
      // Not closed on purpose: a tc filter is netlink state that stays until deleted (deleteTcFilter).
      obj.program(TC_PROGRAM).attachTc({
        ifindex: LOOPBACK_IFINDEX,
        direction: 'ingress',
        netnsFd,
        handle: TC_FILTER_HANDLE,
        priority: TC_FILTER_PREF,
      });
    } finally {
      closeFd(netnsFd);
    }
  } catch (err) {
    obj?.close();
    obj = undefined;
    await detachBpf(options.pinDir).catch(() => {});
    await deleteTcFilter(options.netnsPath).catch(() => {});
    if (err instanceof RedirectError) throw err;
    throw new RedirectError(
      'BPF_ATTACH_FAILED',
      `attaching eBPF redirection for ${options.pinDir} (proxy mark 0x${cfg.proxyMark.toString(16)}): ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    obj?.close();
  }
}

/** The sysctl and policy routing inside the pod netns. */
async function applyNetnsPieces(netnsPath: string, cfg: RedirectConfig): Promise<void> {
  await runCommand(inNetns(netnsPath, ['sysctl', '-q', '-w', 'net.ipv4.tcp_fwmark_accept=1']));
  await applyPolicyRouting(netnsPath, cfg);
}

async function deleteTcFilter(netnsPath: string): Promise<void> {
  try {
    await runCommand(
      inNetns(netnsPath, [
        'tc',
        'filter',
        'del',
        'dev',
        'lo',
        'ingress',
        'pref',
        String(TC_FILTER_PREF),
        'handle',
        `0x${TC_FILTER_HANDLE.toString(16)}`,
        'bpf',
      ]),
    );
  } catch (err) {
    // Absent filter or absent clsact qdisc: nothing to delete.
    if (!/Cannot find|No such file|Invalid handle|Parent Qdisc doesn't exist/i.test(failureStderr(err)))
      throw err;
  }
}

/** Unpins every link (which detaches it) and map, and removes the directory. */
async function detachBpf(pinDir: string): Promise<void> {
  if (!existsSync(pinDir)) return;
  assertOnBpffs(pinDir);
  for (const sub of ['links', 'maps']) {
    const dir = join(pinDir, sub);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) rmSync(join(dir, name));
    rmdirSync(dir);
  }
  rmdirSync(pinDir);
}

export interface EbpfDetachOptions {
  readonly pinDir: string;
  /** The pod netns; omit (or give a vanished path) when the pod is gone and only pins remain. */
  readonly netnsPath?: string;
  readonly config?: Partial<RedirectConfig>;
}

/** Removes everything {@link attachPodRedirection} set up; succeeds when it is already gone. */
export async function detachPodRedirection(options: EbpfDetachOptions): Promise<void> {
  const cfg = resolveRedirectConfig(options.config);
  await detachBpf(options.pinDir);
  const netns = options.netnsPath;
  if (netns === undefined || !existsSync(netns)) return;
  await deleteTcFilter(netns);
  await runCommand(inNetns(netns, ['sysctl', '-q', '-w', 'net.ipv4.tcp_fwmark_accept=0']));
  await removePolicyRouting(netns, cfg);
}

function inode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

function linkProblem(spec: LinkSpec, info: PinnedLinkInfo, t: EbpfTarget): string | undefined {
  if (info.attachType !== spec.attachType) return `attach type ${info.attachType}, want ${spec.attachType}`;
  if (spec.target === 'netns') {
    const want = inode(t.netnsPath);
    return info.netnsIno === want
      ? undefined
      : `attached to netns ${info.netnsIno}, want ${want} (${t.netnsPath})`;
  }
  const path = spec.target === 'pod-cgroup' ? t.cgroupPath : t.proxyCgroupPath;
  const want = inode(path);
  return info.cgroupId === want ? undefined : `attached to cgroup ${info.cgroupId}, want ${want} (${path})`;
}

/**
 * Compares what is pinned and attached with what should be: each link exists and is attached to
 * the right cgroup or netns, each map is pinned, and the tc filter, sysctl and policy routing are
 * in the netns.
 */
export async function checkEbpfRedirection(
  target: EbpfTarget,
  config: Partial<RedirectConfig> = {},
): Promise<EbpfCheck> {
  const cfg = resolveRedirectConfig(config);
  const problems: string[] = [];
  for (const spec of LINKS) {
    const path = join(target.pinDir, 'links', spec.pin);
    if (!existsSync(path)) {
      problems.push(`link ${path} missing`);
      continue;
    }
    const p = linkProblem(spec, await showPinnedLink(path), target);
    if (p) problems.push(`link ${path}: ${p}`);
  }
  for (const name of MAPS) {
    const path = join(target.pinDir, 'maps', name);
    if (!existsSync(path)) problems.push(`map ${path} missing`);
  }
  const filters = await listTcIngressFilters(target.netnsPath, 'lo');
  const tcOk = filters.some(
    (f) =>
      f.pref === TC_FILTER_PREF &&
      f.handle === `0x${TC_FILTER_HANDLE.toString(16)}` &&
      // The kernel keeps 15 characters of a program name.
      (f.programName ?? '').startsWith(TC_PROGRAM.slice(0, 15)),
  );
  if (!tcOk) problems.push(`tc filter ${TC_PROGRAM} on lo ingress of ${target.netnsPath} missing`);
  const { stdout } = await runCommand(
    inNetns(target.netnsPath, ['sysctl', '-n', 'net.ipv4.tcp_fwmark_accept']),
  );
  if (stdout.trim() !== '1') problems.push(`net.ipv4.tcp_fwmark_accept is ${stdout.trim()}, want 1`);
  problems.push(...(await checkPolicyRouting(target.netnsPath, cfg)));
  const mapPath = inboundListenerMapPath(target.pinDir);
  const registered = existsSync(mapPath) && (await lookupPinnedMap(mapPath, 0)) !== undefined;
  return { ...checkResult(problems), inboundListenerRegistered: registered };
}

/**
 * Checks and repairs. The sysctl and routing are redone in place; any missing or misattached eBPF
 * piece (a link, a map, the tc filter: they share maps) makes the whole eBPF set be redone, which
 * gives the pod a new inbound SOCKMAP: the caller must then have ztunnel register its listener
 * again (or pass `inboundListenerFd`). `repaired` tells whether anything was changed.
 */
export async function reconcileEbpfRedirection(
  options: EbpfAttachOptions,
): Promise<RedirectReconcile & EbpfCheck> {
  const cfg = resolveRedirectConfig(options.config);
  const before = await checkEbpfRedirection(options, cfg);
  if (before.ok) return { ...before, before, repaired: false };
  const bpfBroken = before.problems.some((p) => /^(link|map|tc filter) /.test(p));
  if (bpfBroken) {
    await detachBpf(options.pinDir);
    await attachBpf(options, cfg, encodeEbpfConfig(cfg, options.pod));
  }
  await applyNetnsPieces(options.netnsPath, cfg);
  const after = await checkEbpfRedirection(options, cfg);
  return { ...after, before, repaired: true };
}

/** Which lookups a listener serves: a dual-stack IPv6 socket can take both. */
export type ListenerFamily = 'ipv4' | 'ipv6' | 'dual';

/**
 * ztunnel's side of the inbound contract: puts its 15006 listener for this pod (an fd of the
 * calling process) in the pod's pinned SOCKMAP. Call it after creating the listener, and again
 * after replacing it (an upgrade: the newest registration wins; a closed socket leaves the map by
 * itself). The map keeps its own reference; the caller still owns `fd`.
 */
export async function registerInboundListener(
  pinDir: string,
  fd: number,
  family: ListenerFamily = 'ipv4',
): Promise<void> {
  const mapPath = inboundListenerMapPath(pinDir);
  if (!existsSync(mapPath)) {
    throw new RedirectError(
      'LISTENER_REGISTRATION_FAILED',
      `no inbound listener map at ${mapPath}; is the pod enrolled in eBPF mode?`,
    );
  }
  const keys = family === 'ipv4' ? [0] : family === 'ipv6' ? [1] : [0, 1];
  try {
    for (const key of keys) await setPinnedSockmapEntry(mapPath, key, fd);
  } catch (err) {
    throw new RedirectError(
      'LISTENER_REGISTRATION_FAILED',
      `registering fd ${fd} in ${mapPath}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
