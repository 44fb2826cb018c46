/**
 * Network namespaces for the native tests, made directly with `ip` (no dependency on the shared
 * harness). Everything is named `ambnat-<pid>-...` so a later run can sweep what a crashed run left.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const prefix = 'ambnat-';
const owned = new RegExp(`^${prefix}(\\d+)(-|$)`);
const bpffsMagic = 0xcafe4a11;
export const bpffsRoot = '/sys/fs/bpf';

/** Runs a command, returns stdout; the error names the command and its stderr. */
export function sh(command: string, args: string[], input?: string): string {
  try {
    return execFileSync(command, args, {
      encoding: 'utf8',
      input,
      timeout: 10_000,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** Runs a command without blocking the event loop (needed when this process serves the other end). */
export function shAsync(command: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function stale(name: string): boolean {
  const m = owned.exec(name);
  return m !== null && !alive(Number(m[1]));
}

/** Unified (v2) cgroup hierarchy mount point: /sys/fs/cgroup on pure v2 hosts, .../unified on hybrid ones. */
export function cgroup2Root(): string | undefined {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, mountPoint, type] = line.split(' ');
    if (type === 'cgroup2' && mountPoint) return mountPoint;
  }
  return undefined;
}

/** Mounts bpffs at /sys/fs/bpf unless it is already there. */
export function ensureBpffs(): void {
  mkdirSync(bpffsRoot, { recursive: true });
  if (statfsSync(bpffsRoot).type !== bpffsMagic) sh('mount', ['-t', 'bpf', 'bpf', bpffsRoot]);
}

/** Removes namespaces, cgroups, bpffs directories and temp dirs of test processes that no longer run. */
export function sweepLeftovers(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name && stale(name)) sh('ip', ['netns', 'del', name]);
  }
  const cgRoot = cgroup2Root();
  if (cgRoot) {
    for (const name of readdirSync(cgRoot).filter(stale)) {
      try {
        rmdirSync(join(cgRoot, name));
      } catch {
        // Still populated by a process that outlived its test; the next sweep retries.
      }
    }
  }
  if (existsSync(bpffsRoot) && statfsSync(bpffsRoot).type === bpffsMagic) {
    for (const name of readdirSync(bpffsRoot).filter(stale))
      rmSync(join(bpffsRoot, name), { recursive: true });
  }
  for (const name of readdirSync(tmpdir()).filter(stale))
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
}

let counter = 0;

/** A unique name owned by this process: `ambnat-<pid>-<label><n>`. */
export function uniqueName(label: string): string {
  counter += 1;
  return `${prefix}${process.pid}-${label}${counter}`;
}

export class Netns {
  readonly name: string;
  readonly path: string;

  constructor(name: string) {
    this.name = name;
    this.path = `/var/run/netns/${name}`;
  }

  /** `ip -n <ns> ...` */
  ip(...args: string[]): string {
    return sh('ip', ['-n', this.name, ...args]);
  }

  /** Runs a command inside the namespace. */
  exec(command: string, args: string[], input?: string): string {
    return sh('ip', ['netns', 'exec', this.name, command, ...args], input);
  }

  /** Runs a command inside the namespace without blocking the event loop. */
  execAsync(command: string, args: string[], timeoutMs?: number): Promise<string> {
    return shAsync('ip', ['netns', 'exec', this.name, command, ...args], timeoutMs);
  }

  /** Loads an nftables ruleset inside the namespace. */
  nft(ruleset: string): void {
    this.exec('nft', ['-f', '-'], ruleset);
  }

  /** Index of an interface, as the kernel numbers it in this namespace. */
  ifindex(dev: string): number {
    const out = JSON.parse(this.ip('-j', 'link', 'show', 'dev', dev)) as { ifindex: number }[];
    const index = out[0]?.ifindex;
    if (index === undefined) throw new Error(`no interface ${dev} in ${this.name}`);
    return index;
  }
}

/** A set of namespaces deleted together by dispose(). */
export class Topology {
  readonly #namespaces: Netns[] = [];

  /** A new namespace with loopback up. */
  netns(label: string): Netns {
    const ns = new Netns(uniqueName(label));
    sh('ip', ['netns', 'add', ns.name]);
    this.#namespaces.push(ns);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /**
   * A veth pair `a`/`b` between two namespaces, created directly inside them, with addresses
   * (CIDR notation, IPv4 or IPv6; IPv6 ones skip duplicate address detection) and links up.
   */
  veth(a: { ns: Netns; dev: string; addrs: string[] }, b: { ns: Netns; dev: string; addrs: string[] }): void {
    sh('ip', [
      'link',
      'add',
      a.dev,
      'netns',
      a.ns.name,
      'type',
      'veth',
      'peer',
      'name',
      b.dev,
      'netns',
      b.ns.name,
    ]);
    for (const end of [a, b]) {
      for (const addr of end.addrs) {
        const extra = addr.includes(':') ? ['nodad'] : [];
        end.ns.ip('addr', 'add', addr, 'dev', end.dev, ...extra);
      }
      end.ns.ip('link', 'set', end.dev, 'up');
    }
  }

  dispose(): void {
    for (const ns of this.#namespaces.splice(0)) {
      try {
        sh('ip', ['netns', 'del', ns.name]);
      } catch {
        // Already gone; the sweep of the next run catches anything else.
      }
    }
  }
}
