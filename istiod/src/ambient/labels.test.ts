import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { labelSelectorMatches, selectsNonEmpty } from './labels.ts';

describe('selectsNonEmpty', () => {
  it('requires every selector label and at least one', () => {
    assert.equal(selectsNonEmpty({ app: 'a' }, { app: 'a', v: '1' }), true);
    assert.equal(selectsNonEmpty({ app: 'a', v: '2' }, { app: 'a', v: '1' }), false);
    assert.equal(selectsNonEmpty({}, { app: 'a' }), false);
    assert.equal(selectsNonEmpty(undefined, { app: 'a' }), false);
    assert.equal(selectsNonEmpty({ app: '' }, {}), false);
    assert.equal(selectsNonEmpty({ app: '' }, { app: '' }), true);
  });
});

describe('labelSelectorMatches', () => {
  it('ANDs matchLabels and matchExpressions; empty matches all', () => {
    const labels = { team: 'a', env: 'prod' };
    assert.equal(labelSelectorMatches({}, labels), true);
    assert.equal(labelSelectorMatches(undefined, labels), true);
    assert.equal(labelSelectorMatches({ matchLabels: { team: 'a' } }, labels), true);
    assert.equal(labelSelectorMatches({ matchLabels: { team: 'b' } }, labels), false);
    const expr = (operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist', key: string, values?: string[]) =>
      labelSelectorMatches({ matchExpressions: [{ key, operator, ...(values ? { values } : {}) }] }, labels);
    assert.equal(expr('In', 'env', ['prod', 'dev']), true);
    assert.equal(expr('In', 'env', ['dev']), false);
    assert.equal(expr('NotIn', 'env', ['dev']), true);
    assert.equal(expr('NotIn', 'missing', ['x']), true);
    assert.equal(expr('Exists', 'team'), true);
    assert.equal(expr('Exists', 'missing'), false);
    assert.equal(expr('DoesNotExist', 'team'), false);
    assert.equal(expr('DoesNotExist', 'missing'), true);
  });
});
