/**
 * The contract between the `istio-cni` plugin binary (cni/plugin/istio-cni.c) and the node agent:
 * where the agent listens, what the plugin sends on ADD, what the agent answers, the plugin's
 * conflist fields (spec §6.1), and the enrollment state file the plugin reads when the agent is
 * down. The C side hard-codes the same names; cni/test/plugin-binary.test.ts checks they agree.
 *
 * ADD body (JSON, POST /cmdadd): a superset of upstream's `CNIPluginAddEvent`
 * `{Netns, PodName, PodNamespace, IPs}` (IPs are prevResult's `ips` entries as received), plus
 * `PodUID`, `InfraContainerID`, `ContainerID`, `IfName` from the CNI environment and `Config`, the
 * plugin's stdin verbatim (its conflist fields, `cniVersion`, `prevResult`). The plugin forwards
 * raw text and never re-encodes it; all parsing and validation happen here.
 *
 * Answers: 200 with the result to print (prevResult re-encoded for the config's cniVersion), or
 * 4xx/5xx with a CNI error object `{cniVersion, code, msg, details}` the plugin prints as is.
 */
import { isIP } from 'node:net';
import { join } from 'node:path';
import { MeshError } from '@ambient/common/errors';
import { writeFileAtomic } from './agent/install/atomic-file.ts';

/** CNI spec versions the plugin accepts (its VERSION answer). */
export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type SupportedCniVersion = (typeof SUPPORTED_CNI_VERSIONS)[number];

/** The plugin `type` (and binary name). */
export const ISTIO_CNI_PLUGIN_TYPE = 'istio-cni';
export const DEFAULT_CNI_AGENT_RUN_DIR = '/var/run/istio-cni';
/** The agent's plugin event socket, inside `cni_agent_run_dir`. */
export const PLUGIN_EVENT_SOCKET_NAME = 'pluginevent.sock';
/** The agent's enrollment state file, inside `cni_agent_run_dir`. */
export const ENROLLMENT_STATE_FILE_NAME = 'enrollment-state';
/** First meaningful line of the state file; the plugin ignores a file without it. */
export const ENROLLMENT_STATE_HEADER = 'istio-cni-enrollment-state 1';
export const CMD_ADD_PATH = '/cmdadd';
export const PLUGIN_LOG_PATH = '/log';
/** The plugin's deadline for one ADD round trip (spec §6.1). */
export const PLUGIN_AGENT_TIMEOUT_MS = 5000;

/**
 * CNI error codes: the spec's well-known ones (1-99) and this plugin's own (100+). The agent picks
 * the code; the plugin prints it.
 */
export const CNI_ERROR_CODE = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidNetworkConfig: 7,
  tryAgainLater: 11,
  /** The agent refused or failed to enroll an ambient pod, and retrying unchanged will not help. */
  enrollmentFailed: 100,
  /** The plugin could not understand the agent's answer. */
  agentProtocol: 101,
} as const;

const CONFIG_CODE = CNI_ERROR_CODE.invalidNetworkConfig;

/** A CNI error result, as printed on stdout by a failing plugin. */
export interface CniErrorResult {
  readonly cniVersion: string;
  readonly code: number;
  readonly msg: string;
  readonly details?: string;
}

/**
 * Why a plugin request or state file was rejected. `field` names the offending field (as a path
 * into the request body, e.g. `Config.prevResult.ips[0].address`) and `cniCode` is the CNI error
 * code the agent answers with.
 */
export type PluginProtocolErrorCode =
  | 'BODY_INVALID'
  | 'FIELD_INVALID'
  | 'VERSION_UNSUPPORTED'
  | 'STATE_INVALID';

export class PluginProtocolError extends MeshError<PluginProtocolErrorCode> {
  readonly field: string | undefined;
  readonly cniCode: number;

  constructor(
    code: PluginProtocolErrorCode,
    message: string,
    options: { field?: string; cniCode?: number; cause?: unknown } = {},
  ) {
    super(code, message, { cause: options.cause });
    this.field = options.field;
    this.cniCode = options.cniCode ?? CONFIG_CODE;
  }
}

