/**
 * What `apply` accepts: the documents of a YAML (or JSON) text, each validated alone. Namespaces,
 * Pods, Services, AuthorizationPolicies and PeerAuthentications are checked by the same validation
 * istiod applies to its manifests (so what passes here is what istiod reads); Deployments and the
 * pod fields the pod runner needs (containers, commands, probes) are checked here.
 */

import { dns1123Label } from '@ambient/common/config/formats';
import { parseManifest } from '@ambient/common/config/manifests';
import { isPlainObject } from '@ambient/common/config/schema';
import { validateObject } from '@ambient/common/config/validate';
import { builtinProgram } from '../samples/images.ts';

export const SUPPORTED_KINDS = [
  'Namespace',
  'Pod',
  'Deployment',
  'Service',
  'AuthorizationPolicy',
  'PeerAuthentication',
] as const;
export type SupportedKind = (typeof SUPPORTED_KINDS)[number];

/** Where names without a namespace go, as `kubectl apply` without `-n`. */
export const DEFAULT_NAMESPACE = 'default';

export type KubeDoc = Record<string, unknown> & { metadata: Record<string, unknown> };

/** One valid document. */
export interface Resource {
  readonly kind: SupportedKind;
  /** Undefined for Namespaces. */
  readonly namespace: string | undefined;
  readonly name: string;
  /** Normalised (apiVersion, namespace set, nulls dropped). */
  readonly object: KubeDoc;
  /** 1-based line of the document in the applied text. */
  readonly line: number;
  /** Pods and Deployments: the pod spec the runner runs. */
  readonly workload?: WorkloadSpec;
}

/** One refused document and why. */
export interface RejectedDocument {
  readonly line: number;
  /** `Kind namespace/name` as far as the document says. */
  readonly ref: string;
  readonly reason: string;
}

export interface EnvVar {
  readonly name: string;
  readonly value?: string;
  /** The downward API fields the runner knows: metadata.name/namespace/uid, spec.nodeName, spec.serviceAccountName, status.podIP. */
  readonly fieldPath?: string;
}

export interface ProbeSpec {
  readonly kind: 'http' | 'tcp';
  readonly port: number;
  readonly path: string;
  readonly periodMs: number;
  readonly initialDelayMs: number;
}

export interface ContainerSpec {
  readonly name: string;
  readonly image: string;
  /** The argv to run: a built-in image's program or `command`, then `args`. */
  readonly argv: readonly [string, ...string[]];
  readonly env: readonly EnvVar[];
  readonly readinessProbe: ProbeSpec | undefined;
}

export interface WorkloadSpec {
  readonly serviceAccountName: string;
  readonly nodeName: string | undefined;
  readonly terminationGracePeriodMs: number;
  readonly containers: readonly ContainerSpec[];
}

const DOWNWARD_FIELDS = [
  'metadata.name',
  'metadata.namespace',
  'metadata.uid',
  'spec.nodeName',
  'spec.serviceAccountName',
  'status.podIP',
];

/** Deployment names leave room for `-<10 char hash>-<5 char suffix>` within a pod name's 63. */
const MAX_DEPLOYMENT_NAME = 47;

/** The string-valued entries of a map (labels, annotations, selectors); anything else is dropped. */
export function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  }
  return out;
}

class Invalid extends Error {}

function fail(path: string, message: string): never {
  throw new Invalid(`${path}: ${message}`);
}

function stringArray(v: unknown, path: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail(path, 'must be a list of strings');
  return v as string[];
}

function num(v: unknown, path: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(path, `must be an integer >= ${min}`);
  return v;
}

function probePort(
  v: unknown,
  path: string,
  ports: readonly { name?: string; containerPort: number }[],
): number {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536) return v;
  if (typeof v === 'string') {
    const named = ports.find((p) => p.name === v);
    if (named) return named.containerPort;
    if (/^\d+$/.test(v)) return probePort(Number(v), path, ports);
  }
  return fail(path, `${JSON.stringify(v)} is neither a port number nor the name of a container port`);
}

function probe(
  v: unknown,
  path: string,
  ports: readonly { name?: string; containerPort: number }[],
): ProbeSpec | undefined {
  if (v === undefined) return undefined;
  if (!isPlainObject(v)) fail(path, 'must be an object');
  const periodMs = num(v.periodSeconds, `${path}.periodSeconds`, 1, 1) * 1000;
  const initialDelayMs = num(v.initialDelaySeconds, `${path}.initialDelaySeconds`, 0, 0) * 1000;
  if (isPlainObject(v.httpGet)) {
    const p = v.httpGet.path ?? '/';
    if (typeof p !== 'string' || !p.startsWith('/')) fail(`${path}.httpGet.path`, 'must start with /');
    return {
      kind: 'http',
      port: probePort(v.httpGet.port, `${path}.httpGet.port`, ports),
      path: p,
      periodMs,
      initialDelayMs,
    };
  }
  if (isPlainObject(v.tcpSocket)) {
    return {
      kind: 'tcp',
      port: probePort(v.tcpSocket.port, `${path}.tcpSocket.port`, ports),
      path: '',
      periodMs,
      initialDelayMs,
    };
  }
  return fail(path, 'only httpGet and tcpSocket probes run in the local mesh');
}

