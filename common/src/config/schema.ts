/**
 * A small structural checker for the fields istiod reads from Kubernetes objects. Each check
 * returns the first problem it finds with the field path (`spec.rules[0].fromm`), the way the API
 * server reports a schema violation, so a rejected object's log line points at what to fix.
 *
 * JSON `null` counts as absent, as the API server prunes nulls from non-nullable fields.
 */

/** Why a value was refused; the rejection counter's `reason_code` label. */
export type ProblemCode = 'unknown_field' | 'wrong_type' | 'missing_field' | 'invalid_value' | 'conflict';

export interface Problem {
  readonly path: string;
  readonly message: string;
  readonly code: ProblemCode;
}

/** Checks a value found at `path`; undefined when the value is acceptable. */
export type Check = (value: unknown, path: string) => Problem | undefined;

export function problem(path: string, code: ProblemCode, message: string): Problem {
  return { path, code, message };
}

/** `a.b`, `a["istio.io/rev"]`, `a[3]`. */
export function childPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return parent === '' ? key : `${parent}.${key}`;
  return `${parent}[${JSON.stringify(key)}]`;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function wrongType(path: string, want: string, v: unknown): Problem {
  return problem(path, 'wrong_type', `must be ${want}, not ${typeName(v)}`);
}

/** Returns a message when a string is wrong. */
export type StringRule = (s: string) => string | undefined;

export interface StringOptions {
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly rule?: StringRule;
}

export function str(options: StringOptions = {}): Check {
  return (v, path) => {
    if (typeof v !== 'string') return wrongType(path, 'a string', v);
    if (options.minLength !== undefined && v.length < options.minLength) {
      return problem(
        path,
        'invalid_value',
        options.minLength === 1 ? 'must not be empty' : `must be at least ${options.minLength} characters`,
      );
    }
    if (options.maxLength !== undefined && v.length > options.maxLength) {
      return problem(path, 'invalid_value', `must be at most ${options.maxLength} characters`);
    }
    const msg = options.rule?.(v);
    return msg === undefined ? undefined : problem(path, 'invalid_value', msg);
  };
}

export function int(options: { readonly min?: number; readonly max?: number } = {}): Check {
  return (v, path) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) return wrongType(path, 'an integer', v);
    if ((options.min !== undefined && v < options.min) || (options.max !== undefined && v > options.max)) {
      return problem(
        path,
        'invalid_value',
        `${v} is out of range ${options.min ?? '-∞'}..${options.max ?? '∞'}`,
      );
    }
    return undefined;
  };
}

/** A TCP/UDP port number, 1..65535. */
export const port: Check = int({ min: 1, max: 65535 });

export function bool(): Check {
  return (v, path) => (typeof v === 'boolean' ? undefined : wrongType(path, 'a boolean', v));
}

export function oneOf(values: readonly string[]): Check {
  return (v, path) => {
    if (typeof v !== 'string') return wrongType(path, 'a string', v);
    return values.includes(v)
      ? undefined
      : problem(path, 'invalid_value', `${JSON.stringify(v)} is not one of ${values.join(', ')}`);
  };
}

/** Accepts anything: fields istiod passes through without reading. */
export const anything: Check = () => undefined;

/** An object whose content is not checked. */
export const anyObject: Check = (v, path) => (isPlainObject(v) ? undefined : wrongType(path, 'an object', v));

export interface ArrayOptions {
  readonly minItems?: number;
  readonly maxItems?: number;
  /** Runs after every item passed; returns a problem naming the offending item. */
  readonly rule?: (items: readonly unknown[], path: string) => Problem | undefined;
}

export function arr(item: Check, options: ArrayOptions = {}): Check {
  return (v, path) => {
    if (!Array.isArray(v)) return wrongType(path, 'an array', v);
    if (options.minItems !== undefined && v.length < options.minItems) {
      return problem(
        path,
        options.minItems === 1 ? 'missing_field' : 'invalid_value',
        options.minItems === 1
          ? 'must have at least one item'
          : `must have at least ${options.minItems} items`,
      );
    }
    if (options.maxItems !== undefined && v.length > options.maxItems) {
      return problem(path, 'invalid_value', `must have at most ${options.maxItems} items`);
    }
    for (let i = 0; i < v.length; i++) {
      const p = item(v[i], childPath(path, i));
      if (p) return p;
    }
    return options.rule?.(v, path);
  };
}

export interface RecordOptions {
  /** Returns a message when a key is wrong. */
  readonly key?: StringRule;
  readonly minProperties?: number;
  readonly maxProperties?: number;
}

/** A map with string keys (`labels`, `portLevelMtls`). */
export function record(value: Check, options: RecordOptions = {}): Check {
  return (v, path) => {
    if (!isPlainObject(v)) return wrongType(path, 'an object', v);
    const keys = Object.keys(v);
    if (options.minProperties !== undefined && keys.length < options.minProperties) {
      return problem(path, 'invalid_value', `must have at least ${options.minProperties} entries`);
    }
    if (options.maxProperties !== undefined && keys.length > options.maxProperties) {
      return problem(path, 'invalid_value', `must have at most ${options.maxProperties} entries`);
    }
    for (const k of keys) {
      const kp = childPath(path, k);
      const keyMsg = options.key?.(k);
      if (keyMsg !== undefined) return problem(kp, 'invalid_value', `key ${keyMsg}`);
      const p = value(v[k], kp);
      if (p) return p;
    }
    return undefined;
  };
}

export interface ObjectOptions {
  /** Reject fields not listed, as a structural CRD schema with strict field validation does. */
  readonly strict?: boolean;
  readonly required?: readonly string[];
  /** Cross-field rules (the CRDs' `x-kubernetes-validations`), run after the fields passed. */
  readonly rules?: readonly ((o: Record<string, unknown>, path: string) => Problem | undefined)[];
}

export function obj(fields: Readonly<Record<string, Check>>, options: ObjectOptions = {}): Check {
  return (v, path) => {
    if (!isPlainObject(v)) return wrongType(path, 'an object', v);
    for (const r of options.required ?? []) {
      if (v[r] === undefined || v[r] === null)
        return problem(childPath(path, r), 'missing_field', 'required');
    }
    for (const [k, val] of Object.entries(v)) {
      const check = fields[k];
      const kp = childPath(path, k);
      if (!check) {
        if (options.strict) return problem(kp, 'unknown_field', 'unknown field');
        continue;
      }
      if (val === null || val === undefined) continue;
      const p = check(val, kp);
      if (p) return p;
    }
    for (const rule of options.rules ?? []) {
      const p = rule(v, path);
      if (p) return p;
    }
    return undefined;
  };
}

/** Kubernetes' IntOrString (`targetPort`). */
export function intOrString(asInt: Check, asString: Check): Check {
  return (v, path) => {
    if (typeof v === 'number') return asInt(v, path);
    if (typeof v === 'string') return asString(v, path);
    return wrongType(path, 'an integer or a string', v);
  };
}

/** True when the field is present (neither absent nor null), as CEL's `has()`. */
export function has(o: Record<string, unknown>, key: string): boolean {
  return o[key] !== undefined && o[key] !== null;
}