// ---------------------------------------------------------------- plugin configuration (spec §6.1)

export const PLUGIN_LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'none'] as const;
export type PluginLogLevel = (typeof PLUGIN_LOG_LEVELS)[number];

export interface LabelSelectorRequirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  readonly values?: readonly string[];
}

/** A Kubernetes label selector (both parts ANDed; an empty selector matches everything). */
export interface LabelSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: readonly LabelSelectorRequirement[];
}

/** One entry of `ambient.enablementSelectors`: a pod is ambient when any entry matches. */
export interface EnablementSelector {
  readonly podSelector?: LabelSelector;
  readonly namespaceSelector?: LabelSelector;
}

/** The Helm default (spec §6.2): pod label ambient, or namespace label ambient and pod not `none`. */
export const DEFAULT_ENABLEMENT_SELECTORS: readonly EnablementSelector[] = [
  { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
  {
    podSelector: {
      matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }],
    },
    namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
  },
];

/** The istio-cni conflist entry's own fields, typed. JSON names are in {@link pluginConfigFields}. */
export interface IstioCniPluginConfig {
  readonly pluginLogLevel: PluginLogLevel;
  readonly cniAgentRunDir: string;
  readonly ambientEnabled: boolean;
  readonly enablementSelectors: readonly EnablementSelector[];
  readonly excludeNamespaces: readonly string[];
  /** The agent's own namespace. */
  readonly podNamespace: string;
  readonly nativeNftables: boolean;
  readonly enableAmbientDetectionRetry: boolean;
}

export const DEFAULT_PLUGIN_CONFIG: IstioCniPluginConfig = {
  pluginLogLevel: 'info',
  cniAgentRunDir: DEFAULT_CNI_AGENT_RUN_DIR,
  ambientEnabled: true,
  enablementSelectors: DEFAULT_ENABLEMENT_SELECTORS,
  excludeNamespaces: ['kube-system'],
  podNamespace: 'istio-system',
  nativeNftables: false,
  enableAmbientDetectionRetry: false,
};

/** The conflist fields (JSON names as upstream writes them) for a plugin configuration. */
export function pluginConfigFields(config: IstioCniPluginConfig): Record<string, unknown> {
  return {
    plugin_log_level: config.pluginLogLevel,
    cni_agent_run_dir: config.cniAgentRunDir,
    ambient_enabled: config.ambientEnabled,
    enablement_selectors: config.enablementSelectors,
    exclude_namespaces: config.excludeNamespaces,
    pod_namespace: config.podNamespace,
    native_nftables: config.nativeNftables,
    enable_ambient_detection_retry: config.enableAmbientDetectionRetry,
  };
}

/** The plugin's socket for a run dir. */
export function pluginEventSocketPath(runDir: string): string {
  return join(runDir, PLUGIN_EVENT_SOCKET_NAME);
}

/** The enrollment state file for a run dir. */
export function enrollmentStatePath(runDir: string): string {
  return join(runDir, ENROLLMENT_STATE_FILE_NAME);
}

// ---------------------------------------------------------------- field validation

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function invalid(field: string, value: unknown, what: string, cniCode: number): PluginProtocolError {
  const message =
    value === undefined
      ? `cmdadd field ${field} is missing (it ${what})`
      : `cmdadd field ${field} ${describe(value)} ${what}`;
  return new PluginProtocolError('FIELD_INVALID', message, { field, cniCode });
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** CNI spec: a container ID is alphanumeric plus `_`, `.`, `-`, starting with an alphanumeric. */
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const POD_UID = /^[A-Za-z0-9-]{1,128}$/;

/** A Kubernetes namespace name (DNS-1123 label, at most 63 characters). */
export function isNamespaceName(s: string): boolean {
  return s.length <= 63 && DNS1123_LABEL.test(s);
}

/** A Kubernetes pod name (DNS-1123 subdomain, at most 253 characters). */
export function isPodName(s: string): boolean {
  return s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
}

function requireString(obj: JsonObject, key: string, field: string, cniCode: number): string {
  const v = obj[key];
  if (typeof v !== 'string' || v === '') throw invalid(field, v, 'must be a non-empty string', cniCode);
  return v;
}

/** Empty strings mean "not set": the plugin sends every CNI_ARGS key, present or not. */
function optionalString(obj: JsonObject, key: string, field: string, cniCode: number): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(field, v, 'must be a string', cniCode);
  return v;
}

