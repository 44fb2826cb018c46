/**
 * `ambientctl zc` (`ztunnel-config`): ztunnel's `/config_dump` as `istioctl ztunnel-config`
 * prints it — the same tables, columns, order and alignment, or the selected entries as JSON/YAML.
 */
import { stringify } from 'yaml';
import { certificateTable, selectCertificates } from './certificates.ts';
import { type ConnectionFilter, connectionTable, selectConnections } from './connections.ts';
import { parseConfigDump, type ZcDump } from './dump.ts';
import { type PolicyFilter, policyTable, selectPolicies } from './policies.ts';
import { type ServiceFilter, selectServices, serviceTable } from './services.ts';
import { selectWorkloads, type WorkloadFilter, workloadTable } from './workloads.ts';

export { parseConfigDump, type ZcDump } from './dump.ts';
export { formatTable } from './tabwriter.ts';

export const ZC_KINDS = ['workloads', 'services', 'policies', 'certificates', 'connections', 'all'] as const;
export type ZcKind = (typeof ZC_KINDS)[number];

export const ZC_OUTPUTS = ['table', 'json', 'yaml'] as const;
export type ZcOutput = (typeof ZC_OUTPUTS)[number];

/** Every filter `zc` takes; each kind reads the ones istioctl gives it. */
export type ZcFilter = WorkloadFilter & ServiceFilter & PolicyFilter & ConnectionFilter;

function table(kind: ZcKind, dump: ZcDump, filter: ZcFilter): string {
  switch (kind) {
    case 'workloads':
      return workloadTable(dump, filter);
    case 'services':
      return serviceTable(dump, filter);
    case 'policies':
      return policyTable(dump, filter);
    case 'certificates':
      return certificateTable(dump);
    case 'connections':
      return connectionTable(dump, filter);
    case 'all':
      // istioctl's full summary: each table after an empty line.
      return [workloadTable(dump, {}), serviceTable(dump, {}), policyTable(dump, {}), certificateTable(dump)]
        .map((t) => `\n${t}`)
        .join('');
  }
}

function selection(kind: ZcKind, dump: ZcDump, filter: ZcFilter, rawText: string): unknown {
  switch (kind) {
    case 'workloads':
      return selectWorkloads(dump, filter).map((w) => w.raw);
    case 'services':
      return selectServices(dump, filter).map((s) => s.raw);
    case 'policies':
      return selectPolicies(dump, filter).map((p) => p.raw);
    case 'certificates':
      return selectCertificates(dump);
    case 'connections':
      return selectConnections(dump, filter).map((w) => w.raw);
    case 'all':
      return JSON.parse(rawText) as unknown;
  }
}

/** Renders one `zc` view of a `/config_dump` body. */
export function renderZc(
  kind: ZcKind,
  configDumpText: string,
  options: { readonly output?: ZcOutput; readonly filter?: ZcFilter } = {},
): string {
  const dump = parseConfigDump(configDumpText);
  const filter = options.filter ?? {};
  switch (options.output ?? 'table') {
    case 'table':
      return table(kind, dump, filter);
    case 'json':
      return `${JSON.stringify(selection(kind, dump, filter, configDumpText), null, 4)}\n`;
    case 'yaml':
      return stringify(selection(kind, dump, filter, configDumpText));
  }
}
