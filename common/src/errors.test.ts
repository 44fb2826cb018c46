import assert from 'node:assert/strict';
import { test } from 'node:test';
import { causedBy, errorMessage, MeshError } from './errors.ts';

type DialCode = 'DIAL_TIMEOUT' | 'DIAL_REFUSED';
class DialError extends MeshError<DialCode> {}
class ProxyError extends MeshError<'UPSTREAM_FAILED'> {}

test('a MeshError keeps its code, name, cause and retryable flag', () => {
  const root = new DialError('DIAL_TIMEOUT', 'connect to 10.0.0.1:15008 timed out', { retryable: true });
  const err = new ProxyError('UPSTREAM_FAILED', 'upstream failed', { cause: root });
  assert.equal(err.code, 'UPSTREAM_FAILED');
  assert.equal(err.name, 'ProxyError');
  assert.equal(err.cause, root);
  assert.equal(err.retryable, false);
  assert.equal(root.retryable, true);
  assert.ok(err instanceof Error);
});

test('causedBy walks the cause chain, and survives cycles', () => {
  const root = new DialError('DIAL_REFUSED', 'refused');
  const mid = new Error('wrapped', { cause: root });
  const top = new ProxyError('UPSTREAM_FAILED', 'failed', { cause: mid });
  assert.ok(causedBy(top, 'DIAL_REFUSED'));
  assert.ok(causedBy(top, 'UPSTREAM_FAILED'));
  assert.ok(!causedBy(top, 'DIAL_TIMEOUT'));
  const a = new Error('a');
  const b = new Error('b', { cause: a });
  (a as { cause?: unknown }).cause = b;
  assert.ok(!causedBy(a, 'X'));
});

test('toJSON exposes code and the cause for structured logs', () => {
  const err = new ProxyError('UPSTREAM_FAILED', 'failed', { cause: new DialError('DIAL_TIMEOUT', 'slow') });
  assert.deepEqual(JSON.parse(JSON.stringify(err)), {
    name: 'ProxyError',
    code: 'UPSTREAM_FAILED',
    message: 'failed',
    cause: { name: 'DialError', code: 'DIAL_TIMEOUT', message: 'slow' },
  });
});

test('errorMessage handles non-errors', () => {
  assert.equal(errorMessage('plain'), 'plain');
  assert.equal(errorMessage({ a: 1 }), '{"a":1}');
  assert.equal(errorMessage(undefined), 'undefined');
  assert.equal(errorMessage(new Error('boom')), 'boom');
});