function optionalBoolean(obj: JsonObject, key: string, prefix: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') {
    throw invalid(`${prefix}.${key}`, v, 'must be a boolean', CONFIG_CODE);
  }
  return v;
}

function stringArray(obj: JsonObject, key: string, prefix: string, fallback: readonly string[]): string[] {
  const v = obj[key];
  if (v === undefined || v === null) return [...fallback];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw invalid(`${prefix}.${key}`, v, 'must be an array of strings', CONFIG_CODE);
  }
  return v as string[];
}

function parseLabelSelector(v: unknown, field: string): LabelSelector {
  const bad = (what: string) => invalid(field, v, what, CONFIG_CODE);
  if (!isObject(v)) throw bad('must be a label selector object');
  const out: { matchLabels?: Record<string, string>; matchExpressions?: LabelSelectorRequirement[] } = {};
  if (v.matchLabels !== undefined && v.matchLabels !== null) {
    if (!isObject(v.matchLabels) || Object.values(v.matchLabels).some((x) => typeof x !== 'string')) {
      throw bad('has matchLabels that is not a map of strings');
    }
    out.matchLabels = v.matchLabels as Record<string, string>;
  }
  if (v.matchExpressions !== undefined && v.matchExpressions !== null) {
    if (!Array.isArray(v.matchExpressions)) throw bad('has matchExpressions that is not an array');
    out.matchExpressions = v.matchExpressions.map((e, i) => {
      const ef = `${field}.matchExpressions[${i}]`;
      if (!isObject(e) || typeof e.key !== 'string') {
        throw invalid(ef, e, 'must have a string key', CONFIG_CODE);
      }
      const op = e.operator;
      if (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist') {
        throw invalid(`${ef}.operator`, op, 'must be In, NotIn, Exists or DoesNotExist', CONFIG_CODE);
      }
      const values = e.values === undefined || e.values === null ? undefined : e.values;
      if (values !== undefined && (!Array.isArray(values) || values.some((x) => typeof x !== 'string'))) {
        throw invalid(`${ef}.values`, values, 'must be an array of strings', CONFIG_CODE);
      }
      return values === undefined ? { key: e.key, operator: op } : { key: e.key, operator: op, values };
    });
  }
  return out;
}

/**
 * The plugin's own fields from its network configuration; absent fields take the defaults the
 * plugin binary also assumes. Throws PluginProtocolError naming the first wrong field.
 */
