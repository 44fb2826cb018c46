/**
 * A protobuf wire-format reader with no protobuf library behind it, and a checker that walks
 * encoded bytes against hand-written tables of the wire contract. Golden tests use it so that
 * generated code is judged by an independent reading of the bytes, not by itself.
 */
import { MeshError } from '../errors.ts';

export type WireFormatErrorCode = 'TRUNCATED' | 'VARINT_TOO_LONG' | 'BAD_FIELD_NUMBER' | 'BAD_WIRE_TYPE';

/** Bytes that are not a well-formed protobuf encoding. */
export class WireFormatError extends MeshError<WireFormatErrorCode> {}

/** The four wire types proto3 encoders emit (groups, 3 and 4, are refused). */
export const WireType = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;
export type WireType = (typeof WireType)[keyof typeof WireType];

/** One decoded tag-value pair; I64 values are read as unsigned little-endian. */
export type WireField =
  | { readonly number: number; readonly wireType: 0; readonly value: bigint; readonly offset: number }
  | { readonly number: number; readonly wireType: 1; readonly value: bigint; readonly offset: number }
  | { readonly number: number; readonly wireType: 2; readonly value: Uint8Array; readonly offset: number }
  | { readonly number: number; readonly wireType: 5; readonly value: number; readonly offset: number };

const MAX_FIELD_NUMBER = 2 ** 29 - 1;

/** Reads a base-128 varint (at most 10 bytes) at `pos`; returns the value and the next offset. */
export function readVarint(buf: Uint8Array, pos: number): [value: bigint, next: number] {
  let value = 0n;
  for (let i = 0; i < 10; i++) {
    const at = pos + i;
    const byte = buf[at];
    if (byte === undefined) {
      throw new WireFormatError(
        'TRUNCATED',
        `varint at offset ${pos} runs past the end (${buf.length} bytes)`,
      );
    }
    value |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [value & 0xffff_ffff_ffff_ffffn, at + 1];
  }
  throw new WireFormatError('VARINT_TOO_LONG', `varint at offset ${pos} is longer than 10 bytes`);
}

function readFixed(buf: Uint8Array, pos: number, size: 4 | 8): bigint {
  if (pos + size > buf.length) {
    throw new WireFormatError(
      'TRUNCATED',
      `${size * 8}-bit value at offset ${pos} runs past the end (${buf.length} bytes)`,
    );
  }
  let value = 0n;
  for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(buf[pos + i] ?? 0);
  return value;
}

/** Splits one message's bytes into its tag-value pairs, in encoding order. */
export function decodeFields(buf: Uint8Array): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const offset = pos;
    const [tag, afterTag] = readVarint(buf, pos);
    const number = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    if (number < 1 || number > MAX_FIELD_NUMBER) {
      throw new WireFormatError(
        'BAD_FIELD_NUMBER',
        `field number ${number} at offset ${offset} is out of range`,
      );
    }
    pos = afterTag;
    switch (wireType) {
      case WireType.VARINT: {
        const [value, next] = readVarint(buf, pos);
        fields.push({ number, wireType, value, offset });
        pos = next;
        break;
      }
      case WireType.I64:
        fields.push({ number, wireType, value: readFixed(buf, pos, 8), offset });
        pos += 8;
        break;
      case WireType.LEN: {
        const [length, start] = readVarint(buf, pos);
        const end = start + Number(length);
        if (length > BigInt(buf.length) || end > buf.length) {
          throw new WireFormatError(
            'TRUNCATED',
            `field ${number} at offset ${offset} declares ${length} bytes but only ${buf.length - start} remain`,
          );
        }
        fields.push({ number, wireType, value: buf.subarray(start, end), offset });
        pos = end;
        break;
      }
      case WireType.I32:
        fields.push({ number, wireType, value: Number(readFixed(buf, pos, 4)), offset });
        pos += 4;
        break;
      default:
        throw new WireFormatError(
          'BAD_WIRE_TYPE',
          `field ${number} at offset ${offset} has wire type ${wireType}, which proto3 never emits`,
        );
    }
  }
  return fields;
}

/** Reads the body of a packed repeated field as a list of varints. */
export function decodePackedVarints(buf: Uint8Array): bigint[] {
  const values: bigint[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [value, next] = readVarint(buf, pos);
    values.push(value);
    pos = next;
  }
  return values;
}

// ---------------------------------------------------------------------------------------------
// Tables

