/**
 * The in-pod capture rules of spec §6.3 as nftables, and the host probe SNAT rules, built purely
 * from configuration. Table and chain names follow upstream's native nftables mode
 * (`istio:cni/pkg/nftables`), so `nft list ruleset` reads the same on either implementation:
 *
 * | table (family inet)    | base chains (hook, priority)                                   | holds                                  |
 * | ---------------------- | -------------------------------------------------------------- | -------------------------------------- |
 * | `istio-ambient-nat`    | `prerouting` (nat, -100), `output` (nat, -100)                 | REDIRECT to 15001 / 15006 / 15053      |
 * | `istio-ambient-mangle` | `prerouting` (filter, -150), `output` (**route**, -150)         | connmark set / restore                 |
 * | `istio-ambient-raw`    | `prerouting` (filter, -300), `output` (filter, -300)           | DNS conntrack zone split (DNS on only) |
 *
 * Each base chain jumps to `istio-prerouting` / `istio-output`, which hold the rules. The mangle
 * output chain is of type `route`: only such a chain makes the kernel re-route a packet whose mark
 * it changed, which is what sends the app's replies to spoofed sources to table 100.
 *
 * Every rule carries a `comment` with a stable id; {@link checkPodRuleset} compares those ids, in
 * order, with the listing, so a missing, extra or reordered rule is found without re-parsing
 * nft's canonical syntax.
 *
 * The host side (node netns) is table `istio-ambient-nat` with sets `istio-inpod-probes-v4` /
 * `istio-inpod-probes-v6` (elements: pod IPs, comment = pod UID) and a `postrouting` nat chain
 * that SNATs locally originated TCP to those IPs to the probe address.
 */
import {
  hex,
  type PodRedirectOptions,
  type RedirectConfig,
  resolveRedirectConfig,
  splitPodIps,
} from './config.ts';
import { RedirectError } from './errors.ts';

export const POD_NAT_TABLE = 'istio-ambient-nat';
export const POD_MANGLE_TABLE = 'istio-ambient-mangle';
export const POD_RAW_TABLE = 'istio-ambient-raw';
/** Every table the pod rules may create, for removal. */
export const POD_TABLES = [POD_NAT_TABLE, POD_MANGLE_TABLE, POD_RAW_TABLE] as const;

export const HOST_TABLE = 'istio-ambient-nat';
export const HOST_PROBE_SET_V4 = 'istio-inpod-probes-v4';
export const HOST_PROBE_SET_V6 = 'istio-inpod-probes-v6';

/** The chains every pod table has: base chains jump to these. */
const PREROUTING = 'istio-prerouting';
const OUTPUT = 'istio-output';

/** A base chain's hook registration, as `nft -j` lists it. */
export interface BaseChainSpec {
  readonly type: 'nat' | 'filter' | 'route';
  readonly hook: 'prerouting' | 'output' | 'postrouting';
  readonly priority: number;
}

/** One rule: the id in its comment, and the rule text without the comment. */
export interface RuleSpec {
  readonly id: string;
  readonly text: string;
}

export interface ChainSpec {
  readonly name: string;
  readonly base?: BaseChainSpec;
  readonly rules: readonly RuleSpec[];
}

export interface TableSpec {
  readonly name: string;
  readonly chains: readonly ChainSpec[];
}

/** The desired state of a pod netns: tables that must exist exactly so, and tables that must not exist. */
export interface PodRuleset {
  readonly tables: readonly TableSpec[];
  readonly absentTables: readonly string[];
}

/** Per-pod choices after applying defaults. */
interface PodChoices {
  readonly v4: boolean;
  readonly v6: boolean;
  readonly ingressMode: boolean;
  readonly captureDns: boolean;
}

function podChoices(cfg: RedirectConfig, pod: PodRedirectOptions): PodChoices {
  const { v6 } = splitPodIps(pod.ips);
  if (v6.length > 0 && !cfg.ipv6) {
    throw new RedirectError('CONFIG_INVALID', `pod has IPv6 addresses ${v6.join(', ')} but ipv6 is off`);
  }
  return {
    v4: true,
    // With IPv6 on, a pod gets the IPv6 rules whatever its addresses, as upstream does.
    v6: cfg.ipv6,
    ingressMode: pod.ingressMode ?? false,
    captureDns: pod.captureDns ?? cfg.captureDns,
  };
}

/**
 * The in-pod ruleset for one pod (pure). Rule order within each chain is the order of the rule
 * table in spec §6.3.
 */