export function parsePluginConfig(raw: JsonObject, prefix = 'Config'): IstioCniPluginConfig {
  const d = DEFAULT_PLUGIN_CONFIG;
  const level = raw.plugin_log_level ?? d.pluginLogLevel;
  if (typeof level !== 'string' || !(PLUGIN_LOG_LEVELS as readonly string[]).includes(level)) {
    throw invalid(
      `${prefix}.plugin_log_level`,
      level,
      `must be one of ${PLUGIN_LOG_LEVELS.join(', ')}`,
      CONFIG_CODE,
    );
  }
  const runDir = raw.cni_agent_run_dir ?? d.cniAgentRunDir;
  if (typeof runDir !== 'string' || !runDir.startsWith('/') || runDir.includes('\0')) {
    throw invalid(`${prefix}.cni_agent_run_dir`, runDir, 'must be an absolute path', CONFIG_CODE);
  }
  const selectorsRaw = raw.enablement_selectors;
  let enablementSelectors = d.enablementSelectors;
  if (selectorsRaw !== undefined && selectorsRaw !== null) {
    if (!Array.isArray(selectorsRaw)) {
      throw invalid(`${prefix}.enablement_selectors`, selectorsRaw, 'must be an array', CONFIG_CODE);
    }
    enablementSelectors = selectorsRaw.map((s, i) => {
      const field = `${prefix}.enablement_selectors[${i}]`;
      if (!isObject(s)) throw invalid(field, s, 'must be an object', CONFIG_CODE);
      const out: { podSelector?: LabelSelector; namespaceSelector?: LabelSelector } = {};
      if (s.podSelector !== undefined && s.podSelector !== null) {
        out.podSelector = parseLabelSelector(s.podSelector, `${field}.podSelector`);
      }
      if (s.namespaceSelector !== undefined && s.namespaceSelector !== null) {
        out.namespaceSelector = parseLabelSelector(s.namespaceSelector, `${field}.namespaceSelector`);
      }
      return out;
    });
  }
  const podNamespace = raw.pod_namespace ?? d.podNamespace;
  if (typeof podNamespace !== 'string') {
    throw invalid(`${prefix}.pod_namespace`, podNamespace, 'must be a string', CONFIG_CODE);
  }
  return {
    pluginLogLevel: level as PluginLogLevel,
    cniAgentRunDir: runDir,
    ambientEnabled: optionalBoolean(raw, 'ambient_enabled', prefix, d.ambientEnabled),
    enablementSelectors,
    excludeNamespaces: stringArray(raw, 'exclude_namespaces', prefix, d.excludeNamespaces),
    podNamespace,
    nativeNftables: optionalBoolean(raw, 'native_nftables', prefix, d.nativeNftables),
    enableAmbientDetectionRetry: optionalBoolean(raw, 'enable_ambient_detection_retry', prefix, false),
  };
}

// ---------------------------------------------------------------- the ADD request

/** One address of the pod, from prevResult's `ips`. */
export interface PodIpConfig {
  /** CIDR notation as in the result (`10.101.1.2/24`). */
  readonly address: string;
  readonly ip: string;
  readonly prefixLength: number;
  readonly family: 4 | 6;
  readonly gateway: string | undefined;
  /** Index into prevResult's `interfaces`. */
  readonly interfaceIndex: number | undefined;
  readonly interfaceName: string | undefined;
  /** True when the interface is inside the pod's sandbox (or when the result does not say). */
  readonly inSandbox: boolean;
}

/** A validated ADD request: what the agent's enrollment needs to know about the new pod. */
export interface CmdAddRequest {
  /** CNI_CONTAINERID: the sandbox container. */
  readonly containerId: string;
  /** CNI_NETNS: the pod's netns path. */
  readonly netns: string;
  /** CNI_IFNAME. */
  readonly ifName: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly podUid: string | undefined;
  readonly infraContainerId: string | undefined;
  /** The network configuration's version; the answer is encoded for it. */
  readonly cniVersion: SupportedCniVersion;
  /** The network (conflist) name. */
  readonly networkName: string | undefined;
  readonly config: IstioCniPluginConfig;
  /** The result of the previous plugins, exactly as received. */
  readonly prevResult: Readonly<JsonObject>;
  /** prevResult's addresses, parsed. */
  readonly ips: readonly PodIpConfig[];
}

