/**
 * Policy routing inside the pod (spec §2.4, §6.3; upstream `istio:cni/pkg/iptables/iptables_linux.go`):
 * packets carrying the route mark 0x111/0xfff look up table 100, whose only route is
 * `local default dev lo`, so replies the app sends to a spoofed (original client) source come back
 * to ztunnel's transparent socket instead of leaving the pod. Both redirection modes need it.
 */

import { failureStderr, inNetns, runCommand } from './command.ts';
import { hex, type RedirectConfig } from './config.ts';
import { RedirectError } from './errors.ts';

type Family = '-4' | '-6';

/** The families whose policy routing a netns can hold: IPv6 only when lo has ::1. */
async function routingFamilies(netnsPath: string, cfg: RedirectConfig): Promise<Family[]> {
  if (!cfg.ipv6) return ['-4'];
  const { stdout } = await runCommand(inNetns(netnsPath, ['ip', '-6', '-j', 'addr', 'show', 'dev', 'lo']));
  return stdout.includes('"::1"') ? ['-4', '-6'] : ['-4'];
}

function ruleArgs(cfg: RedirectConfig): string[] {
  return [
    'fwmark',
    `${hex(cfg.routeMark)}/${hex(cfg.markMask)}`,
    'pref',
    String(cfg.routeRulePriority),
    'lookup',
    String(cfg.routeTable),
  ];
}

/** Adds the fwmark rule and the local route (idempotent: an existing rule is left as is). */
export async function applyPolicyRouting(netnsPath: string, cfg: RedirectConfig): Promise<void> {
  for (const family of await routingFamilies(netnsPath, cfg)) {
    const dst = family === '-4' ? '0.0.0.0/0' : '::/0';
    await runCommand(
      inNetns(netnsPath, [
        'ip',
        family,
        'route',
        'replace',
        'local',
        dst,
        'dev',
        'lo',
        'table',
        String(cfg.routeTable),
      ]),
    );
    try {
      await runCommand(inNetns(netnsPath, ['ip', family, 'rule', 'add', ...ruleArgs(cfg)]));
    } catch (err) {
      if (!failureStderr(err).includes('File exists')) throw err;
    }
  }
}

/** Deletes the rule and flushes the table; succeeds when they are already gone. */
export async function removePolicyRouting(netnsPath: string, cfg: RedirectConfig): Promise<void> {
  for (const family of ['-4', '-6'] as const) {
    if (family === '-6' && !cfg.ipv6) continue;
    // `ip rule del` removes one matching rule per call; duplicates from an older agent are possible.
    for (let i = 0; i < 8; i++) {
      try {
        await runCommand(inNetns(netnsPath, ['ip', family, 'rule', 'del', ...ruleArgs(cfg)]));
      } catch (err) {
        const stderr = failureStderr(err);
        if (/No such file|not found|Address family not supported/i.test(stderr)) break;
        throw err;
      }
    }
    try {
      await runCommand(inNetns(netnsPath, ['ip', family, 'route', 'flush', 'table', String(cfg.routeTable)]));
    } catch (err) {
      // A table that never existed (IPv6 routes were never added, or already cleaned up) is gone too.
      if (
        !/No such file|Address family not supported|Nexthop|FIB table does not exist/i.test(
          failureStderr(err),
        )
      )
        throw err;
    }
  }
}

/** What is missing from the pod's policy routing; empty when it is complete. */
export async function checkPolicyRouting(netnsPath: string, cfg: RedirectConfig): Promise<string[]> {
  const problems: string[] = [];
  for (const family of await routingFamilies(netnsPath, cfg)) {
    const rules = await listJson(netnsPath, ['ip', family, '-j', 'rule', 'show']);
    const hasRule = rules.some(
      (r) =>
        r.priority === cfg.routeRulePriority &&
        r.fwmark === hex(cfg.routeMark) &&
        r.fwmask === hex(cfg.markMask) &&
        r.table === String(cfg.routeTable),
    );
    if (!hasRule)
      problems.push(`ip ${family} rule fwmark ${hex(cfg.routeMark)} lookup ${cfg.routeTable} missing`);
    const routes = await listRoutes(netnsPath, family, cfg.routeTable);
    const hasRoute = routes.some((r) => r.type === 'local' && r.dst === 'default' && r.dev === 'lo');
    if (!hasRoute) problems.push(`ip ${family} route local default dev lo table ${cfg.routeTable} missing`);
  }
  return problems;
}

/**
 * The routes of `table`. A table with no route does not exist for the kernel, and `ip route show
 * table` then fails ("FIB table does not exist") instead of printing none: that is a missing
 * route, not an error (a fresh sandbox of a pod whose eBPF pins survive a failed ADD is checked).
 */
async function listRoutes(
  netnsPath: string,
  family: Family,
  table: number,
): Promise<Record<string, unknown>[]> {
  try {
    return await listJson(netnsPath, ['ip', family, '-j', 'route', 'show', 'table', String(table)]);
  } catch (err) {
    if (/FIB table does not exist/i.test(failureStderr(err))) return [];
    throw err;
  }
}

async function listJson(netnsPath: string, argv: string[]): Promise<Record<string, unknown>[]> {
  const { stdout } = await runCommand(inNetns(netnsPath, argv));
  try {
    const parsed: unknown = JSON.parse(stdout.trim() === '' ? '[]' : stdout);
    if (!Array.isArray(parsed)) throw new Error('not an array');
    return parsed as Record<string, unknown>[];
  } catch (err) {
    throw new RedirectError('OUTPUT_UNPARSEABLE', `${argv.join(' ')} printed ${stdout.slice(0, 200)}`, {
      cause: err,
    });
  }
}
