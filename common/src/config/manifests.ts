/**
 * Splits a manifest file into the objects it holds, with the line each starts on: multi-document
 * YAML (`---`), JSON, and `List` kinds expanded into their items. A document that does not parse
 * is reported with its line and skipped; the other documents of the file still count.
 *
 * Parsing follows kubectl's (sigs.k8s.io/yaml, YAML 1.1): `yes`/`on` are booleans, so an unquoted
 * `istio.io/dataplane-mode: on` is refused as kubectl would refuse it, and duplicate keys are
 * errors. Timestamps stay strings, as they are in Kubernetes JSON.
 */

import {
  type Document,
  type DocumentOptions,
  isMap,
  LineCounter,
  type ParseOptions,
  parseAllDocuments,
  type SchemaOptions,
} from 'yaml';
import { errorMessage } from '../errors.ts';
import { isPlainObject } from './schema.ts';

/** One object from a manifest file. */
export interface ManifestObject {
  /** 1-based line where the object's document (or List item) starts. */
  readonly line: number;
  readonly object: unknown;
}

/** A document that could not be read, and why. */
export interface ManifestProblem {
  readonly line: number;
  readonly reason: string;
}

export interface ParsedManifest {
  readonly objects: readonly ManifestObject[];
  readonly problems: readonly ManifestProblem[];
}

/** A safety bound on YAML aliases (a "billion laughs" document expands them exponentially). */
const MAX_ALIAS_COUNT = 100;

const PARSE_OPTIONS: ParseOptions & DocumentOptions & SchemaOptions = {
  version: '1.1',
  uniqueKeys: true,
  customTags: (tags) => tags.filter((t) => typeof t === 'string' || t.tag !== 'tag:yaml.org,2002:timestamp'),
};

export function parseManifest(text: string): ParsedManifest {
  const lineCounter = new LineCounter();
  const objects: ManifestObject[] = [];
  const problems: ManifestProblem[] = [];
  const lineOf = (offset: number | undefined): number =>
    offset === undefined ? 1 : lineCounter.linePos(offset).line;
  const docs = parseAllDocuments(text, { ...PARSE_OPTIONS, lineCounter });
  for (const doc of Array.isArray(docs) ? docs : []) {
    const line = lineOf(doc.contents?.range[0] ?? doc.range[0]);
    const err = doc.errors[0];
    if (err) {
      const at = err.linePos?.[0]?.line ?? line;
      problems.push({ line: at, reason: `YAML syntax error: ${err.message.split('\n')[0] ?? err.code}` });
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      problems.push({ line, reason: `YAML error: ${errorMessage(e)}` });
      continue;
    }
    // A document of only comments, or an empty one between two `---`.
    if (value === null || value === undefined) continue;
    if (!isPlainObject(value)) {
      problems.push({
        line,
        reason: `document is a ${Array.isArray(value) ? 'list' : typeof value}, not an object`,
      });
      continue;
    }
    if (isList(value)) objects.push(...listItems(value, doc, lineOf, line, problems));
    else objects.push({ line, object: value });
  }
  return { objects, problems };
}

/** `kind: List`, or a typed list such as `PodList`, with `items`. */
function isList(v: Record<string, unknown>): boolean {
  return typeof v.kind === 'string' && v.kind.endsWith('List') && Array.isArray(v.items);
}

function listItems(
  list: Record<string, unknown>,
  doc: Document.Parsed,
  lineOf: (offset: number | undefined) => number,
  listLine: number,
  problems: ManifestProblem[],
): ManifestObject[] {
  const items = list.items as unknown[];
  const itemKind = list.kind === 'List' ? undefined : (list.kind as string).slice(0, -'List'.length);
  const itemsNode = isMap(doc.contents) ? doc.contents.get('items', true) : undefined;
  const out: ManifestObject[] = [];
  items.forEach((item, i) => {
    const node =
      itemsNode && typeof itemsNode === 'object' && 'items' in itemsNode
        ? (itemsNode.items as unknown[])[i]
        : undefined;
    const range =
      node && typeof node === 'object' && 'range' in node
        ? (node.range as [number, number, number] | undefined)
        : undefined;
    const line = range ? lineOf(range[0]) : listLine;
    if (!isPlainObject(item)) {
      problems.push({ line, reason: `items[${i}] is not an object` });
      return;
    }
    // A typed list's items may leave out what the list already says (kubectl get -o yaml does).
    const filled =
      itemKind !== undefined && (item.kind === undefined || item.apiVersion === undefined)
        ? { ...item, kind: item.kind ?? itemKind, apiVersion: item.apiVersion ?? list.apiVersion }
        : item;
    out.push({ line, object: filled });
  });
  return out;
}
