/**
 * Shared by the plugin tests: runs the real compiled istio-cni binary the way a container runtime
 * does (CNI_* environment, config on stdin), and builds the configs and results it is fed.
 */
import { spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildPlugin } from '../scripts/build-plugin.ts';

/** What one plugin execution did. `json` is stdout parsed (undefined when empty or not JSON). */
export interface PluginRun {
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly json: unknown;
}

/** A pod's CNI environment (ADD), as the harness and kubelet set it. */
export function podEnv(
  pod: { namespace?: string; name?: string; uid?: string } = {},
  overrides: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  const namespace = pod.namespace ?? 'app';
  const name = pod.name ?? 'web-0';
  const containerId = 'c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc';
  return {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: containerId,
    CNI_NETNS: '/var/run/netns/icni-test-pod',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${pod.uid ?? '3b2a1c0e-5d4f-4a6b-8c7d-9e0f1a2b3c4d'}`,
    ...overrides,
  };
}

/** A bridge plugin result as it arrives in prevResult (0.3.x/0.4.0 results carry ips[].version). */
export function bridgeResult(cniVersion: string): Record<string, unknown> {
  const legacy = !cniVersion.startsWith('1.');
  const ip = (address: string, gateway: string) => ({
    ...(legacy ? { version: address.includes(':') ? '6' : '4' } : {}),
    interface: 2,
    address,
    gateway,
  });
  return {
    cniVersion,
    interfaces: [
      { name: 'cni0', mac: '6e:5d:4c:3b:2a:19' },
      { name: 'veth1234abcd', mac: 'aa:bb:cc:dd:ee:ff' },
      { name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/icni-test-pod' },
    ],
    ips: [ip('10.244.1.5/24', '10.244.1.1'), ip('fd00:10:244:1::5/64', 'fd00:10:244:1::1')],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}

/** The istio-cni plugin's stdin: its conflist entry plus the list's name/version and prevResult. */
export function pluginConfig(options: {
  cniVersion?: string;
  runDir: string;
  prevResult?: unknown;
  extra?: Record<string, unknown>;
}): Record<string, unknown> {
  const cniVersion = options.cniVersion ?? '1.0.0';
  return {
    cniVersion,
    name: 'k8s-pod-network',
    type: 'istio-cni',
    plugin_log_level: 'debug',
    cni_agent_run_dir: options.runDir,
    ambient_enabled: true,
    exclude_namespaces: ['kube-system', 'istio-system'],
    pod_namespace: 'istio-system',
    ...options.extra,
    ...(options.prevResult === null ? {} : { prevResult: options.prevResult ?? bridgeResult(cniVersion) }),
  };
}

/** Runs the compiled plugin once; never throws for a non-zero exit. */
export function runPlugin(
  env: Record<string, string | undefined>,
  stdin: string | Record<string, unknown>,
  timeoutMs = 15_000,
): Promise<PluginRun> {
  const binary = buildPlugin({ quiet: true });
  // A runtime hands plugins a small, fixed environment; nothing of this process's leaks in.
  const childEnv: Record<string, string> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`istio-cni did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (exitCode) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = stdout.trim() === '' ? undefined : JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ exitCode, stdout, stderr, json });
    });
    // EPIPE when the plugin exits before reading (it always reads, but a crash must not hang here).
    child.stdin.on('error', () => {});
    child.stdin.end(typeof stdin === 'string' ? stdin : JSON.stringify(stdin));
  });
}

const TEMP_PREFIX = 'icni-test-';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes run dirs left by test processes that died before their cleanup ran. */
function sweepLeftovers(): void {
  for (const name of readdirSync(tmpdir())) {
    const pid = Number(/^icni-test-(\d+)-/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) {
      rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
  }
}
sweepLeftovers();

/**
 * A fresh directory for one test's agent run dir (socket, state file), named after this process
 * so a later run can sweep it if this one crashes; removed by the returned function.
 */
export async function tempRunDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
