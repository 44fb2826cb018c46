import type { Registry } from 'prom-client';

/**
 * The value of one series (counter, gauge), or the sample count of a histogram; 0 when the
 * series does not exist yet. Labels not given are summed over.
 */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) {
    const series = v as { labels: Record<string, string | number>; value: number; metricName?: string };
    if (String(data.type) === 'histogram' && series.metricName !== `${name}_count`) continue;
    if (Object.entries(labels).every(([k, want]) => String(series.labels[k]) === want)) sum += series.value;
  }
  return sum;
}