export function podRuleset(config: Partial<RedirectConfig>, pod: PodRedirectOptions): PodRuleset {
  const cfg = resolveRedirectConfig(config);
  const c = podChoices(cfg, pod);
  const notProxy = `meta mark & ${hex(cfg.markMask)} != ${hex(cfg.proxyMark)}`;
  const isProxy = `meta mark & ${hex(cfg.markMask)} == ${hex(cfg.proxyMark)}`;
  const families = [
    { on: c.v4, suffix: 'v4', proto: 'ip', loopback: '127.0.0.1/32', probe: cfg.probeSnatIpv4 },
    { on: c.v6, suffix: 'v6', proto: 'ip6', loopback: '::1/128', probe: cfg.probeSnatIpv6 },
  ].filter((f) => f.on);

  const natPrerouting: RuleSpec[] = [];
  const natOutput: RuleSpec[] = [];
  if (!c.ingressMode) {
    for (const f of families) {
      natPrerouting.push({
        id: `probe-accept-${f.suffix}`,
        text: `meta l4proto tcp ${f.proto} saddr ${f.probe} counter accept`,
      });
    }
  }
  for (const f of families) {
    natOutput.push({
      id: `probe-reply-accept-${f.suffix}`,
      text: `meta l4proto tcp ${f.proto} daddr ${f.probe} counter accept`,
    });
  }
  if (!c.ingressMode) {
    for (const f of families) {
      natPrerouting.push({
        id: `inbound-redirect-${f.suffix}`,
        text: `${f.proto} daddr != ${f.loopback} tcp dport != ${cfg.hbonePort} ${notProxy} counter redirect to :${cfg.inboundPort}`,
      });
    }
  }
  if (c.captureDns) {
    natOutput.push({
      id: 'dns-udp-redirect',
      text: `oifname != "lo" ${notProxy} udp dport 53 counter redirect to :${cfg.dnsPort}`,
    });
    for (const f of families) {
      natOutput.push({
        id: `dns-tcp-redirect-${f.suffix}`,
        text: `${f.proto} daddr != ${f.loopback} tcp dport 53 ${notProxy} counter redirect to :${cfg.dnsPort}`,
      });
    }
  }
  natOutput.push({
    id: 'route-mark-accept',
    text: `meta l4proto tcp meta mark & ${hex(cfg.markMask)} == ${hex(cfg.routeMark)} counter accept`,
  });
  for (const f of families) {
    natOutput.push({
      id: `loopback-accept-${f.suffix}`,
      text: `oifname "lo" ${f.proto} daddr != ${f.loopback} counter accept`,
    });
  }
  for (const f of families) {
    natOutput.push({
      id: `outbound-redirect-${f.suffix}`,
      text: `meta l4proto tcp ${f.proto} daddr != ${f.loopback} ${notProxy} counter redirect to :${cfg.outboundPort}`,
    });
  }

  const keepHigh = hex(~cfg.markMask);
  const tables: TableSpec[] = [
    podTable(
      POD_NAT_TABLE,
      { type: 'nat', priority: -100 },
      { type: 'nat', priority: -100 },
      natPrerouting,
      natOutput,
    ),
    podTable(
      POD_MANGLE_TABLE,
      { type: 'filter', priority: -150 },
      { type: 'route', priority: -150 },
      [
        {
          id: 'proxy-connmark-set',
          text: `${isProxy} counter ct mark set ct mark & ${keepHigh} | ${hex(cfg.routeMark)}`,
        },
      ],
      [
        {
          id: 'connmark-restore',
          text: `ct mark & ${hex(cfg.markMask)} == ${hex(cfg.routeMark)} counter meta mark set ct mark`,
        },
      ],
    ),
  ];
  const absentTables: string[] = [];
  if (c.captureDns) {
    tables.push(
      podTable(
        POD_RAW_TABLE,
        { type: 'filter', priority: -300 },
        { type: 'filter', priority: -300 },
        [{ id: 'dns-zone-return', text: `udp sport 53 ${notProxy} counter ct zone set 1` }],
        [{ id: 'dns-zone-upstream', text: `udp dport 53 ${isProxy} counter ct zone set 1` }],
      ),
    );
  } else {
    absentTables.push(POD_RAW_TABLE);
  }
  return { tables, absentTables };
}

function podTable(
  name: string,
  prerouting: Omit<BaseChainSpec, 'hook'>,
  output: Omit<BaseChainSpec, 'hook'>,
  preroutingRules: RuleSpec[],
  outputRules: RuleSpec[],
): TableSpec {
  return {
    name,
    chains: [
      {
        name: 'prerouting',
        base: { ...prerouting, hook: 'prerouting' },
        rules: [{ id: 'jump-prerouting', text: `jump ${PREROUTING}` }],
      },
      {
        name: 'output',
        base: { ...output, hook: 'output' },
        rules: [{ id: 'jump-output', text: `jump ${OUTPUT}` }],
      },
      { name: PREROUTING, rules: preroutingRules },
      { name: OUTPUT, rules: outputRules },
    ],
  };
}

