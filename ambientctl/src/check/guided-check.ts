/**
 * The guided check `ambientctl up` runs on the sample workloads: four things a user should see
 * ambient mode do, each proven by what the mesh itself reports rather than assumed:
 *
 * 1. traffic flowing: demo/client → the echo Service's VIP, answered by echo pods;
 * 2. the mTLS identity at the destination: the echo pods' ztunnel counts the connections with the
 *    client's SPIFFE principal over `mutual_tls` (and logs it in its access log);
 * 3. a policy denial: an L4 AuthorizationPolicy DENY for the client's principal makes the same
 *    requests fail, ztunnel counts them as `DENY`; once it is deleted they succeed again;
 * 4. the non-mesh path: legacy/client (outside the mesh) reaches an echo pod in plain text, which
 *    PERMISSIVE accepts, and ztunnel counts it without mTLS.
 *
 * It runs against any {@link MeshOperations}: a LocalMesh in this process (`up --once`) or the
 * daemon's (through the control socket).
 */
import { readFileSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import type { ComponentStatus, MeshOperations, PodStatus } from '../host/hosted-mesh.ts';
import {
  CLIENT_PROGRAM,
  DEMO_NAMESPACE,
  ECHO_CONTAINER_PORT,
  ECHO_SERVICE_PORT,
  LEGACY_NAMESPACE,
} from '../samples/index.ts';
import { parseConfigDump, type ZcDump } from '../zc/dump.ts';
import { counterSum } from './prometheus.ts';

/** One line of the check's report. */
export interface CheckOutcome {
  readonly name: string;
  readonly ok: boolean;
  /** What was seen, in words: the evidence for ✓, or what went wrong for ✗. */
  readonly seen: string;
}

export interface GuidedCheckResult {
  readonly passed: boolean;
  readonly checks: readonly CheckOutcome[];
}

export interface GuidedCheckOptions {
  /** Receives each line as soon as its check is done (`✓ traffic flowing: …`). */
  readonly print?: (line: string) => void;
  /** How long to wait for a policy to reach the ztunnels, and for counters to move. */
  readonly settleTimeoutMs?: number;
}

/** The name of the policy the check applies and deletes again. */
export const CHECK_POLICY_NAME = 'ambientctl-check-deny-client';

const OPENED = 'istio_tcp_connections_opened_total';
/** A denied connection is only counted when it closes, with `response_flags="DENY"`. */
const CLOSED = 'istio_tcp_connections_closed_total';
const REQUESTS = 4;

interface ClientAnswer {
  readonly ok: boolean;
  readonly status?: number;
  readonly pod?: string;
  readonly error?: string;
}

/** What the check learned about the samples before the first request. */
interface Samples {
  readonly client: PodStatus;
  readonly legacy: PodStatus;
  readonly echoes: readonly PodStatus[];
  readonly echoNodes: readonly string[];
  readonly vip: string;
  readonly principal: string;
}

class CheckFailure extends Error {}

function fail(message: string): never {
  throw new CheckFailure(message);
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      fail(
        `${what} did not happen within ${timeoutMs} ms${last === undefined ? '' : ` (${errorMessage(last)})`}`,
      );
    }
    await sleep(250);
  }
}

async function configDump(mesh: MeshOperations, node: string): Promise<ZcDump> {
  const r = await mesh.ztunnelAdmin(node, '/config_dump');
  if (r.status !== 200) fail(`ztunnel on ${node} answered /config_dump with ${r.status}`);
  return parseConfigDump(r.body);
}

function running(pods: readonly PodStatus[], namespace: string, owner: string): PodStatus[] {
  return pods.filter((p) => p.namespace === namespace && p.owner === owner && p.phase === 'Running');
}