function container(v: unknown, path: string): ContainerSpec {
  if (!isPlainObject(v)) fail(path, 'must be an object');
  const name = v.name;
  if (typeof name !== 'string' || dns1123Label(name) !== undefined) {
    fail(`${path}.name`, `${JSON.stringify(name)} must be a DNS-1123 label`);
  }
  const image = v.image;
  if (typeof image !== 'string' || image === '') fail(`${path}.image`, 'required');
  const command = stringArray(v.command, `${path}.command`);
  const args = stringArray(v.args, `${path}.args`) ?? [];
  const program = builtinProgram(image);
  let argv: [string, ...string[]];
  if (command !== undefined && command.length > 0) {
    argv = [command[0] as string, ...command.slice(1), ...args];
  } else if (program !== undefined) {
    argv = [process.execPath, program, ...args];
  } else {
    return fail(
      `${path}.command`,
      `required for image ${JSON.stringify(image)}: the local mesh has no container runtime, only the built-in images ambient/echo and ambient/client run without a command`,
    );
  }
  const ports: { name?: string; containerPort: number }[] = [];
  if (v.ports !== undefined) {
    if (!Array.isArray(v.ports)) fail(`${path}.ports`, 'must be a list');
    v.ports.forEach((p, i) => {
      if (!isPlainObject(p) || typeof p.containerPort !== 'number')
        fail(`${path}.ports[${i}].containerPort`, 'required');
      ports.push({
        containerPort: p.containerPort,
        ...(typeof p.name === 'string' ? { name: p.name } : {}),
      });
    });
  }
  const env: EnvVar[] = [];
  if (v.env !== undefined) {
    if (!Array.isArray(v.env)) fail(`${path}.env`, 'must be a list');
    v.env.forEach((e, i) => {
      const at = `${path}.env[${i}]`;
      if (!isPlainObject(e) || typeof e.name !== 'string' || e.name === '') fail(`${at}.name`, 'required');
      if (e.value !== undefined && typeof e.value !== 'string') fail(`${at}.value`, 'must be a string');
      if (e.valueFrom !== undefined) {
        const fieldPath =
          isPlainObject(e.valueFrom) && isPlainObject(e.valueFrom.fieldRef)
            ? e.valueFrom.fieldRef.fieldPath
            : undefined;
        if (typeof fieldPath !== 'string' || !DOWNWARD_FIELDS.includes(fieldPath)) {
          fail(`${at}.valueFrom`, `only fieldRef.fieldPath of ${DOWNWARD_FIELDS.join(', ')}`);
        }
        env.push({ name: e.name, fieldPath });
      } else {
        env.push({ name: e.name, value: (e.value as string | undefined) ?? '' });
      }
    });
  }
  return {
    name,
    image,
    argv,
    env,
    readinessProbe: probe(v.readinessProbe, `${path}.readinessProbe`, ports),
  };
}

/** The runnable part of a pod spec; throws Invalid naming the field. */
function workloadSpec(spec: unknown, path: string): WorkloadSpec {
  if (!isPlainObject(spec)) fail(path, 'required');
  const containers = spec.containers;
  if (!Array.isArray(containers) || containers.length === 0)
    fail(`${path}.containers`, 'needs at least one container');
  const parsed = containers.map((c, i) => container(c, `${path}.containers[${i}]`));
  const names = new Set<string>();
  for (const c of parsed) {
    if (names.has(c.name)) fail(`${path}.containers`, `container name ${c.name} is used twice`);
    names.add(c.name);
  }
  // Run-to-completion pods (OnFailure, Never) are Jobs' business; the local mesh runs services.
  if (spec.restartPolicy !== undefined && spec.restartPolicy !== 'Always') {
    fail(
      `${path}.restartPolicy`,
      'only Always runs in the local mesh (use ambientctl exec for one-off commands)',
    );
  }
  const sa = spec.serviceAccountName ?? spec.serviceAccount ?? 'default';
  if (typeof sa !== 'string' || dns1123Label(sa) !== undefined) {
    fail(`${path}.serviceAccountName`, `${JSON.stringify(sa)} must be a DNS-1123 label`);
  }
  const nodeName = spec.nodeName;
  if (nodeName !== undefined && typeof nodeName !== 'string') fail(`${path}.nodeName`, 'must be a string');
  return {
    serviceAccountName: sa,
    nodeName,
    // Kubernetes' default is 30 s; a local mesh stops its pods quicker unless told otherwise.
    terminationGracePeriodMs:
      num(spec.terminationGracePeriodSeconds, `${path}.terminationGracePeriodSeconds`, 0, 2) * 1000,
    containers: parsed,
  };
}