/**
 * The nft script that brings a pod netns to {@link podRuleset} in one transaction (`nft -f -`):
 * per table `add table` + `flush table` (which empties every chain), then the chains and rules.
 * Tables that must not exist are created and deleted in the same transaction, which makes their
 * removal idempotent. Applying it twice leaves the same state.
 */
export function buildPodRules(config: Partial<RedirectConfig>, pod: PodRedirectOptions): string {
  const ruleset = podRuleset(config, pod);
  const lines: string[] = [];
  for (const table of ruleset.tables) {
    lines.push(`add table inet ${table.name}`, `flush table inet ${table.name}`);
    lines.push(...renderChains(table));
  }
  for (const name of ruleset.absentTables) lines.push(...deleteTable(name));
  return `${lines.join('\n')}\n`;
}

/** The nft script that removes every pod table, whether or not it exists. */
export function buildPodRulesRemoval(): string {
  return `${POD_TABLES.flatMap(deleteTable).join('\n')}\n`;
}

function deleteTable(name: string): string[] {
  return [`add table inet ${name}`, `delete table inet ${name}`];
}

function renderChains(table: TableSpec): string[] {
  const lines: string[] = [];
  for (const chain of table.chains) {
    const base = chain.base;
    lines.push(
      base
        ? `add chain inet ${table.name} ${chain.name} { type ${base.type} hook ${base.hook} priority ${base.priority} ; }`
        : `add chain inet ${table.name} ${chain.name}`,
    );
  }
  for (const chain of table.chains) {
    for (const rule of chain.rules) {
      lines.push(`add rule inet ${table.name} ${chain.name} ${rule.text} comment "${rule.id}"`);
    }
  }
  return lines;
}

/** Options of the host probe SNAT rules. */
export interface HostProbeOptions {
  /**
   * When set, only sockets of this UID are SNATed (`meta skuid`), as upstream's nftables mode does
   * with kubelet's UID. Without it every locally originated packet qualifies (`fib saddr type local`),
   * the nftables reading of iptables' `-m owner --socket-exists`.
   */
  readonly kubeletUid?: number;
}

/**
 * The host (node netns) probe SNAT table (pure). "Locally originated" is `fib saddr type local`:
 * the source address is one of the node's own, which holds for every packet a local socket sent
 * and for no packet the node forwards from a pod or from another node (kube-proxy's DNATed
 * traffic keeps its remote source). nftables' `socket` expression only works at prerouting/input,
 * and `meta skuid` needs the UID to compare with, hence the optional {@link HostProbeOptions.kubeletUid}.
 */
export function hostProbeRuleset(config: Partial<RedirectConfig>, options: HostProbeOptions = {}): TableSpec {
  const cfg = resolveRedirectConfig(config);
  const uid = options.kubeletUid;
  if (uid !== undefined && !(Number.isInteger(uid) && uid >= 0 && uid <= 0xffffffff)) {
    throw new RedirectError('CONFIG_INVALID', `kubeletUid ${uid} is not a 32-bit unsigned integer`);
  }
  const local = uid === undefined ? 'fib saddr type local' : `meta skuid ${uid}`;
  const rules: RuleSpec[] = [
    {
      id: 'probe-snat-v4',
      text: `meta l4proto tcp ${local} ip daddr @${HOST_PROBE_SET_V4} counter snat ip to ${cfg.probeSnatIpv4}`,
    },
  ];
  if (cfg.ipv6) {
    rules.push({
      id: 'probe-snat-v6',
      text: `meta l4proto tcp ${local} ip6 daddr @${HOST_PROBE_SET_V6} counter snat ip6 to ${cfg.probeSnatIpv6}`,
    });
  }
  return {
    name: HOST_TABLE,
    chains: [{ name: 'postrouting', base: { type: 'nat', hook: 'postrouting', priority: 100 }, rules }],
  };
}

/**
 * The host script: creates the table, the sets and the chain if missing and rewrites the chain's
 * rules, keeping the sets' elements (enrolled pods) untouched.
 */