async function findSamples(mesh: MeshOperations): Promise<Samples> {
  const pods = await mesh.pods();
  const client = running(pods, DEMO_NAMESPACE, 'client')[0];
  const legacy = running(pods, LEGACY_NAMESPACE, 'client')[0];
  const echoes = running(pods, DEMO_NAMESPACE, 'echo');
  if (client === undefined || legacy === undefined || echoes.length === 0) {
    fail(
      `the sample pods are not all Running (demo/client: ${client ? 'yes' : 'no'}, legacy/client: ${legacy ? 'yes' : 'no'}, demo/echo: ${echoes.length}); see ambientctl get pods -A`,
    );
  }
  const dump = await configDump(mesh, client.node);
  const svc = dump.services.find((s) => s.namespace === DEMO_NAMESPACE && s.name === 'echo');
  const vip = svc?.vips[0]?.split('/')[1];
  if (svc === undefined || vip === undefined) {
    fail(
      `ztunnel on ${client.node} does not know Service ${DEMO_NAMESPACE}/echo (see ambientctl zc services)`,
    );
  }
  const w = dump.workloads.find((x) => x.namespace === DEMO_NAMESPACE && x.name === client.name);
  if (w === undefined)
    fail(`ztunnel on ${client.node} does not know workload ${DEMO_NAMESPACE}/${client.name}`);
  const trustDomain = (w.raw as { trustDomain?: unknown }).trustDomain;
  const td = typeof trustDomain === 'string' && trustDomain !== '' ? trustDomain : 'cluster.local';
  return {
    client,
    legacy,
    echoes,
    echoNodes: [...new Set(echoes.map((e) => e.node))].sort(),
    vip,
    principal: `spiffe://${td}/ns/${DEMO_NAMESPACE}/sa/${w.serviceAccount}`,
  };
}

/** Runs the sample client in `pod` against `url`; one answer per request. */
async function requests(
  mesh: MeshOperations,
  pod: PodStatus,
  url: string,
  count: number,
): Promise<ClientAnswer[]> {
  const r = await mesh.exec(
    pod.namespace,
    pod.name,
    [process.execPath, CLIENT_PROGRAM, '--url', url, '--count', String(count), '--timeout-ms', '3000'],
    { timeoutMs: count * 4000 + 10_000, check: false },
  );
  const answers: ClientAnswer[] = [];
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      answers.push(JSON.parse(line) as ClientAnswer);
    } catch {
      // A partial line: the client was cut off; the count below shows it.
    }
  }
  if (answers.length === 0) {
    fail(
      `the client in ${pod.namespace}/${pod.name} printed nothing (exit ${r.code}): ${r.stderr.trim().slice(0, 300)}`,
    );
  }
  return answers;
}

async function countersOn(
  mesh: MeshOperations,
  nodes: readonly string[],
  labels: Readonly<Record<string, string>>,
  metric = OPENED,
): Promise<number> {
  let sum = 0;
  for (const node of nodes) sum += counterSum(await mesh.ztunnelMetrics(node), metric, labels);
  return sum;
}

/** The newest access log line of ztunnel on `node` that contains every needle, if the log is readable. */
function accessLogLine(
  components: readonly ComponentStatus[],
  node: string,
  needles: readonly string[],
): string | undefined {
  const z = components.find((c) => c.name === 'ztunnel' && c.node === node);
  if (z === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(z.logFile, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.slice(-512 * 1024).split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i] ?? '';
    if (l.includes('connection complete') && needles.every((n) => l.includes(n))) return accessLogSummary(l);
  }
  return undefined;
}

/** The fields of an access log line that show who talked to whom (JSON lines); a text line as it is. */
function accessLogSummary(line: string): string {
  const FIELDS = [
    'src.workload',
    'src.identity',
    'dst.workload',
    'dst.identity',
    'dst.hbone_addr',
    'direction',
    'error',
  ];
  try {
    const rec = JSON.parse(line) as Record<string, unknown>;
    const parts = FIELDS.filter((f) => rec[f] !== undefined).map((f) => `${f}=${String(rec[f])}`);
    return `"${String(rec.msg ?? 'connection complete')}" ${parts.join(' ')}`;
  } catch {
    return line.length > 300 ? `${line.slice(0, 300)}…` : line;
  }
}

function describeAnswers(answers: readonly ClientAnswer[]): string {
  const ok = answers.filter((a) => a.ok);
  const by = [...new Set(ok.map((a) => a.pod).filter((p): p is string => p !== undefined))].sort();
  const errors = [...new Set(answers.filter((a) => !a.ok).map((a) => a.error ?? `status ${a.status}`))];
  return `${ok.length}/${answers.length} answered${by.length > 0 ? ` by ${by.join(', ')}` : ''}${errors.length > 0 ? `; failures: ${errors.join('; ')}` : ''}`;
}

