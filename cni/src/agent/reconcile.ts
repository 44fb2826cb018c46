/**
 * The startup reconcile (`ambient.reconcileIptablesOnStartup`; checklist 35, 36): after a restart
 * the agent takes over the pods it enrolled before, as recorded in the persisted pod cache.
 * Existing traffic is not disturbed: nothing is removed and re-added, and ztunnel keeps its
 * proxies because the ZDS snapshot (served from the same cache) names every one of them. What is
 * missing is repaired: in-pod rules (a node reboot, someone flushing the ruleset) and probe set
 * entries. Pods deleted while the agent was down are dropped from the cache and the probe sets;
 * ztunnel drops their proxies when the snapshot does not name them.
 */
import { existsSync } from 'node:fs';
import type { ConfigStore } from '@ambient/common/config/store';
import { errorMessage } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import type { RedirectConfig } from '../redirect/config.ts';
import { addPodToProbeSet, removePodFromProbeSet } from '../redirect/host-probe.ts';
import type { Redirector } from '../redirect/redirector.ts';
import { type EnablementConfig, isAmbientEnabled } from './enablement.ts';
import type { MeshDataplane } from './mesh-dataplane.ts';
import { findPodNetnsInProc } from './netns.ts';
import type { PodCache } from './pod-cache.ts';

export interface StartupReconcileReport {
  /** Pods still enrolled after the reconcile. */
  readonly kept: readonly string[];
  /** Pods whose rules were missing or wrong and were re-applied. */
  readonly repaired: readonly string[];
  /** Pods deleted (or no longer ambient) while the agent was down. */
  readonly dropped: readonly string[];
  readonly failed: readonly { readonly uid: string; readonly error: string }[];
}

export async function reconcileOnStartup(options: {
  readonly store: ConfigStore;
  readonly cache: PodCache;
  readonly dataplane: MeshDataplane;
  readonly redirector: Redirector;
  readonly redirectConfig: Partial<RedirectConfig>;
  readonly enablement: EnablementConfig;
  readonly hostNetnsPath: string;
  /** Check and repair rules (`RECONCILE_ON_STARTUP`); false only re-registers the pods. */
  readonly repairRules: boolean;
  readonly procRoot?: string;
  readonly log: Logger;
}): Promise<StartupReconcileReport> {
  const { cache, store, log } = options;
  const kept: string[] = [];
  const repaired: string[] = [];
  const dropped: string[] = [];
  const failed: { uid: string; error: string }[] = [];
  for (const entry of cache.enrolled()) {
    const { uid } = entry;
    const pod = store.get('Pod', entry.info.namespace, entry.info.name);
    const ns = store.get('Namespace', '', entry.info.namespace);
    try {
      if (pod === undefined || pod.metadata.uid !== uid || !isAmbientEnabled(pod, ns, options.enablement)) {
        // Deleted while down: nothing left to undo in the pod; the snapshot omits it.
        if (pod === undefined || pod.metadata.uid !== uid) {
          await removePodFromProbeSet(options.hostNetnsPath, uid);
          await cache.delete(uid);
          dropped.push(uid);
        }
        // Still there but no longer ambient: the pod watch unenrolls it normally.
        continue;
      }
      let current = entry;
      if (entry.netnsPath === undefined || !existsSync(entry.netnsPath)) {
        const found = findPodNetnsInProc(uid, options.procRoot);
        if (found === undefined) {
          // Sent as Keep in the snapshot: ztunnel keeps the proxy it has.
          log.warn({ uid, netns: entry.netnsPath }, 'netns of an enrolled pod not found; keeping it');
          kept.push(uid);
          continue;
        }
        current = { ...entry, netnsPath: found };
        await cache.upsert(current);
      }
      if (options.repairRules) {
        const r = await options.redirector.reconcile(options.dataplane.target(pod, current));
        if (r.repaired) {
          repaired.push(uid);
          log.warn({ uid, problems: r.before.problems }, 'in-pod rules were missing or wrong; repaired');
        }
      }
      await addPodToProbeSet(options.hostNetnsPath, uid, current.ips, options.redirectConfig);
      kept.push(uid);
    } catch (err) {
      failed.push({ uid, error: errorMessage(err) });
      log.error({ uid, err: errorMessage(err) }, 'startup reconcile of pod failed');
    }
  }
  log.info(
    { kept: kept.length, repaired: repaired.length, dropped: dropped.length, failed: failed.length },
    'startup reconcile done',
  );
  return { kept, repaired, dropped, failed };
}
