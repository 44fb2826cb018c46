import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TYPE_URL } from '../xds/types.ts';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';

const gen = await loadGenerated(GEN_DIR);

test('TYPE_URL values are the spec strings', () => {
  assert.deepEqual(TYPE_URL, {
    ADDRESS: 'type.googleapis.com/istio.workload.Address',
    AUTHORIZATION: 'type.googleapis.com/istio.security.Authorization',
    WORKLOAD: 'type.googleapis.com/istio.workload.Workload',
  });
});

test('TYPE_URL values name the generated message types', () => {
  const prefix = 'type.googleapis.com/';
  assert.equal(TYPE_URL.ADDRESS, prefix + gen.workload.AddressSchema.typeName);
  assert.equal(TYPE_URL.AUTHORIZATION, prefix + gen.security.AuthorizationSchema.typeName);
  assert.equal(TYPE_URL.WORKLOAD, prefix + gen.workload.WorkloadSchema.typeName);
});