function policyYaml(principal: string): string {
  // AuthorizationPolicy principals are written without the spiffe:// scheme.
  return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${CHECK_POLICY_NAME}
  namespace: ${DEMO_NAMESPACE}
spec:
  selector:
    matchLabels:
      app: echo
  action: DENY
  rules:
  - from:
    - source:
        principals: ["${principal.replace(/^spiffe:\/\//, '')}"]
`;
}

/** Waits until the ztunnels of `nodes` attach (or no longer attach) the check's policy to every echo pod. */
async function policyOnEchoes(
  mesh: MeshOperations,
  s: Samples,
  present: boolean,
  timeoutMs: number,
): Promise<void> {
  const key = `${DEMO_NAMESPACE}/${CHECK_POLICY_NAME}`;
  await until(
    `the policy ${key} ${present ? 'reaching' : 'leaving'} the ztunnels of ${s.echoNodes.join(', ')}`,
    timeoutMs,
    async () => {
      for (const node of s.echoNodes) {
        const dump = await configDump(mesh, node);
        const known = dump.policies.some(
          (p) => p.namespace === DEMO_NAMESPACE && p.name === CHECK_POLICY_NAME,
        );
        if (known !== present) return undefined;
        for (const e of s.echoes.filter((x) => x.node === node)) {
          const w = dump.workloads.find((x) => x.namespace === DEMO_NAMESPACE && x.name === e.name);
          const policies = ((w?.raw as { authorizationPolicies?: unknown })?.authorizationPolicies ??
            []) as unknown[];
          if (policies.includes(key) !== present) return undefined;
        }
      }
      return true;
    },
  );
}

async function trafficFlowing(mesh: MeshOperations, s: Samples, url: string): Promise<string> {
  const answers = await requests(mesh, s.client, url, REQUESTS);
  const text = `${DEMO_NAMESPACE}/${s.client.name} (${s.client.node}) → ${url}: ${describeAnswers(answers)}`;
  if (!answers.every((a) => a.ok)) fail(text);
  return text;
}

async function mtlsIdentity(
  mesh: MeshOperations,
  s: Samples,
  before: number,
  settleMs: number,
): Promise<string> {
  const labels = {
    reporter: 'destination',
    destination_workload_namespace: DEMO_NAMESPACE,
    source_principal: s.principal,
    connection_security_policy: 'mutual_tls',
  };
  let after = before;
  try {
    await until('the destination counters to move', settleMs, async () => {
      after = await countersOn(mesh, s.echoNodes, labels);
      return after > before ? true : undefined;
    });
  } catch {
    fail(
      `ztunnel on ${s.echoNodes.join(', ')} counted no connection from ${s.principal} over mutual_tls (${OPENED} stayed at ${before})`,
    );
  }
  // The destination's line (direction inbound): the client's ztunnel logs the same identity outbound.
  const components = await mesh.components();
  const log = s.echoNodes
    .map((node) => accessLogLine(components, node, [s.principal, 'inbound']))
    .find((l) => l !== undefined);
  return `ztunnel on ${s.echoNodes.join(', ')} counted ${after - before} inbound connection(s) from source_principal=${s.principal} over mutual_tls${log === undefined ? '' : `; access log: ${log}`}`;
}

async function policyDenial(
  mesh: MeshOperations,
  s: Samples,
  url: string,
  settleMs: number,
): Promise<string> {
  const denyLabels = {
    reporter: 'destination',
    destination_workload_namespace: DEMO_NAMESPACE,
    response_flags: 'DENY',
  };
  const principal = s.principal.replace(/^spiffe:\/\//, '');
  await mesh.apply(policyYaml(s.principal));
  let denied: ClientAnswer[];
  let deniedCount = 0;
  try {
    await policyOnEchoes(mesh, s, true, settleMs);
    const before = await countersOn(mesh, s.echoNodes, denyLabels, CLOSED);
    denied = await requests(mesh, s.client, url, 2);
    await until('the DENY counter to move', settleMs, async () => {
      deniedCount = (await countersOn(mesh, s.echoNodes, denyLabels, CLOSED)) - before;
      return deniedCount > 0 ? true : undefined;
    }).catch(() => undefined);
  } finally {
    await mesh.delete('AuthorizationPolicy', DEMO_NAMESPACE, CHECK_POLICY_NAME);
  }
  const during = `with AuthorizationPolicy ${DEMO_NAMESPACE}/${CHECK_POLICY_NAME} (DENY from ${principal}): ${describeAnswers(denied)}, ztunnel counted ${deniedCount} connection(s) closed with response_flags=DENY`;
  if (denied.some((a) => a.ok) || deniedCount === 0) fail(during);
  await policyOnEchoes(mesh, s, false, settleMs);
  const restored = await requests(mesh, s.client, url, 2);
  const after = `after deleting it: ${describeAnswers(restored)}`;
  if (!restored.every((a) => a.ok)) fail(`${during}; ${after}`);
  return `${during}; ${after}`;
}

async function nonMeshPath(mesh: MeshOperations, s: Samples, settleMs: number): Promise<string> {
  const echo = s.echoes[0];
  if (echo?.ip === undefined) fail('no echo pod has an IP');
  // No kube-proxy here: a pod outside the mesh has nothing to translate a Service VIP, so it
  // dials an echo pod directly, as it would reach a headless Service.
  const url = `http://${echo.ip}:${ECHO_CONTAINER_PORT}/`;
  const labels = {
    reporter: 'destination',
    destination_workload_namespace: DEMO_NAMESPACE,
    source_workload_namespace: LEGACY_NAMESPACE,
    connection_security_policy: 'unknown',
  };
  const before = await countersOn(mesh, [echo.node], labels);
  const answers = await requests(mesh, s.legacy, url, 2);
  const text = `${LEGACY_NAMESPACE}/${s.legacy.name} (outside the mesh) → ${echo.name} ${url}: ${describeAnswers(answers)}`;
  if (!answers.every((a) => a.ok)) fail(`${text} (PERMISSIVE should accept plain text)`);
  let after = before;
  try {
    await until('the plain-text counter to move', settleMs, async () => {
      after = await countersOn(mesh, [echo.node], labels);
      return after > before ? true : undefined;
    });
  } catch {
    fail(
      `${text}, but ztunnel on ${echo.node} counted no plain-text connection from ${LEGACY_NAMESPACE} (was it captured at all?)`,
    );
  }
  return `${text}; ztunnel on ${echo.node} counted ${after - before} with connection_security_policy=unknown (no mTLS)`;
}

