/**
 * Host side of kubelet probe identification (spec §6.3): in the node's network namespace, TCP
 * that the node itself originates towards an enrolled pod IP is SNATed to the probe address
 * (169.254.7.127 / fd16:9254:7127:1337:ffff:ffff:ffff:ffff), which the in-pod rules (or, in eBPF
 * mode, the sk_lookup program) let through to the app. Enrolled pod IPs live in the nftables sets
 * `istio-inpod-probes-v4` / `-v6`, each element commented with its pod UID. Both redirection
 * modes use these nftables rules: the host netns is not the pod's to keep netfilter-free.
 */
import { isIPv4 } from 'node:net';
import { checkResult, type RedirectCheck } from './check.ts';
import { failureStderr, inNetns, runCommand } from './command.ts';
import { type RedirectConfig, resolveRedirectConfig, splitPodIps } from './config.ts';
import { RedirectError } from './errors.ts';
import { listRuleset, nftInNetns } from './nftables.ts';
import {
  buildHostProbeRemoval,
  buildHostProbeRules,
  diffRuleset,
  HOST_PROBE_SET_V4,
  HOST_PROBE_SET_V6,
  HOST_TABLE,
  type HostProbeOptions,
  hostProbeRuleset,
  parseNftJson,
} from './nftables-rules.ts';

/** Creates (or rewrites) the host table; enrolled pods already in the sets stay. */
export async function applyHostProbeRules(
  nodeNetnsPath: string,
  config: Partial<RedirectConfig> = {},
  options: HostProbeOptions = {},
): Promise<void> {
  await nftInNetns(nodeNetnsPath, buildHostProbeRules(config, options));
}

/** Removes the host table and its sets. */
export async function removeHostProbeRules(nodeNetnsPath: string): Promise<void> {
  await nftInNetns(nodeNetnsPath, buildHostProbeRemoval());
}

export async function checkHostProbeRules(
  nodeNetnsPath: string,
  config: Partial<RedirectConfig> = {},
  options: HostProbeOptions = {},
): Promise<RedirectCheck> {
  const listed = parseNftJson(await listRuleset(nodeNetnsPath));
  return checkResult(
    diffRuleset(listed, { tables: [hostProbeRuleset(config, options)] }).map(
      (p) => `nft ${p.table}${p.chain ? `/${p.chain}` : ''}: ${p.problem}`,
    ),
  );
}

/** An element of a probe set. */
export interface ProbeSetEntry {
  readonly ip: string;
  readonly uid: string | undefined;
}

/** The elements of both probe sets. */
export async function listProbeSetEntries(nodeNetnsPath: string): Promise<ProbeSetEntry[]> {
  const entries: ProbeSetEntry[] = [];
  for (const set of [HOST_PROBE_SET_V4, HOST_PROBE_SET_V6]) {
    let stdout: string;
    try {
      ({ stdout } = await runCommand(
        inNetns(nodeNetnsPath, ['nft', '-j', 'list', 'set', 'inet', HOST_TABLE, set]),
      ));
    } catch (err) {
      if (/No such file|does not exist/i.test(failureStderr(err))) continue;
      throw err;
    }
    entries.push(...parseSetElements(stdout));
  }
  return entries;
}

/** Reads `nft -j list set` output: plain elements and `{ elem: { val, comment } }` ones. */
export function parseSetElements(json: string): ProbeSetEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new RedirectError('OUTPUT_UNPARSEABLE', `nft -j list set printed ${json.slice(0, 200)}`, {
      cause: err,
    });
  }
  const out: ProbeSetEntry[] = [];
  for (const item of ((doc as { nftables?: unknown[] }).nftables ?? []) as Record<string, unknown>[]) {
    const set = item.set as { elem?: unknown[] } | undefined;
    for (const e of set?.elem ?? []) {
      if (typeof e === 'string') out.push({ ip: e, uid: undefined });
      else if (e && typeof e === 'object' && 'elem' in e) {
        const el = (e as { elem: { val?: unknown; comment?: unknown } }).elem;
        if (typeof el.val === 'string') {
          out.push({ ip: el.val, uid: typeof el.comment === 'string' ? el.comment : undefined });
        }
      }
    }
  }
  return out;
}

function quoteComment(uid: string): string {
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(uid)) {
    throw new RedirectError('CONFIG_INVALID', `pod uid ${JSON.stringify(uid)} cannot be an nft comment`);
  }
  return `"${uid}"`;
}

/**
 * Adds a pod's IPs to the probe sets with its UID as comment. An IP already present for another
 * UID (an address reused before the old pod was cleaned up) is taken over, in the same transaction.
 */
export async function addPodToProbeSet(
  nodeNetnsPath: string,
  uid: string,
  ips: readonly string[],
  config: Partial<RedirectConfig> = {},
): Promise<void> {
  const cfg = resolveRedirectConfig(config);
  const { v6 } = splitPodIps(ips);
  if (v6.length > 0 && !cfg.ipv6) {
    throw new RedirectError(
      'CONFIG_INVALID',
      `pod ${uid} has IPv6 addresses ${v6.join(', ')} but ipv6 is off`,
    );
  }
  const existing = await listProbeSetEntries(nodeNetnsPath);
  const lines: string[] = [];
  for (const ip of ips) {
    const set = isIPv4(ip) ? HOST_PROBE_SET_V4 : HOST_PROBE_SET_V6;
    const current = existing.find((e) => e.ip === ip);
    if (current?.uid === uid) continue;
    if (current) lines.push(`delete element inet ${HOST_TABLE} ${set} { ${ip} }`);
    lines.push(`add element inet ${HOST_TABLE} ${set} { ${ip} comment ${quoteComment(uid)} }`);
  }
  if (lines.length > 0) await nftInNetns(nodeNetnsPath, `${lines.join('\n')}\n`);
}

/** Removes every element commented with this UID (only those: a reused IP of a newer pod stays). */
export async function removePodFromProbeSet(nodeNetnsPath: string, uid: string): Promise<void> {
  const lines = (await listProbeSetEntries(nodeNetnsPath))
    .filter((e) => e.uid === uid)
    .map(
      (e) =>
        `delete element inet ${HOST_TABLE} ${isIPv4(e.ip) ? HOST_PROBE_SET_V4 : HOST_PROBE_SET_V6} { ${e.ip} }`,
    );
  if (lines.length > 0) await nftInNetns(nodeNetnsPath, `${lines.join('\n')}\n`);
}