function labelsSubset(selector: Record<string, unknown>, labels: unknown): boolean {
  if (!isPlainObject(labels)) return false;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** A Deployment (apps/v1): name, replicas, selector, template. */
function deployment(raw: Record<string, unknown>): Resource {
  if (raw.apiVersion !== 'apps/v1')
    fail('apiVersion', `${JSON.stringify(raw.apiVersion)} is not served for Deployment (accepted: apps/v1)`);
  const meta = raw.metadata;
  if (!isPlainObject(meta)) fail('metadata', 'required');
  const name = meta.name;
  if (typeof name !== 'string' || dns1123Label(name) !== undefined || name.length > MAX_DEPLOYMENT_NAME) {
    fail(
      'metadata.name',
      `${JSON.stringify(name)} must be a DNS-1123 label of at most ${MAX_DEPLOYMENT_NAME} characters`,
    );
  }
  const namespace = meta.namespace ?? DEFAULT_NAMESPACE;
  if (typeof namespace !== 'string' || dns1123Label(namespace) !== undefined) {
    fail('metadata.namespace', `${JSON.stringify(namespace)} must be a DNS-1123 label`);
  }
  const spec = raw.spec;
  if (!isPlainObject(spec)) fail('spec', 'required');
  num(spec.replicas, 'spec.replicas', 0, 1);
  const selector = spec.selector;
  if (
    !isPlainObject(selector) ||
    !isPlainObject(selector.matchLabels) ||
    Object.keys(selector.matchLabels).length === 0
  ) {
    fail('spec.selector.matchLabels', 'required (the local mesh selects by labels only)');
  }
  const template = spec.template;
  if (!isPlainObject(template)) fail('spec.template', 'required');
  const tmeta = isPlainObject(template.metadata) ? template.metadata : {};
  if (!labelsSubset(selector.matchLabels, tmeta.labels)) {
    fail('spec.template.metadata.labels', 'must carry every label of spec.selector.matchLabels');
  }
  // The template is a pod: the same checks istiod applies to pods.
  const asPod = validateObject({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { ...tmeta, name: `${name}-template`, namespace },
    spec: template.spec,
  });
  if (!asPod.ok) fail('spec.template', asPod.reason);
  const workload = workloadSpec(template.spec, 'spec.template.spec');
  const object: KubeDoc = {
    ...raw,
    metadata: { ...meta, namespace },
  };
  return { kind: 'Deployment', namespace, name, object, line: 0, workload };
}

function refOf(raw: unknown): string {
  if (!isPlainObject(raw)) return '(not an object)';
  const meta = isPlainObject(raw.metadata) ? raw.metadata : {};
  const kind = typeof raw.kind === 'string' ? raw.kind : '(no kind)';
  const name = typeof meta.name === 'string' ? meta.name : '(no name)';
  if (kind === 'Namespace') return `${kind} ${name}`;
  const ns = typeof meta.namespace === 'string' ? meta.namespace : DEFAULT_NAMESPACE;
  return `${kind} ${ns}/${name}`;
}

function resourceOf(raw: unknown): Resource {
  if (!isPlainObject(raw)) fail('object', 'must be a mapping');
  const kind = raw.kind;
  if (kind === 'Deployment') return deployment(raw);
  if (typeof kind !== 'string' || !(SUPPORTED_KINDS as readonly string[]).includes(kind)) {
    fail(
      'kind',
      `${JSON.stringify(kind)} is not supported by the local mesh (supported: ${SUPPORTED_KINDS.join(', ')})`,
    );
  }
  const v = validateObject(raw, { defaultNamespace: DEFAULT_NAMESPACE });
  if (!v.ok) throw new Invalid(v.reason);
  const object = v.object as unknown as KubeDoc;
  const name = object.metadata.name as string;
  const namespace = kind === 'Namespace' ? undefined : (object.metadata.namespace as string);
  if (kind === 'Pod') {
    // What the runner owns is dropped: the API server assigns uid and status, the scheduler nodeName.
    const { status: _status, ...rest } = object;
    const metadata = { ...object.metadata };
    delete metadata.uid;
    const workload = workloadSpec(object.spec, 'spec');
    return { kind, namespace, name, object: { ...rest, metadata } as KubeDoc, line: 0, workload };
  }
  return { kind: kind as SupportedKind, namespace, name, object, line: 0 };
}

/** Splits and validates a text of manifests: every document is accepted or refused on its own. */
export function parseResources(text: string): { resources: Resource[]; rejected: RejectedDocument[] } {
  const parsed = parseManifest(text);
  const resources: Resource[] = [];
  const rejected: RejectedDocument[] = parsed.problems.map((p) => ({
    line: p.line,
    ref: '(unparseable document)',
    reason: p.reason,
  }));
  for (const { line, object } of parsed.objects) {
    try {
      resources.push({ ...resourceOf(object), line });
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      rejected.push({ line, ref: refOf(object), reason: err.message });
    }
  }
  rejected.sort((a, b) => a.line - b.line);
  return { resources, rejected };
}

/** `Kind namespace/name` (or `Namespace name`). */
export function describeResource(r: { kind: string; namespace: string | undefined; name: string }): string {
  return r.namespace === undefined ? `${r.kind} ${r.name}` : `${r.kind} ${r.namespace}/${r.name}`;
}