/** Scalar value types of proto3, as written in .proto files. */
export type ScalarName =
  | 'double'
  | 'float'
  | 'int32'
  | 'int64'
  | 'uint32'
  | 'uint64'
  | 'sint32'
  | 'sint64'
  | 'fixed32'
  | 'fixed64'
  | 'sfixed32'
  | 'sfixed64'
  | 'bool'
  | 'string'
  | 'bytes';

/** The type column of a table row. Enum and message names are fully qualified, without a dot. */
export type TableType =
  | { readonly kind: 'scalar'; readonly scalar: ScalarName }
  | { readonly kind: 'enum'; readonly enum: string }
  | { readonly kind: 'message'; readonly message: string }
  | {
      readonly kind: 'map';
      readonly key: ScalarName;
      readonly value:
        | { readonly kind: 'scalar'; readonly scalar: ScalarName }
        | { readonly kind: 'enum'; readonly enum: string }
        | { readonly kind: 'message'; readonly message: string };
    };

/** One row of a message table. */
export interface FieldRow {
  readonly name: string;
  readonly number: number;
  readonly type: TableType;
  readonly label: 'singular' | 'repeated' | 'optional';
  /** The oneof the field belongs to, if any. */
  readonly oneof?: string;
}

/** A message as the wire contract's tables describe it. */
export interface MessageTable {
  readonly name: string;
  readonly fields: readonly FieldRow[];
}

/** An enum as the wire contract's tables describe it. */
export interface EnumTable {
  readonly name: string;
  readonly values: readonly (readonly [name: string, number: number])[];
}

/** Every table a check may reach, by fully qualified name. */
export interface TableSet {
  readonly messages: ReadonlyMap<string, MessageTable>;
  readonly enums: ReadonlyMap<string, EnumTable>;
}

/** What a walk saw, accumulated over many messages so coverage can be judged afterwards. */
export interface Coverage {
  /** Message name → field numbers seen in it. */
  readonly fields: Map<string, Set<number>>;
  /** Message name → number of instances walked. */
  readonly instances: Map<string, number>;
  /** Enum name → values seen on the wire. */
  readonly enumValues: Map<string, Set<number>>;
}

/** An empty coverage record. */
export function newCoverage(): Coverage {
  return { fields: new Map(), instances: new Map(), enumValues: new Map() };
}

const VARINT_SCALARS: ReadonlySet<ScalarName> = new Set([
  'int32',
  'int64',
  'uint32',
  'uint64',
  'sint32',
  'sint64',
  'bool',
]);
const I64_SCALARS: ReadonlySet<ScalarName> = new Set(['double', 'fixed64', 'sfixed64']);
const I32_SCALARS: ReadonlySet<ScalarName> = new Set(['float', 'fixed32', 'sfixed32']);

function scalarWireType(scalar: ScalarName): WireType {
  if (VARINT_SCALARS.has(scalar)) return WireType.VARINT;
  if (I64_SCALARS.has(scalar)) return WireType.I64;
  if (I32_SCALARS.has(scalar)) return WireType.I32;
  return WireType.LEN;
}

/** The wire type a single element of this table type is encoded with. */
export function elementWireType(type: TableType): WireType {
  switch (type.kind) {
    case 'scalar':
      return scalarWireType(type.scalar);
    case 'enum':
      return WireType.VARINT;
    case 'message':
    case 'map':
      return WireType.LEN;
  }
}

const WIRE_TYPE_NAMES: Record<number, string> = { 0: 'VARINT', 1: 'I64', 2: 'LEN', 5: 'I32' };
const utf8 = new TextDecoder('utf-8', { fatal: true });

function typeLabel(type: TableType): string {
  switch (type.kind) {
    case 'scalar':
      return type.scalar;
    case 'enum':
      return type.enum;
    case 'message':
      return type.message;
    case 'map':
      return `map<${type.key}, ${typeLabel(type.value)}>`;
  }
}

/**
 * Walks `bytes` as an instance of `messageName` and returns every disagreement with the tables:
 * unknown field numbers, wrong wire types, a singular field repeated, two members of one oneof,
 * invalid UTF-8, out-of-range varints, undeclared enum values. Nested messages, map entries and
 * `google.protobuf.Any` payloads whose type URL names a known table are walked too. Each problem
 * starts with the path to the offending field.
 */