function parseIps(prevResult: JsonObject): PodIpConfig[] {
  const field = 'Config.prevResult';
  const code = CONFIG_CODE;
  const interfaces = prevResult.interfaces ?? [];
  if (!Array.isArray(interfaces)) throw invalid(`${field}.interfaces`, interfaces, 'must be an array', code);
  const ifs = interfaces.map((itf, i) => {
    if (!isObject(itf) || typeof itf.name !== 'string') {
      throw invalid(`${field}.interfaces[${i}]`, itf, 'must be an object with a string name', code);
    }
    return { name: itf.name, sandbox: typeof itf.sandbox === 'string' && itf.sandbox !== '' };
  });
  const ips = prevResult.ips ?? [];
  if (!Array.isArray(ips)) throw invalid(`${field}.ips`, ips, 'must be an array', code);
  return ips.map((entry, i) => {
    const f = `${field}.ips[${i}]`;
    if (!isObject(entry)) throw invalid(f, entry, 'must be an object', code);
    const address = entry.address;
    const [ip, prefix, extra] = typeof address === 'string' ? address.split('/') : [];
    const family = ip === undefined ? 0 : isIP(ip);
    const prefixLength = Number(prefix);
    if (
      family === 0 ||
      extra !== undefined ||
      prefix === undefined ||
      !/^\d{1,3}$/.test(prefix) ||
      prefixLength > (family === 4 ? 32 : 128)
    ) {
      throw invalid(`${f}.address`, address, 'is not an IP address in CIDR notation', code);
    }
    const gateway = entry.gateway;
    if (gateway !== undefined && (typeof gateway !== 'string' || isIP(gateway) === 0)) {
      throw invalid(`${f}.gateway`, gateway, 'is not an IP address', code);
    }
    const index = entry.interface;
    if (
      index !== undefined &&
      (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= ifs.length)
    ) {
      throw invalid(`${f}.interface`, index, `is not an index into the ${ifs.length} interfaces`, code);
    }
    const itf = index === undefined ? undefined : ifs[index as number];
    return {
      address: address as string,
      ip: ip as string,
      prefixLength,
      family: family as 4 | 6,
      gateway: gateway as string | undefined,
      interfaceIndex: index as number | undefined,
      interfaceName: itf?.name,
      inSandbox: itf === undefined ? true : itf.sandbox,
    };
  });
}

/**
 * Parses and validates an ADD body. Throws PluginProtocolError naming the first wrong field, with
 * the CNI code the agent should answer: 4 for values from the CNI environment, 1 for an
 * unsupported cniVersion, 7 for the network configuration.
 */
