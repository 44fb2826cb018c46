import { type CniCommand, CniError } from '../errors.ts';

/** An interface a plugin created or configured; `sandbox` is set for those inside the pod netns. */
export interface CniInterface {
  readonly name: string;
  readonly mac: string | undefined;
  readonly sandbox: string | undefined;
}

/** One address the plugin assigned. */
export interface CniIpConfig {
  /** CIDR notation, as in the result (`10.101.1.2/24`). */
  readonly address: string;
  /** The address alone (`10.101.1.2`). */
  readonly ip: string;
  readonly prefixLength: number;
  readonly family: 4 | 6;
  readonly gateway: string | undefined;
  /** Index into {@link CniResult.interfaces}. */
  readonly interface: number | undefined;
}

export interface CniRoute {
  readonly dst: string;
  readonly gw: string | undefined;
}

/**
 * A parsed ADD result (spec 0.3.x through 1.0.x share this shape). `raw` is the object exactly
 * as the plugin printed it; that is what the next plugin receives as `prevResult`.
 */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces: readonly CniInterface[];
  readonly ips: readonly CniIpConfig[];
  readonly routes: readonly CniRoute[];
  readonly raw: Readonly<Record<string, unknown>>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Parses a plugin's ADD output; throws CNI_RESULT_INVALID naming the first field that is wrong. */
export function parseCniResult(raw: unknown, plugin: string, command: CniCommand): CniResult {
  const invalid = (what: string): CniError =>
    new CniError(
      'CNI_RESULT_INVALID',
      `cni plugin "${plugin}" ${command} printed an invalid result: ${what}`,
      {
        plugin,
        command,
        msg: what,
      },
    );
  if (!isObject(raw)) throw invalid('not a JSON object');
  if (typeof raw.cniVersion !== 'string') throw invalid('cniVersion is missing');
  const interfaces: CniInterface[] = [];
  if (raw.interfaces !== undefined) {
    if (!Array.isArray(raw.interfaces)) throw invalid('interfaces is not an array');
    for (const [i, itf] of raw.interfaces.entries()) {
      if (!isObject(itf) || typeof itf.name !== 'string') throw invalid(`interfaces[${i}].name is missing`);
      interfaces.push({
        name: itf.name,
        mac: optString(itf.mac),
        sandbox: optString(itf.sandbox) || undefined,
      });
    }
  }
  const ips: CniIpConfig[] = [];
  if (raw.ips !== undefined) {
    if (!Array.isArray(raw.ips)) throw invalid('ips is not an array');
    for (const [i, ipc] of raw.ips.entries()) {
      if (!isObject(ipc) || typeof ipc.address !== 'string') throw invalid(`ips[${i}].address is missing`);
      const [ip, prefix] = ipc.address.split('/');
      const prefixLength = Number(prefix);
      if (ip === undefined || ip === '' || prefix === undefined || !Number.isInteger(prefixLength)) {
        throw invalid(`ips[${i}].address ${JSON.stringify(ipc.address)} is not in CIDR notation`);
      }
      const index = ipc.interface;
      if (index !== undefined && (typeof index !== 'number' || index < 0 || index >= interfaces.length)) {
        throw invalid(`ips[${i}].interface ${JSON.stringify(index)} is not an index into interfaces`);
      }
      ips.push({
        address: ipc.address,
        ip,
        prefixLength,
        family: ip.includes(':') ? 6 : 4,
        gateway: optString(ipc.gateway),
        interface: index,
      });
    }
  }
  const routes: CniRoute[] = [];
  if (raw.routes !== undefined) {
    if (!Array.isArray(raw.routes)) throw invalid('routes is not an array');
    for (const [i, r] of raw.routes.entries()) {
      if (!isObject(r) || typeof r.dst !== 'string') throw invalid(`routes[${i}].dst is missing`);
      routes.push({ dst: r.dst, gw: optString(r.gw) });
    }
  }
  return { cniVersion: raw.cniVersion, interfaces, ips, routes, raw };
}

/** The addresses assigned to the sandbox interface `ifName` (eth0), IPv4 first. */
export function sandboxIps(result: CniResult, ifName: string): CniIpConfig[] {
  const onIf = result.ips.filter((ipc) => {
    if (ipc.interface === undefined) return true;
    const itf = result.interfaces[ipc.interface];
    return itf?.name === ifName && itf.sandbox !== undefined;
  });
  return onIf.sort((a, b) => a.family - b.family);
}
