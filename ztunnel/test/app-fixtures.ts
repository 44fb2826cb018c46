/**
 * Test support for the app and in-pod suites: pod network namespaces named `ztapp-<pid>-<n>`
 * (swept when the owning process is gone), a temp directory, log capture, HTTP helpers and a
 * polling wait. Test-only.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Logging } from '@ambient/common/log';
import { eventually as pollUntil } from '@ambient/common/testing/eventually';
import { closeFd, connectFd, openNetns } from '@ambient/native';

export const isRoot = process.getuid?.() === 0;
const PREFIX = 'ztapp-';
const OWNED = new RegExp(`^${PREFIX}(\\d+)-`);

export function ip(args: readonly string[]): string {
  try {
    return execFileSync('ip', [...args], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Deletes `ztapp-<pid>-*` namespaces whose process no longer runs (left by a crashed run). */
export function sweepLeftoverNetns(): void {
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = OWNED.exec(name);
    if (m && !alive(Number(m[1]))) ip(['netns', 'del', name]);
  }
}

let netnsCount = 0;

/**
 * A pod's network namespace: loopback up, holding the pod IP (a 10.x address that never leaves
 * the namespace). `fd()` opens a new fd each time, as the node agent
 * does for every Add; the caller owns it.
 */
export class PodNetns {
  readonly name: string;
  readonly path: string;
  readonly ip: string;

  constructor(podIp: string) {
    netnsCount++;
    this.name = `${PREFIX}${process.pid}-${netnsCount}`;
    this.ip = podIp;
    ip(['netns', 'add', this.name]);
    this.path = `/var/run/netns/${this.name}`;
    ip(['-n', this.name, 'link', 'set', 'lo', 'up']);
    // The pod IP on loopback: this kernel has no dummy links, and nothing leaves the namespace.
    ip(['-n', this.name, 'addr', 'add', `${podIp}/32`, 'dev', 'lo']);
  }

  fd(): number {
    return openNetns(this.path);
  }

  /**
   * Whether something listens on `port` inside this namespace: a TCP connect made from inside it
   * (resolves true on connect, false on ECONNREFUSED).
   */
  async listening(port: number, address = '127.0.0.1'): Promise<boolean> {
    const netnsFd = this.fd();
    try {
      const fd = await connectFd({ netnsFd, address, port, timeoutMs: 2000 });
      closeFd(fd);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'ECONNREFUSED') return false;
      throw err;
    } finally {
      closeFd(netnsFd);
    }
  }

  delete(): void {
    try {
      ip(['netns', 'del', this.name]);
    } catch {
      // Already gone.
    }
  }
}

/** A private temp directory, removed by `remove()`. */
export function tempDir(tag: string): { dir: string; path: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}${tag}-${process.pid}-`));
  return {
    dir,
    path: (name) => join(dir, name),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A Logging whose JSON lines are kept for assertions (and echoed to stderr with `echo`). */
export class CapturedLogs {
  readonly lines: Record<string, unknown>[] = [];
  readonly logging: Logging;

  constructor(levels = 'info', echo = false) {
    const lines = this.lines;
    this.logging = new Logging({
      levels,
      format: 'json',
      destination: new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const text of chunk.toString('utf8').split('\n')) {
            if (text.trim() === '') continue;
            if (echo) process.stderr.write(`${text}\n`);
            try {
              lines.push(JSON.parse(text) as Record<string, unknown>);
            } catch {
              lines.push({ msg: text });
            }
          }
          cb();
        },
      }),
    });
  }

  find(msg: string | RegExp): Record<string, unknown>[] {
    return this.lines.filter((l) =>
      typeof msg === 'string' ? l.msg === msg : typeof l.msg === 'string' && msg.test(l.msg),
    );
  }
}

/** `eventually` with the in-process tests' shorter default (5 s) and period (20 ms). */
export function eventually<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 5000,
): Promise<T> {
  return pollUntil(what, check, timeoutMs, 20);
}

/** GET/POST against one of ztunnel's HTTP servers on loopback. */
export async function http(
  port: number,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, init);
  return { status: res.status, text: await res.text() };
}
