import { unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { errorMessage } from '@ambient/common/errors';
import {
  AuthorizationSchema,
  type Authorization as PbAuthorization,
} from '@ambient/common/gen/istio/security/authorization_pb';
import {
  AddressSchema,
  type Address as PbAddress,
  ServiceSchema,
  WorkloadSchema,
} from '@ambient/common/gen/istio/workload/workload_pb';
import type { Component, Readiness } from '@ambient/common/lifecycle';
import type { Logger } from '@ambient/common/log';
import {
  type ProxyStateUpdater,
  parseIp,
  type Rejected,
  type ResourceUpdate,
  serviceKey,
} from '@ambient/common/model';
import { create, fromJson, type JsonValue } from '@bufbuild/protobuf';
import { parse as parseYaml } from 'yaml';
import type { LocalXdsSource } from './config.ts';
import { ZtunnelError } from './errors.ts';
import { READINESS_TASKS } from './readiness.ts';

/**
 * A local-config document (`LOCAL_XDS_PATH` / `LOCAL_XDS`) turned into the same resource updates
 * xDS would deliver: Addresses named by workload uid or `namespace/hostname`, Authorizations named
 * `namespace/name`.
 */
export interface LocalConfigResources {
  readonly addresses: readonly ResourceUpdate<PbAddress>[];
  readonly authorizations: readonly ResourceUpdate<PbAuthorization>[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Proto JSON carries IP bytes as base64; a document people write carries them as text. Every
 * string that is an IP address under an `address` key, or in an `addresses` list, becomes base64.
 */
function textualIpsToBase64(v: unknown, key = ''): unknown {
  if (typeof v === 'string') {
    const bytes = key === 'address' || key === 'addresses' ? parseIp(v) : undefined;
    return bytes === undefined ? v : Buffer.from(bytes).toString('base64');
  }
  if (Array.isArray(v)) return v.map((x) => textualIpsToBase64(x, key === 'addresses' ? key : ''));
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = textualIpsToBase64(x, k);
    return out;
  }
  return v;
}

function list(doc: Record<string, unknown>, key: string, source: string): unknown[] {
  const v = doc[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    throw new ZtunnelError('LOCAL_CONFIG_INVALID', `${source}: ${key} must be a list`);
  }
  return v;
}

/**
 * Parses a local-config document: YAML or JSON with `workloads`, `services` and `policies`, each
 * entry in the proto3 JSON form of `istio.workload.Workload`, `istio.workload.Service` and
 * `istio.security.Authorization` (camelCase field names, enum names as strings), IP addresses
 * written as text. Throws ZtunnelError `LOCAL_CONFIG_INVALID` naming the entry that is wrong.
 */
export function parseLocalConfig(text: string, source: string): LocalConfigResources {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ZtunnelError('LOCAL_CONFIG_INVALID', `${source} is not YAML or JSON: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (doc === null || doc === undefined) doc = {};
  if (!isObject(doc)) {
    throw new ZtunnelError('LOCAL_CONFIG_INVALID', `${source} must hold workloads, services and policies`);
  }
  const unknownKeys = Object.keys(doc).filter((k) => !['workloads', 'services', 'policies'].includes(k));
  if (unknownKeys.length > 0) {
    throw new ZtunnelError(
      'LOCAL_CONFIG_INVALID',
      `${source} has unknown top-level keys ${unknownKeys.join(', ')}; expected workloads, services, policies`,
    );
  }
  const convert = <T>(key: string, i: number, build: (json: JsonValue) => T): T => {
    try {
      return build(textualIpsToBase64(list(doc, key, source)[i]) as JsonValue);
    } catch (err) {
      throw new ZtunnelError('LOCAL_CONFIG_INVALID', `${source}: ${key}[${i}]: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  };
  const addresses: ResourceUpdate<PbAddress>[] = [];
  list(doc, 'workloads', source).forEach((_, i) => {
    const workload = convert('workloads', i, (j) => fromJson(WorkloadSchema, j));
    addresses.push({
      name: workload.uid,
      resource: create(AddressSchema, { type: { case: 'workload', value: workload } }),
    });
  });
  list(doc, 'services', source).forEach((_, i) => {
    const service = convert('services', i, (j) => fromJson(ServiceSchema, j));
    addresses.push({
      name: serviceKey(service.namespace, service.hostname),
      resource: create(AddressSchema, { type: { case: 'service', value: service } }),
    });
  });
  const authorizations = list(doc, 'policies', source).map((_, i) => {
    const policy = convert('policies', i, (j) => fromJson(AuthorizationSchema, j));
    return { name: `${policy.namespace}/${policy.name}`, resource: policy };
  });
  return { addresses, authorizations };
}

export interface LocalConfigLoaderOptions {
  readonly source: LocalXdsSource;
  readonly updater: ProxyStateUpdater;
  readonly readiness?: Readiness;
  readonly log: Logger;
  /** How often the file is checked for changes. Default 2000. */
  readonly pollIntervalMs?: number;
}

/**
 * Local-config mode (ztunnel `LOCAL_XDS_PATH`): applies a document of workloads, services and
 * policies through the ProxyStateUpdater exactly as xDS pushes would, and re-applies the file
 * when it changes (names that disappeared are removed). The first load must be clean: a bad
 * document or a rejected resource fails the start. Later a bad edit is logged and the last good
 * state stays.
 */
export class LocalConfigLoader implements Component {
  readonly name = 'local-config';
  readonly #o: LocalConfigLoaderOptions;
  #addressNames = new Set<string>();
  #policyNames = new Set<string>();
  #watching = false;
  #reloading: Promise<void> = Promise.resolve();

  constructor(options: LocalConfigLoaderOptions) {
    this.#o = options;
  }

  async start(): Promise<void> {
    const done = this.#o.readiness?.register(READINESS_TASKS.localConfig);
    const rejected = await this.#load();
    if (rejected.length > 0) {
      throw new ZtunnelError(
        'LOCAL_CONFIG_INVALID',
        `${this.#describe()}: ${rejected.map((r) => `${r.name}: ${r.reason}`).join('; ')}`,
      );
    }
    done?.();
    const src = this.#o.source;
    if (src.kind === 'file') {
      watchFile(src.path, { interval: this.#o.pollIntervalMs ?? 2000, persistent: false }, this.#onChange);
      this.#watching = true;
    }
  }

  stop(): Promise<void> {
    const src = this.#o.source;
    if (this.#watching && src.kind === 'file') unwatchFile(src.path, this.#onChange);
    this.#watching = false;
    return this.#reloading;
  }

  /** Re-reads and applies the document now (what a file change does). */
  reload(): Promise<void> {
    this.#reloading = this.#reloading.then(async () => {
      try {
        const rejected = await this.#load();
        for (const r of rejected) {
          this.#o.log.error({ resource: r.name, err: r.reason }, 'local config resource rejected');
        }
        this.#o.log.info({ source: this.#describe() }, 'local config reloaded');
      } catch (err) {
        this.#o.log.error(
          { err: errorMessage(err) },
          'local config reload failed; keeping the previous state',
        );
      }
    });
    return this.#reloading;
  }

  readonly #onChange = (): void => {
    void this.reload();
  };

  #describe(): string {
    const src = this.#o.source;
    return src.kind === 'file' ? src.path : 'LOCAL_XDS';
  }

  async #load(): Promise<Rejected[]> {
    const src = this.#o.source;
    let text: string;
    if (src.kind === 'inline') text = src.text;
    else {
      try {
        text = await readFile(src.path, 'utf8');
      } catch (err) {
        throw new ZtunnelError('LOCAL_CONFIG_INVALID', `cannot read ${src.path}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    }
    const resources = parseLocalConfig(text, this.#describe());
    const addressNames = new Set(resources.addresses.map((a) => a.name));
    const policyNames = new Set(resources.authorizations.map((a) => a.name));
    const removedAddresses = [...this.#addressNames].filter((n) => !addressNames.has(n));
    const removedPolicies = [...this.#policyNames].filter((n) => !policyNames.has(n));
    // Policies first, so workloads never reference a policy the store does not hold yet.
    const rejected = [
      ...this.#o.updater.handleAuthorizations(resources.authorizations, removedPolicies),
      ...this.#o.updater.handleAddresses(resources.addresses, removedAddresses),
    ];
    this.#addressNames = addressNames;
    this.#policyNames = policyNames;
    this.#o.log.info(
      {
        source: this.#describe(),
        workloadsAndServices: addressNames.size,
        policies: policyNames.size,
        rejected: rejected.length,
      },
      'local config applied',
    );
    return rejected;
  }
}