export function checkMessage(
  bytes: Uint8Array,
  messageName: string,
  tables: TableSet,
  coverage: Coverage,
  path: string = messageName,
): string[] {
  const table = tables.messages.get(messageName);
  if (table === undefined) return [`${path}: no table for message ${messageName}`];
  let fields: WireField[];
  try {
    fields = decodeFields(bytes);
  } catch (err) {
    return [`${path}: ${err instanceof Error ? err.message : String(err)}`];
  }
  coverage.instances.set(messageName, (coverage.instances.get(messageName) ?? 0) + 1);
  const seen = coverage.fields.get(messageName) ?? new Set<number>();
  coverage.fields.set(messageName, seen);

  const problems: string[] = [];
  const counts = new Map<number, number>();
  const oneofMembers = new Map<string, Set<string>>();
  for (const field of fields) {
    const row = table.fields.find((r) => r.number === field.number);
    if (row === undefined) {
      problems.push(
        `${path}: unexpected field ${field.number} (wire type ${WIRE_TYPE_NAMES[field.wireType]}) at offset ${field.offset}`,
      );
      continue;
    }
    seen.add(field.number);
    counts.set(field.number, (counts.get(field.number) ?? 0) + 1);
    if (row.oneof !== undefined) {
      const members = oneofMembers.get(row.oneof) ?? new Set<string>();
      members.add(row.name);
      oneofMembers.set(row.oneof, members);
    }
    problems.push(...checkField(field, row, tables, coverage, `${path}.${row.name}`));
  }
  for (const [number, count] of counts) {
    const row = table.fields.find((r) => r.number === number);
    if (row !== undefined && row.label !== 'repeated' && row.type.kind !== 'map' && count > 1) {
      problems.push(`${path}.${row.name}: singular field ${number} appears ${count} times`);
    }
  }
  for (const [oneof, members] of oneofMembers) {
    if (members.size > 1) {
      problems.push(`${path}: oneof ${oneof} has several members set: ${[...members].join(', ')}`);
    }
  }
  if (messageName === 'google.protobuf.Any')
    problems.push(...checkAnyPayload(fields, tables, coverage, path));
  return problems;
}

function checkField(
  field: WireField,
  row: FieldRow,
  tables: TableSet,
  coverage: Coverage,
  path: string,
): string[] {
  const type = row.type;
  const expected = elementWireType(type);
  const packable = row.label === 'repeated' && expected !== WireType.LEN;
  if (packable && field.wireType === WireType.LEN)
    return checkPacked(field.value, type, tables, coverage, path);
  if (field.wireType !== expected) {
    return [
      `${path}: field ${row.number} (${typeLabel(type)}) has wire type ${WIRE_TYPE_NAMES[field.wireType]}, expected ${WIRE_TYPE_NAMES[expected]}`,
    ];
  }
  if (type.kind === 'map') return checkMapEntry(field, row, type, tables, coverage, path);
  return checkValue(field, type, tables, coverage, path);
}

function checkValue(
  field: WireField,
  type: Exclude<TableType, { kind: 'map' }>,
  tables: TableSet,
  coverage: Coverage,
  path: string,
): string[] {
  switch (type.kind) {
    case 'message':
      return field.wireType === WireType.LEN
        ? checkMessage(field.value, type.message, tables, coverage, path)
        : [`${path}: message field is not length-delimited`];
    case 'enum':
      return field.wireType === WireType.VARINT
        ? checkEnumValue(field.value, type.enum, tables, coverage, path)
        : [];
    case 'scalar':
      if (field.wireType === WireType.VARINT) return checkVarintRange(field.value, type.scalar, path);
      if (field.wireType === WireType.LEN && type.scalar === 'string') {
        try {
          utf8.decode(field.value);
        } catch {
          return [`${path}: string is not valid UTF-8`];
        }
      }
      return [];
  }
}

function checkVarintRange(value: bigint, scalar: ScalarName, path: string): string[] {
  const fits =
    scalar === 'bool'
      ? value <= 1n
      : scalar === 'uint32' || scalar === 'sint32'
        ? value <= 0xffff_ffffn
        : scalar === 'int32'
          ? value <= 0x7fff_ffffn || value >= 0xffff_ffff_8000_0000n
          : true;
  return fits ? [] : [`${path}: varint ${value} is out of range for ${scalar}`];
}

