import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, deepFreeze, EnvReader, envVar, parseDurationMs, renderEnvTable } from './env.ts';

function problemsOf(fn: () => void): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('EnvReader', () => {
  test('returns defaults for unset and empty variables', () => {
    const r = new EnvReader({ EMPTY: '' });
    assert.equal(r.string('EMPTY', 'd'), 'd');
    assert.equal(r.int('MISSING', 7), 7);
    assert.equal(r.bool('EMPTY', true), true);
    assert.equal(r.durationMs('MISSING', 1500), 1500);
    r.finish();
  });

  test('parses well-formed values', () => {
    const r = new EnvReader({
      N: '42',
      P: '15008',
      B: 'FALSE',
      D: '250ms',
      M: '5m',
      E: 'json',
      L: 'a, b,,c ',
      ISTIO_META_CLUSTER_ID: 'c1',
      ISTIO_META_DNS_CAPTURE: 'true',
    });
    assert.equal(r.int('N', 0), 42);
    assert.equal(r.port('P', 0), 15008);
    assert.equal(r.bool('B', true), false);
    assert.equal(r.durationMs('D', 0), 250);
    assert.equal(r.durationMs('M', 0), 300_000);
    assert.equal(r.oneOf('E', ['json', 'text'], 'text'), 'json');
    assert.deepEqual(r.list('L'), ['a', 'b', 'c']);
    assert.deepEqual(r.withPrefix('ISTIO_META_'), { CLUSTER_ID: 'c1', DNS_CAPTURE: 'true' });
    r.finish();
  });

  test('an error names the variable, the value and the reason', () => {
    const err = problemsOf(() => {
      const r = new EnvReader({ XDS_PORT: 'fifteen' });
      r.port('XDS_PORT', 15012);
      r.finish();
    });
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.equal(
      err.message,
      'invalid environment variable XDS_PORT="fifteen": is not a TCP port (an integer from 0 to 65535)',
    );
    assert.deepEqual(err.problems, [
      { envVar: 'XDS_PORT', value: 'fifteen', reason: 'is not a TCP port (an integer from 0 to 65535)' },
    ]);
  });

  test('collects every problem before throwing', () => {
    const err = problemsOf(() => {
      const r = new EnvReader({
        A: '1.5',
        B: 'maybe',
        C: '10 parsecs',
        D: 'xml',
        E: '70000',
        F: '-1',
        G: 'x\0y',
      });
      r.int('A', 0);
      r.bool('B', false);
      r.durationMs('C', 0);
      r.oneOf('D', ['json', 'text'], 'json');
      r.port('E', 0);
      r.int('F', 0, { min: 0 });
      r.string('G');
      r.required('H');
      r.finish();
    });
    assert.deepEqual(
      err.problems.map((p) => `${p.envVar}:${p.reason}`),
      [
        'A:is not an integer',
        'B:is not a boolean (use true or false)',
        'C:is not a duration (a number followed by ms, s, m or h, e.g. 10s)',
        'D:must be one of json, text',
        'E:is not a TCP port (an integer from 0 to 65535)',
        'F:must be at least 0',
        'G:contains a NUL byte',
        'H:is required but not set',
      ],
    );
    assert.match(err.message, /^invalid environment variables:\n {2}A="1.5": is not an integer\n/);
  });

  test('bounds on durations', () => {
    const err = problemsOf(() => {
      const r = new EnvReader({ TTL: '100d', TTL2: '91h' });
      r.durationMs('TTL', 0);
      r.durationMs('TTL2', 0, { maxMs: 90 * 3_600_000 });
      r.finish();
    });
    assert.equal(err.problems.length, 2);
    assert.equal(err.problems[1]?.reason, 'must be at most 324000000ms');
  });

  test('caller cross-field problems join the list', () => {
    const err = problemsOf(() => {
      const r = new EnvReader({ MIN: '5', MAX: '3' });
      if (r.int('MIN', 0) > r.int('MAX', 0)) r.problem('MIN', '5', 'must not exceed MAX (3)');
      r.finish();
    });
    assert.equal(err.problems[0]?.envVar, 'MIN');
  });
});

test('parseDurationMs', () => {
  assert.equal(parseDurationMs('1.5s'), 1500);
  assert.equal(parseDurationMs('24h'), 86_400_000);
  assert.equal(parseDurationMs('10'), undefined);
  assert.equal(parseDurationMs('s'), undefined);
  assert.equal(parseDurationMs('-1s'), undefined);
});

describe('EnvReader.distinctPorts', () => {
  test('names each port that repeats an earlier one, ignoring 0', () => {
    const r = new EnvReader({});
    r.distinctPorts([
      ['A_PORT', 15000],
      ['B_PORT', 0],
      ['C_PORT', 0],
      ['D_PORT', 15000],
    ]);
    const err = problemsOf(() => r.finish());
    assert.deepEqual(err.problems, [
      { envVar: 'D_PORT', value: '15000', reason: 'is the same port as A_PORT' },
    ]);
  });
});

describe('deepFreeze', () => {
  test('freezes nested objects and arrays', () => {
    const o = deepFreeze({ a: { b: [1, { c: 2 }] } });
    assert.ok(Object.isFrozen(o.a) && Object.isFrozen(o.a.b) && Object.isFrozen(o.a.b[1]));
  });
});

describe('renderEnvTable', () => {
  const vars = [envVar('A_PORT', '15000', 'The A port.'), envVar('B', '(none)', 'B.')];
  test('renders a Markdown row per variable', () => {
    assert.equal(
      renderEnvTable(vars),
      '| Variable | Default | Meaning |\n|---|---|---|\n| `A_PORT` | 15000 | The A port. |\n| `B` | (none) | B. |',
    );
  });
  test('quotes defaults as code when asked', () => {
    assert.match(
      renderEnvTable(vars, { defaultAsCode: true }),
      /^\| `A_PORT` \| `15000` \| The A port\. \|$/m,
    );
  });
});