export function parseCmdAddRequest(body: unknown): CmdAddRequest {
  const env = CNI_ERROR_CODE.invalidEnvironment;
  if (!isObject(body)) {
    throw new PluginProtocolError('BODY_INVALID', `cmdadd body ${describe(body)} is not a JSON object`, {
      cniCode: CNI_ERROR_CODE.decodingFailure,
    });
  }
  const containerId = requireString(body, 'ContainerID', 'ContainerID', env);
  if (containerId.length > 256 || !CONTAINER_ID.test(containerId)) {
    throw invalid('ContainerID', containerId, 'is not a CNI container id', env);
  }
  const netns = requireString(body, 'Netns', 'Netns', env);
  if (!netns.startsWith('/') || netns.includes('\0') || netns.length > 4096) {
    throw invalid('Netns', netns, 'is not an absolute netns path', env);
  }
  const ifName = requireString(body, 'IfName', 'IfName', env);
  if (ifName.length > 15 || ifName === '.' || ifName === '..' || /[/:\s]/.test(ifName)) {
    throw invalid('IfName', ifName, 'is not a Linux interface name', env);
  }
  const podName = requireString(body, 'PodName', 'PodName', env);
  if (!isPodName(podName)) throw invalid('PodName', podName, 'is not a Kubernetes pod name', env);
  const podNamespace = requireString(body, 'PodNamespace', 'PodNamespace', env);
  if (!isNamespaceName(podNamespace)) {
    throw invalid('PodNamespace', podNamespace, 'is not a Kubernetes namespace name', env);
  }
  const podUid = optionalString(body, 'PodUID', 'PodUID', env);
  if (podUid !== undefined && !POD_UID.test(podUid)) throw invalid('PodUID', podUid, 'is not a pod UID', env);
  const infraContainerId = optionalString(body, 'InfraContainerID', 'InfraContainerID', env);
  if (infraContainerId !== undefined && !CONTAINER_ID.test(infraContainerId)) {
    throw invalid('InfraContainerID', infraContainerId, 'is not a container id', env);
  }

  const config = body.Config;
  if (!isObject(config)) {
    throw invalid('Config', config, 'must be the network configuration object', CONFIG_CODE);
  }
  const cniVersion = config.cniVersion;
  if (typeof cniVersion !== 'string' || !(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new PluginProtocolError(
      'VERSION_UNSUPPORTED',
      `cmdadd field Config.cniVersion ${describe(cniVersion)} is not one of ${SUPPORTED_CNI_VERSIONS.join(', ')}`,
      { field: 'Config.cniVersion', cniCode: CNI_ERROR_CODE.incompatibleVersion },
    );
  }
  const networkName = config.name;
  if (networkName !== undefined && typeof networkName !== 'string') {
    throw invalid('Config.name', networkName, 'must be a string', CONFIG_CODE);
  }
  const prevResult = config.prevResult;
  if (!isObject(prevResult)) {
    throw invalid(
      'Config.prevResult',
      prevResult,
      'must be the previous plugin result (istio-cni runs chained, after the interface plugin)',
      CONFIG_CODE,
    );
  }
  return {
    containerId,
    netns,
    ifName,
    podName,
    podNamespace,
    podUid,
    infraContainerId,
    cniVersion: cniVersion as SupportedCniVersion,
    networkName,
    config: parsePluginConfig(config),
    prevResult,
    ips: parseIps(prevResult),
  };
}

/** True when dotted version `v` is at least `min`. */
export function cniVersionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/**
 * A result re-encoded for `cniVersion`, otherwise unchanged: the version field, and the per-IP
 * `version` ("4"/"6") that 0.3.x and 0.4.0 results carry and 1.x results do not.
 */
export function encodeResultForVersion(result: Readonly<JsonObject>, cniVersion: string): JsonObject {
  const out: JsonObject = { ...result, cniVersion };
  if (!Array.isArray(result.ips)) return out;
  const legacy = !cniVersionAtLeast(cniVersion, '1.0.0');
  out.ips = result.ips.map((entry: unknown) => {
    if (!isObject(entry)) return entry;
    const { version, ...rest } = entry;
    if (!legacy) return rest;
    const family = typeof rest.address === 'string' && rest.address.includes(':') ? '6' : '4';
    return { version: typeof version === 'string' ? version : family, ...rest };
  });
  return out;
}

/** A CNI error result; `details` is left out when empty. */
export function cniErrorResult(
  cniVersion: string,
  code: number,
  msg: string,
  details?: string,
): CniErrorResult {
  return details === undefined || details === ''
    ? { cniVersion, code, msg }
    : { cniVersion, code, msg, details };
}

// ---------------------------------------------------------------- plugin log lines

/** A log line the plugin (or an upstream plugin's UDS logger) posts to /log. */
export interface PluginLogEntry {
  readonly level: string;
  readonly msg: string;
  readonly fields: Readonly<JsonObject>;
}

/**
 * Parses a /log body: one JSON object, or several separated by newlines (upstream's UDS log
 * format), each with a string `msg`. Lines that are not such objects are returned as `msg` text,
 * so nothing the plugin says is lost.
 */
export function parsePluginLog(body: string): PluginLogEntry[] {
  const out: PluginLogEntry[] = [];
  for (const line of body.split('\n')) {
    const text = line.trim();
    if (text === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      v = undefined;
    }
    if (isObject(v) && typeof v.msg === 'string') {
      const { level, msg, time: _time, ...fields } = v;
      out.push({ level: typeof level === 'string' ? level : 'info', msg, fields });
    } else {
      out.push({ level: 'info', msg: text, fields: {} });
    }
  }
  return out;
}

// ---------------------------------------------------------------- enrollment state file

/** A pod by namespace and name. */
export interface PodRef {
  readonly namespace: string;
  readonly name: string;
}

/**
 * What the agent knows about enrollment, for the plugin's decision while the agent is down:
 * - `namespaces`: pods created there may be ambient (a namespace selector matches it);
 * - `pods`: pods known to be ambient through their own labels, wherever they are;
 * - `exemptPods`: pods known not to be ambient although their namespace is listed.
 * The plugin fails ADD for a listed pod, or for a pod in a listed namespace that is not exempt,
 * and lets every other pod start. Without a readable file (agent never ran since boot: the run
 * dir is tmpfs) it fails ADD for every pod outside `exclude_namespaces`.
 *
 * Residual risk, accepted because the plugin cannot ask the API server: the file is only as fresh
 * as the agent's last write. While the agent is down, a pod made ambient by its own label in an
 * unlisted namespace and scheduled after the agent's last write, or any pod of a namespace labelled
 * ambient after that write, starts unmeshed; the agent's pod watch enrolls such running pods when
 * it returns (spec §6.4). The opposite error (an unlisted pod labelled `none` in a listed
 * namespace) only delays that pod until the agent returns.
 */
export interface EnrollmentState {
  readonly namespaces: readonly string[];
  readonly pods: readonly PodRef[];
  readonly exemptPods: readonly PodRef[];
}

function podKey(p: PodRef): string {
  return `${p.namespace}/${p.name}`;
}

function checkPodRef(p: PodRef, list: string): void {
  if (!isNamespaceName(p.namespace) || !isPodName(p.name)) {
    throw new PluginProtocolError(
      'STATE_INVALID',
      `enrollment state ${list} entry ${JSON.stringify(podKey(p))} is not a namespace/pod name`,
    );
  }
}

/**
 * The state file's text: the header, then one `namespace <ns>`, `pod <ns>/<name>` or
 * `exempt <ns>/<name>` line each, sorted so an unchanged state writes identical bytes.
 */
export function formatEnrollmentState(state: EnrollmentState): string {
  for (const ns of state.namespaces) {
    if (!isNamespaceName(ns)) {
      throw new PluginProtocolError(
        'STATE_INVALID',
        `enrollment state namespace ${JSON.stringify(ns)} is not a namespace name`,
      );
    }
  }
  for (const p of state.pods) checkPodRef(p, 'pods');
  for (const p of state.exemptPods) checkPodRef(p, 'exemptPods');
  const sorted = (xs: Iterable<string>) => [...new Set(xs)].sort();
  const lines = [
    ENROLLMENT_STATE_HEADER,
    '# Written by the istio-cni node agent. The istio-cni plugin reads it only when the agent is',
    '# unreachable, to fail ADD for pods that may be ambient and let every other pod start.',
    ...sorted(state.namespaces).map((ns) => `namespace ${ns}`),
    ...sorted(state.pods.map(podKey)).map((k) => `pod ${k}`),
    ...sorted(state.exemptPods.map(podKey)).map((k) => `exempt ${k}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** Parses a state file the way the plugin reads it; throws STATE_INVALID when the plugin would ignore it. */
export function parseEnrollmentState(text: string): EnrollmentState {
  const namespaces: string[] = [];
  const pods: PodRef[] = [];
  const exemptPods: PodRef[] = [];
  let header = false;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '' || line.startsWith('#')) continue;
    if (!header) {
      if (line !== ENROLLMENT_STATE_HEADER) {
        throw new PluginProtocolError(
          'STATE_INVALID',
          `enrollment state starts with ${JSON.stringify(line.slice(0, 60))}, not ${JSON.stringify(ENROLLMENT_STATE_HEADER)}`,
        );
      }
      header = true;
      continue;
    }
    const space = line.indexOf(' ');
    if (space === -1) continue;
    const kind = line.slice(0, space);
    const arg = line.slice(space + 1);
    const slash = arg.indexOf('/');
    const ref = { namespace: arg.slice(0, slash), name: arg.slice(slash + 1) };
    if (kind === 'namespace') namespaces.push(arg);
    else if (kind === 'pod' && slash > 0) pods.push(ref);
    else if (kind === 'exempt' && slash > 0) exemptPods.push(ref);
  }
  if (!header) throw new PluginProtocolError('STATE_INVALID', 'enrollment state is empty');
  return { namespaces, pods, exemptPods };
}

/**
 * Writes the state file into the agent's run dir atomically (the plugin never reads a partial
 * file). The agent calls this whenever the state changes, before it reports ready.
 */
export async function writeEnrollmentState(runDir: string, state: EnrollmentState): Promise<void> {
  await writeFileAtomic(enrollmentStatePath(runDir), formatEnrollmentState(state), { mode: 0o644 });
}
