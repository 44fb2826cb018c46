/**
 * nftables mode: applies, removes and checks the in-pod rules ({@link buildPodRules}) and policy
 * routing inside a pod's network namespace, given as a path (`/var/run/netns/...` or
 * `/proc/<pid>/ns/net`). Every call runs `nft` / `ip` under `nsenter --net`.
 */
import { checkResult, type RedirectCheck, type RedirectReconcile } from './check.ts';
import { inNetns, runCommand } from './command.ts';
import { type PodRedirectOptions, type RedirectConfig, resolveRedirectConfig } from './config.ts';
import {
  buildPodRules,
  buildPodRulesRemoval,
  diffRuleset,
  parseNftJson,
  podRuleset,
} from './nftables-rules.ts';
import { applyPolicyRouting, checkPolicyRouting, removePolicyRouting } from './policy-routing.ts';

/** Runs an nft script in a netns as one transaction. */
export async function nftInNetns(netnsPath: string, script: string): Promise<void> {
  await runCommand(inNetns(netnsPath, ['nft', '-f', '-']), { input: script });
}

/** `nft -j list ruleset` in a netns. */
export async function listRuleset(netnsPath: string): Promise<string> {
  const { stdout } = await runCommand(inNetns(netnsPath, ['nft', '-j', 'list', 'ruleset']));
  return stdout;
}

/**
 * Installs the pod's capture rules (one atomic nft transaction that replaces any previous version
 * of the tables) and policy routing. Idempotent: applying twice leaves the same state.
 */
export async function applyNftablesRedirection(
  netnsPath: string,
  pod: PodRedirectOptions,
  config: Partial<RedirectConfig> = {},
): Promise<void> {
  const cfg = resolveRedirectConfig(config);
  await nftInNetns(netnsPath, buildPodRules(cfg, pod));
  await applyPolicyRouting(netnsPath, cfg);
}

/** Removes the pod tables and policy routing; succeeds when they are already gone. */
export async function removeNftablesRedirection(
  netnsPath: string,
  config: Partial<RedirectConfig> = {},
): Promise<void> {
  const cfg = resolveRedirectConfig(config);
  await nftInNetns(netnsPath, buildPodRulesRemoval());
  await removePolicyRouting(netnsPath, cfg);
}

/** Compares the pod netns with the rules it should hold (for reconciliation after an agent restart). */
export async function checkNftablesRedirection(
  netnsPath: string,
  pod: PodRedirectOptions,
  config: Partial<RedirectConfig> = {},
): Promise<RedirectCheck> {
  const cfg = resolveRedirectConfig(config);
  const listed = parseNftJson(await listRuleset(netnsPath));
  const problems = diffRuleset(listed, podRuleset(cfg, pod)).map(
    (p) => `nft ${p.table}${p.chain ? `/${p.chain}` : ''}: ${p.problem}`,
  );
  problems.push(...(await checkPolicyRouting(netnsPath, cfg)));
  return checkResult(problems);
}

/** Checks, and re-applies everything when anything is missing or different. */
export async function reconcileNftablesRedirection(
  netnsPath: string,
  pod: PodRedirectOptions,
  config: Partial<RedirectConfig> = {},
): Promise<RedirectReconcile> {
  const before = await checkNftablesRedirection(netnsPath, pod, config);
  if (before.ok) return { before, repaired: false };
  await applyNftablesRedirection(netnsPath, pod, config);
  return { before, repaired: true };
}
