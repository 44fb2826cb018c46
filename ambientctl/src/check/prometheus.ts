/**
 * Reading ztunnel's `/metrics` (Prometheus text format) for the guided check: the sum of a
 * counter's samples whose labels contain every given pair.
 */

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(v: string): string {
  return v.replace(/\\(["\\n])/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

/** The labels of one sample line, or undefined when the line is not a sample of `name`. */
function sampleOf(line: string, name: string): { labels: Map<string, string>; value: number } | undefined {
  const m = SAMPLE.exec(line.trim());
  if (!m || m[1] !== name) return undefined;
  const labels = new Map<string, string>();
  for (const l of (m[2] ?? '').matchAll(LABEL)) labels.set(l[1] ?? '', unescapeLabel(l[2] ?? ''));
  return { labels, value: Number(m[3]) };
}

export function counterSum(
  metricsText: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number {
  let sum = 0;
  for (const line of metricsText.split('\n')) {
    if (line.startsWith('#')) continue;
    const s = sampleOf(line, name);
    if (s === undefined || !Number.isFinite(s.value)) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels.get(k) === v)) sum += s.value;
  }
  return sum;
}
