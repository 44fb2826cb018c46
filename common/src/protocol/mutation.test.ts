/**
 * Proves the golden checks catch a changed field number: for each .proto file, a copy with one
 * number changed is generated into a temporary directory, and the golden suite run on that code
 * must report the change. A control run on an unchanged copy must report nothing, so the failures
 * come from the mutation and not from the harness.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { caSuite } from './fixtures/ca-golden.ts';
import { envoySuite } from './fixtures/envoy-golden.ts';
import { type GeneratedModules, loadGenerated } from './fixtures/generated.ts';
import { allProblems, type GoldenSuite, runGolden } from './fixtures/golden.ts';
import { securitySuite } from './fixtures/security-golden.ts';
import { workloadSuite } from './fixtures/workload-golden.ts';
import { zdsSuite } from './fixtures/zds-golden.ts';

const commonDir = fileURLToPath(new URL('../../', import.meta.url));

/** The node_modules that holds buf and protoc-gen-es: the nearest one up from common/. */
function findNodeModules(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'node_modules', '.bin', 'buf'))) return join(dir, 'node_modules');
    if (dirname(dir) === dir) throw new Error(`no node_modules/.bin/buf above ${from}`);
  }
}
const nodeModules = findNodeModules(commonDir);
const binDir = join(nodeModules, '.bin');

const SUITES: Record<string, (gen: GeneratedModules) => GoldenSuite> = {
  workload: workloadSuite,
  security: securitySuite,
  zds: zdsSuite,
  ca: caSuite,
  envoy: envoySuite,
};

/** Generates code from a copy of common/proto with `edit` applied; returns the loaded modules. */
async function generateMutated(
  edit: { file: string; from: string; to: string } | undefined,
  work: string,
): Promise<GeneratedModules> {
  cpSync(join(commonDir, 'proto'), join(work, 'proto'), { recursive: true });
  copyFileSync(join(commonDir, 'buf.yaml'), join(work, 'buf.yaml'));
  copyFileSync(join(commonDir, 'buf.gen.yaml'), join(work, 'buf.gen.yaml'));
  // Generated modules import @bufbuild/protobuf; resolution walks up from the temp dir.
  symlinkSync(nodeModules, join(work, 'node_modules'), 'dir');
  if (edit !== undefined) {
    const path = join(work, 'proto', edit.file);
    const source = readFileSync(path, 'utf8');
    assert.equal(source.split(edit.from).length - 1, 1, `${edit.from} must occur once in ${edit.file}`);
    writeFileSync(path, source.replace(edit.from, edit.to));
  }
  const run = spawnSync(join(binDir, 'buf'), ['generate'], {
    cwd: work,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ''}` },
  });
  assert.equal(run.status, 0, `buf generate failed: ${run.stderr}`);
  return loadGenerated(join(work, 'src', 'gen'));
}

async function withWorkDir<T>(fn: (work: string) => Promise<T>): Promise<T> {
  const work = mkdtempSync(join(tmpdir(), 'ambient-proto-mutation-'));
  try {
    return await fn(work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const MUTATIONS = [
  {
    file: 'istio/workload/workload.proto',
    from: 'string uid = 20;',
    to: 'string uid = 28;',
    suite: 'workload',
    expect: 'unexpected field 28',
  },
  {
    file: 'istio/security/authorization.proto',
    from: 'repeated ServiceAccountMatch service_accounts = 11;',
    to: 'repeated ServiceAccountMatch service_accounts = 14;',
    suite: 'security',
    expect: 'istio.security.Authorization.rules.clauses.matches: unexpected field 14 ',
  },
  {
    file: 'istio/workload/zds/zds.proto',
    from: 'string uid = 2;',
    to: 'string uid = 1;',
    suite: 'zds',
    expect: 'istio.workload.zds.WorkloadRequest.del: unexpected field 1 ',
  },
  {
    file: 'istio/v1/auth/ca.proto',
    from: 'int64 validity_duration = 3;',
    to: 'int64 validity_duration = 2;',
    suite: 'ca',
    expect: 'istio.v1.auth.IstioCertificateRequest: unexpected field 2 ',
  },
  {
    file: 'envoy/config/core/v3/base.proto',
    from: 'string user_agent_name = 6;',
    to: 'string user_agent_name = 13;',
    suite: 'envoy',
    expect: 'unexpected field 13',
  },
  {
    file: 'google/rpc/status.proto',
    from: 'repeated google.protobuf.Any details = 3;',
    to: 'repeated google.protobuf.Any details = 4;',
    suite: 'envoy',
    expect: 'error_detail: unexpected field 4 ',
  },
  {
    file: 'envoy/service/discovery/v3/discovery.proto',
    from: 'repeated string removed_resources = 6;',
    to: 'repeated string removed_resources = 3;',
    suite: 'envoy',
    expect: 'envoy.service.discovery.v3.DeltaDiscoveryResponse: unexpected field 3 ',
  },
  {
    // ads.proto declares no fields; its contract is the method name in the gRPC path.
    file: 'envoy/service/discovery/v3/ads.proto',
    from: 'rpc DeltaAggregatedResources(',
    to: 'rpc DeltaAggregatedResource(',
    suite: 'envoy',
    expect: 'AggregatedDiscoveryService.DeltaAggregatedResources: method not declared',
  },
] as const;

describe('golden checks catch a changed field number', () => {
  test('control: an unchanged copy generated the same way passes every suite', async () => {
    const problems = await withWorkDir(async (work) => {
      const gen = await generateMutated(undefined, work);
      return Object.values(SUITES).flatMap((suite) => allProblems(runGolden(suite(gen))));
    });
    assert.deepEqual(problems, []);
  });

  for (const mutation of MUTATIONS) {
    test(`${mutation.file}: "${mutation.from}" → "${mutation.to}" is caught`, async () => {
      const problems = await withWorkDir(async (work) => {
        const gen = await generateMutated(mutation, work);
        const suite = SUITES[mutation.suite];
        assert.ok(suite !== undefined);
        return allProblems(runGolden(suite(gen)));
      });
      assert.ok(problems.length > 0, 'the golden suite passed on mutated code');
      assert.ok(
        problems.some((p) => p.includes(mutation.expect)),
        `expected a problem containing ${JSON.stringify(mutation.expect)}, got:\n${problems.join('\n')}`,
      );
    });
  }
});