function checkEnumValue(value: bigint, enumName: string, tables: TableSet, coverage: Coverage, path: string) {
  const table = tables.enums.get(enumName);
  if (table === undefined) return [`${path}: no table for enum ${enumName}`];
  const number = BigInt.asIntN(32, value);
  const values = coverage.enumValues.get(enumName) ?? new Set<number>();
  values.add(Number(number));
  coverage.enumValues.set(enumName, values);
  return table.values.some(([, n]) => BigInt(n) === number)
    ? []
    : [`${path}: value ${number} is not declared in enum ${enumName}`];
}

function checkPacked(
  body: Uint8Array,
  type: TableType,
  tables: TableSet,
  coverage: Coverage,
  path: string,
): string[] {
  if (type.kind === 'scalar' && (I64_SCALARS.has(type.scalar) || I32_SCALARS.has(type.scalar))) {
    const size = I64_SCALARS.has(type.scalar) ? 8 : 4;
    return body.length % size === 0 ? [] : [`${path}: packed ${type.scalar} body of ${body.length} bytes`];
  }
  let values: bigint[];
  try {
    values = decodePackedVarints(body);
  } catch (err) {
    return [`${path}: packed body: ${err instanceof Error ? err.message : String(err)}`];
  }
  const problems: string[] = [];
  for (const [i, value] of values.entries()) {
    if (type.kind === 'enum')
      problems.push(...checkEnumValue(value, type.enum, tables, coverage, `${path}[${i}]`));
    else if (type.kind === 'scalar') problems.push(...checkVarintRange(value, type.scalar, `${path}[${i}]`));
  }
  return problems;
}

function checkMapEntry(
  field: WireField,
  row: FieldRow,
  type: Extract<TableType, { kind: 'map' }>,
  tables: TableSet,
  coverage: Coverage,
  path: string,
): string[] {
  if (field.wireType !== WireType.LEN) return [];
  const entryName = `${row.name}[entry]`;
  const entryTable: MessageTable = {
    name: entryName,
    fields: [
      { name: 'key', number: 1, type: { kind: 'scalar', scalar: type.key }, label: 'singular' },
      { name: 'value', number: 2, type: type.value, label: 'singular' },
    ],
  };
  const entryTables: TableSet = {
    messages: new Map([...tables.messages, [entryName, entryTable]]),
    enums: tables.enums,
  };
  const problems = checkMessage(field.value, entryName, entryTables, coverage, `${path}{}`);
  let present: number[] = [];
  try {
    present = decodeFields(field.value).map((f) => f.number);
  } catch {
    // Already reported by checkMessage.
  }
  for (const n of [1, 2]) {
    if (!present.includes(n)) problems.push(`${path}{}: map entry lacks its ${n === 1 ? 'key' : 'value'}`);
  }
  return problems;
}

const TYPE_URL_PREFIX = 'type.googleapis.com/';

function checkAnyPayload(fields: WireField[], tables: TableSet, coverage: Coverage, path: string): string[] {
  const url = fields.find((f) => f.number === 1 && f.wireType === WireType.LEN);
  const value = fields.find((f) => f.number === 2 && f.wireType === WireType.LEN);
  if (url === undefined || url.wireType !== WireType.LEN) return [];
  const typeUrl = new TextDecoder().decode(url.value);
  if (!typeUrl.startsWith(TYPE_URL_PREFIX))
    return [`${path}: type URL ${JSON.stringify(typeUrl)} lacks its prefix`];
  const name = typeUrl.slice(TYPE_URL_PREFIX.length);
  if (!tables.messages.has(name)) return [];
  const payload = value?.wireType === WireType.LEN ? value.value : new Uint8Array();
  return checkMessage(payload, name, tables, coverage, `${path}<${name}>`);
}

/**
 * Returns a problem for every table row in `messageNames` that coverage never saw, and for every
 * listed message that was never walked at all (which catches empty messages).
 */
export function missingCoverage(
  messageNames: readonly string[],
  tables: TableSet,
  coverage: Coverage,
): string[] {
  const problems: string[] = [];
  for (const name of messageNames) {
    const table = tables.messages.get(name);
    if (table === undefined) {
      problems.push(`${name}: no table`);
      continue;
    }
    if ((coverage.instances.get(name) ?? 0) === 0) {
      problems.push(`${name}: never appeared in any example`);
      continue;
    }
    const seen = coverage.fields.get(name) ?? new Set<number>();
    for (const row of table.fields) {
      if (!seen.has(row.number))
        problems.push(`${name}.${row.name}: field ${row.number} never appeared on the wire`);
    }
  }
  return problems;
}
