import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { formatLevelSpec, LogError, Logging, parseLevelSpec } from './log.ts';

function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(l);
      cb();
    },
  });
  return { stream, lines };
}

describe('parseLevelSpec', () => {
  test('parses a default and per-scope levels', () => {
    assert.deepEqual(parseLevelSpec('warn,xds:debug,hbone:ERROR'), {
      defaultLevel: 'warn',
      scopes: { xds: 'debug', hbone: 'error' },
    });
  });

  test('accepts Istio spellings warning and none', () => {
    assert.deepEqual(parseLevelSpec('ca:warning,access:none'), {
      defaultLevel: 'info',
      scopes: { ca: 'warn', access: 'off' },
    });
  });

  test('rejects an unknown level, naming it and its scope', () => {
    assert.throws(
      () => parseLevelSpec('info,xds:loud'),
      (err: unknown) => {
        assert.ok(err instanceof LogError);
        assert.equal(err.code, 'LOG_LEVEL_INVALID');
        assert.match(err.message, /"loud" for scope "xds"/);
        return true;
      },
    );
  });

  test('rejects an empty or malformed scope', () => {
    assert.throws(() => parseLevelSpec(':debug'), /scope "" in ":debug"/);
    assert.throws(() => parseLevelSpec('a b:debug'), /scope "a b"/);
  });

  test('formats back', () => {
    assert.equal(formatLevelSpec(parseLevelSpec('debug,xds:warn')), 'debug,xds:warn');
  });
});

describe('Logging', () => {
  test('writes JSON lines with scope, level and fields', () => {
    const { stream, lines } = capture();
    const logging = new Logging({ destination: stream, base: { component: 'ztunnel' } });
    logging.logger('xds').info({ types: 2 }, 'connected');
    const rec = JSON.parse(lines[0] ?? '{}');
    assert.equal(rec.level, 'info');
    assert.equal(rec.scope, 'xds');
    assert.equal(rec.msg, 'connected');
    assert.equal(rec.types, 2);
    assert.equal(rec.component, 'ztunnel');
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT/);
  });

  test('levels per scope change at runtime, for existing and new loggers', () => {
    const { stream, lines } = capture();
    const logging = new Logging({ destination: stream, levels: 'info' });
    const xds = logging.logger('xds');
    xds.debug('hidden');
    logging.setLevels('xds:debug');
    xds.debug('shown');
    logging.logger('ca').debug('hidden too');
    logging.setLevels('warn', { reset: true });
    xds.info('hidden after reset');
    logging.logger('ca').warn('shown warn');
    logging.setLevels('ca:off');
    logging.logger('ca').error('silenced');
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).msg),
      ['shown', 'shown warn'],
    );
    assert.deepEqual(logging.levels().active, { ca: 'off', xds: 'warn' });
  });

  test('an invalid setLevels changes nothing', () => {
    const logging = new Logging({ destination: capture().stream, levels: 'info,xds:debug' });
    assert.throws(() => logging.setLevels('ca:debug,xds:nope'), LogError);
    assert.equal(logging.levelOf('ca'), 'info');
    assert.equal(logging.levelOf('xds'), 'debug');
  });

  test('text format is tab-separated like ztunnel', () => {
    const { stream, lines } = capture();
    const logging = new Logging({ destination: stream, format: 'text' });
    logging
      .logger('access')
      .info({ 'src.addr': '10.0.0.1:3333', direction: 'inbound', note: 'a b' }, 'connection complete');
    const parts = (lines[0] ?? '').split('\t');
    assert.match(parts[0] ?? '', /^\d{4}-\d\d-\d\dT.*Z$/);
    assert.deepEqual(parts.slice(1), [
      'info',
      'access',
      'connection complete',
      'src.addr=10.0.0.1:3333',
      'direction=inbound',
      'note="a b"',
    ]);
  });

  test('errors are serialized with their code', () => {
    const { stream, lines } = capture();
    const logging = new Logging({ destination: stream });
    const err = Object.assign(new Error('boom'), { code: 'E_BOOM' });
    logging.logger('x').error({ err }, 'failed');
    const rec = JSON.parse(lines[0] ?? '{}');
    assert.equal(rec.err.message, 'boom');
    assert.equal(rec.err.code, 'E_BOOM');
  });
});