export function buildHostProbeRules(config: Partial<RedirectConfig>, options: HostProbeOptions = {}): string {
  const cfg = resolveRedirectConfig(config);
  const table = hostProbeRuleset(cfg, options);
  const lines = [
    `add table inet ${HOST_TABLE}`,
    `add set inet ${HOST_TABLE} ${HOST_PROBE_SET_V4} { type ipv4_addr ; }`,
  ];
  if (cfg.ipv6) lines.push(`add set inet ${HOST_TABLE} ${HOST_PROBE_SET_V6} { type ipv6_addr ; }`);
  for (const chain of table.chains) {
    lines.push(
      `add chain inet ${HOST_TABLE} ${chain.name} { type nat hook postrouting priority 100 ; }`,
      `flush chain inet ${HOST_TABLE} ${chain.name}`,
    );
  }
  for (const chain of table.chains) {
    for (const rule of chain.rules) {
      lines.push(`add rule inet ${HOST_TABLE} ${chain.name} ${rule.text} comment "${rule.id}"`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Removes the host table (sets included), whether or not it exists. */
export function buildHostProbeRemoval(): string {
  return `${deleteTable(HOST_TABLE).join('\n')}\n`;
}

/** A difference between a listed ruleset and the desired one. */
export interface RulesetProblem {
  readonly table: string;
  readonly chain?: string;
  readonly problem: string;
}

/** The part of `nft -j list ruleset` this module reads. */
export interface ListedRuleset {
  readonly tables: ReadonlySet<string>;
  readonly chains: ReadonlyMap<string, { type?: string; hook?: string; prio?: number }>;
  /** `table/chain` → the comments of its rules in order (undefined for a rule without one). */
  readonly rules: ReadonlyMap<string, (string | undefined)[]>;
}

/** Reads the inet-family tables, chains and rule comments out of `nft -j list ruleset` output. */
export function parseNftJson(json: string): ListedRuleset {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new RedirectError('OUTPUT_UNPARSEABLE', `nft -j output is not JSON: ${json.slice(0, 200)}`, {
      cause: err,
    });
  }
  const items = (doc as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) {
    throw new RedirectError(
      'OUTPUT_UNPARSEABLE',
      `nft -j output has no nftables array: ${json.slice(0, 200)}`,
    );
  }
  const tables = new Set<string>();
  const chains = new Map<string, { type?: string; hook?: string; prio?: number }>();
  const rules = new Map<string, (string | undefined)[]>();
  for (const item of items as Record<string, Record<string, unknown> | undefined>[]) {
    if (item.table?.family === 'inet') tables.add(String(item.table.name));
    const chain = item.chain;
    if (chain?.family === 'inet') {
      const key = `${String(chain.table)}/${String(chain.name)}`;
      chains.set(key, {
        ...(typeof chain.type === 'string' ? { type: chain.type } : {}),
        ...(typeof chain.hook === 'string' ? { hook: chain.hook } : {}),
        ...(typeof chain.prio === 'number' ? { prio: chain.prio } : {}),
      });
      if (!rules.has(key)) rules.set(key, []);
    }
    const rule = item.rule;
    if (rule?.family === 'inet') {
      const key = `${String(rule.table)}/${String(rule.chain)}`;
      const list = rules.get(key) ?? [];
      list.push(typeof rule.comment === 'string' ? rule.comment : undefined);
      rules.set(key, list);
    }
  }
  return { tables, chains, rules };
}

/** Compares a listing with the desired tables (pure); an empty result means they match. */
export function diffRuleset(
  listed: ListedRuleset,
  want: { tables: readonly TableSpec[]; absentTables?: readonly string[] },
): RulesetProblem[] {
  const problems: RulesetProblem[] = [];
  for (const table of want.tables) {
    if (!listed.tables.has(table.name)) {
      problems.push({ table: table.name, problem: 'table missing' });
      continue;
    }
    for (const chain of table.chains) {
      const key = `${table.name}/${chain.name}`;
      const got = listed.chains.get(key);
      if (!got) {
        problems.push({ table: table.name, chain: chain.name, problem: 'chain missing' });
        continue;
      }
      if (chain.base) {
        const b = chain.base;
        if (got.type !== b.type || got.hook !== b.hook || got.prio !== b.priority) {
          problems.push({
            table: table.name,
            chain: chain.name,
            problem: `hook is ${got.type} ${got.hook} ${got.prio}, want ${b.type} ${b.hook} ${b.priority}`,
          });
        }
      }
      const ids = listed.rules.get(key) ?? [];
      const wantIds = chain.rules.map((r) => r.id);
      if (ids.length !== wantIds.length || ids.some((id, i) => id !== wantIds[i])) {
        problems.push({
          table: table.name,
          chain: chain.name,
          problem: `rules [${ids.map((i) => i ?? '?').join(', ')}], want [${wantIds.join(', ')}]`,
        });
      }
    }
  }
  for (const name of want.absentTables ?? []) {
    if (listed.tables.has(name)) problems.push({ table: name, problem: 'table present, want none' });
  }
  return problems;
}