/** Runs the four checks in order; a check that cannot run (its precondition failed) is a ✗. */
export async function runGuidedCheck(
  mesh: MeshOperations,
  options: GuidedCheckOptions = {},
): Promise<GuidedCheckResult> {
  const print = options.print ?? (() => {});
  const settleMs = options.settleTimeoutMs ?? 10_000;
  const checks: CheckOutcome[] = [];
  const record = (name: string, ok: boolean, seen: string): void => {
    checks.push({ name, ok, seen });
    print(`${ok ? '✓' : '✗'} ${name}: ${seen}`);
  };
  const attempt = async (name: string, fn: () => Promise<string>): Promise<boolean> => {
    try {
      record(name, true, await fn());
      return true;
    } catch (err) {
      record(name, false, errorMessage(err));
      return false;
    }
  };

  let samples: Samples;
  try {
    samples = await findSamples(mesh);
  } catch (err) {
    for (const name of [
      'traffic flowing',
      'mTLS identity at the destination',
      'policy denial',
      'non-mesh path',
    ]) {
      record(name, false, `not run: ${errorMessage(err)}`);
    }
    return { passed: false, checks };
  }
  const s = samples;
  const url = `http://${s.vip}:${ECHO_SERVICE_PORT}/`;
  const mtlsLabels = {
    reporter: 'destination',
    destination_workload_namespace: DEMO_NAMESPACE,
    source_principal: s.principal,
    connection_security_policy: 'mutual_tls',
  };
  let mtlsBefore = 0;
  try {
    mtlsBefore = await countersOn(mesh, s.echoNodes, mtlsLabels);
  } catch {
    // Unreadable metrics fail the identity check below with its own message.
  }
  const flowing = await attempt('traffic flowing', () => trafficFlowing(mesh, s, url));
  await attempt('mTLS identity at the destination', () =>
    flowing
      ? mtlsIdentity(mesh, s, mtlsBefore, settleMs)
      : Promise.reject(new Error('not run: no traffic flowed')),
  );
  await attempt('policy denial', () =>
    flowing ? policyDenial(mesh, s, url, settleMs) : Promise.reject(new Error('not run: no traffic flowed')),
  );
  await attempt('non-mesh path', () => nonMeshPath(mesh, s, settleMs));
  return { passed: checks.every((c) => c.ok), checks };
}
