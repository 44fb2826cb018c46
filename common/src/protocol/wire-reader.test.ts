import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  checkMessage,
  decodeFields,
  decodePackedVarints,
  missingCoverage,
  newCoverage,
  readVarint,
  WireFormatError,
} from '../testing/wire-reader.ts';
import { hex } from './fixtures/hex.ts';
import { enm, enumTable, map, msg, oneof, table, tableSet } from './fixtures/table-dsl.ts';

describe('wire reader: primitives', () => {
  test('varints: 1, 150 (96 01), 2^32 and -1 as a 10-byte int64', () => {
    assert.deepEqual(readVarint(hex('01'), 0), [1n, 1]);
    assert.deepEqual(readVarint(hex('96 01'), 0), [150n, 2]);
    assert.deepEqual(readVarint(hex('80 80 80 80 10'), 0), [2n ** 32n, 5]);
    assert.deepEqual(readVarint(hex('ff ff ff ff ff ff ff ff ff 01'), 0), [2n ** 64n - 1n, 10]);
  });

  test('an 11-byte varint and a varint cut short are refused with their codes', () => {
    assert.throws(
      () => readVarint(hex('ff ff ff ff ff ff ff ff ff ff 01'), 0),
      (err: unknown) => err instanceof WireFormatError && err.code === 'VARINT_TOO_LONG',
    );
    assert.throws(
      () => readVarint(hex('96'), 0),
      (err: unknown) => err instanceof WireFormatError && err.code === 'TRUNCATED',
    );
  });

  test('all four wire types decode with their numbers, in order', () => {
    // 1: varint 150; 2: LEN "ab"; 3: I64 1; 4: I32 0x01020304
    const fields = decodeFields(hex('08 96 01 12 02 61 62 19 01 00 00 00 00 00 00 00 25 04 03 02 01'));
    assert.deepEqual(
      fields.map((f) => [f.number, f.wireType]),
      [
        [1, 0],
        [2, 2],
        [3, 1],
        [4, 5],
      ],
    );
    assert.equal(fields[0]?.value, 150n);
    assert.deepEqual(fields[1]?.value, hex('61 62'));
    assert.equal(fields[2]?.value, 1n);
    assert.equal(fields[3]?.value, 0x01020304);
  });

  test('a two-byte tag: field 20 LEN', () => {
    const [field] = decodeFields(hex('a2 01 01 75'));
    assert.equal(field?.number, 20);
    assert.equal(field?.wireType, 2);
  });

  test('truncated LEN, truncated I64, groups and field 0 are refused', () => {
    const code = (bytes: string) => {
      try {
        decodeFields(hex(bytes));
      } catch (err) {
        return err instanceof WireFormatError ? err.code : 'other';
      }
      return 'none';
    };
    assert.equal(code('0a 05 61'), 'TRUNCATED');
    assert.equal(code('09 01 02'), 'TRUNCATED');
    assert.equal(code('0b 0c'), 'BAD_WIRE_TYPE');
    assert.equal(code('00 01'), 'BAD_FIELD_NUMBER');
  });

  test('packed varints', () => {
    assert.deepEqual(decodePackedVarints(hex('50 a0 75 00')), [80n, 15008n, 0n]);
  });
});

describe('wire reader: table checks', () => {
  const tables = tableSet(
    [
      [
        table('t.Outer', [
          ['name', 1, 'string'],
          ['inner', 2, msg('t.Inner')],
          ['tags', 3, 'uint32', 'repeated'],
          ['color', 4, enm('t.Color')],
          ['labels', 5, map('string', 'string')],
          ['a', 6, 'string', oneof('choice')],
          ['b', 7, 'string', oneof('choice')],
          ['flag', 8, 'bool'],
        ]),
        table('t.Inner', [['id', 1, 'uint32']]),
      ],
    ],
    [
      [
        enumTable('t.Color', [
          ['RED', 0],
          ['BLUE', 1],
        ]),
      ],
    ],
  );
  const check = (bytes: string) => checkMessage(hex(bytes), 't.Outer', tables, newCoverage());

  test('a conforming message has no problems, nested and packed parts included', () => {
    assert.deepEqual(
      check('0a 01 61 12 02 08 07 1a 02 01 02 20 01 2a 06 0a 01 6b 12 01 76 32 01 78 40 01'),
      [],
    );
  });

  test('an unknown field number is reported', () => {
    assert.match(check('48 01').join(), /unexpected field 9/);
  });

  test('a wrong wire type is reported', () => {
    assert.match(check('08 01').join(), /field 1 \(string\) has wire type VARINT, expected LEN/);
  });

  test('a wrong number inside a nested message is reported with its path', () => {
    assert.match(check('12 02 10 07').join(), /t\.Outer\.inner: unexpected field 2/);
  });

  test('a singular field twice, two oneof members, bad UTF-8, bool 2, undeclared enum value', () => {
    assert.match(check('0a 01 61 0a 01 62').join(), /singular field 1 appears 2 times/);
    assert.match(check('32 01 78 3a 01 79').join(), /oneof choice has several members set: a, b/);
    assert.match(check('0a 01 ff').join(), /not valid UTF-8/);
    assert.match(check('40 02').join(), /out of range for bool/);
    assert.match(check('20 05').join(), /value 5 is not declared in enum t\.Color/);
  });

  test('a map entry without its value is reported', () => {
    assert.match(check('2a 03 0a 01 6b').join(), /map entry lacks its value/);
  });

  test('coverage names every table field that never appeared', () => {
    const coverage = newCoverage();
    checkMessage(hex('0a 01 61 40 01'), 't.Outer', tables, coverage);
    const missing = missingCoverage(['t.Outer', 't.Inner'], tables, coverage);
    assert.deepEqual(missing, [
      't.Outer.inner: field 2 never appeared on the wire',
      't.Outer.tags: field 3 never appeared on the wire',
      't.Outer.color: field 4 never appeared on the wire',
      't.Outer.labels: field 5 never appeared on the wire',
      't.Outer.a: field 6 never appeared on the wire',
      't.Outer.b: field 7 never appeared on the wire',
      't.Inner: never appeared in any example',
    ]);
  });
});
