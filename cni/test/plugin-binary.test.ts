/**
 * The compiled istio-cni plugin, run as a runtime runs it, against the real agent-side server
 * (PluginServer) on a temp socket, a misbehaving raw server, or no agent at all.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { MeshError } from '@ambient/common/errors';
import { Logging } from '@ambient/common/log';
import { buildPlugin, PLUGIN_SOURCE } from '../scripts/build-plugin.ts';
import { type CmdAddHandler, PluginServer } from '../src/agent/plugin-server.ts';
import {
  type CmdAddRequest,
  CNI_ERROR_CODE,
  DEFAULT_CNI_AGENT_RUN_DIR,
  ENROLLMENT_STATE_FILE_NAME,
  ENROLLMENT_STATE_HEADER,
  encodeResultForVersion,
  enrollmentStatePath,
  PLUGIN_AGENT_TIMEOUT_MS,
  PLUGIN_EVENT_SOCKET_NAME,
  pluginEventSocketPath,
  SUPPORTED_CNI_VERSIONS,
  writeEnrollmentState,
} from '../src/plugin-protocol.ts';
import {
  bridgeResult,
  type PluginRun,
  pluginConfig,
  podEnv,
  runPlugin,
  tempRunDir,
} from './plugin-fixture.ts';

class EnrollError extends MeshError<'ENROLL_FAILED'> {}

const quietLog = new Logging({ levels: 'off' }).logger('cni-agent');
const cleanups: (() => Promise<void>)[] = [];

before(() => {
  buildPlugin({ quiet: true });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function runDir(): Promise<string> {
  const d = await tempRunDir();
  cleanups.push(d.remove);
  return d.dir;
}

/** A real agent-side server on a fresh run dir; records every request it handles. */
async function agent(onCmdAdd: CmdAddHandler = async () => {}, handlerTimeoutMs?: number) {
  const dir = await runDir();
  const requests: CmdAddRequest[] = [];
  const server = new PluginServer({
    runDir: dir,
    log: quietLog,
    handlerTimeoutMs,
    onCmdAdd: async (req, signal) => {
      requests.push(req);
      await onCmdAdd(req, signal);
    },
  });
  await server.start();
  cleanups.push(() => server.stop());
  return { dir, requests, server };
}

/** A raw server on the plugin socket that answers each connection with `respond`. */
async function rawAgent(respond: (socket: Socket) => void): Promise<string> {
  const dir = await runDir();
  const server: Server = createServer((socket) => {
    socket.once('data', () => respond(socket));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(pluginEventSocketPath(dir), resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  );
  return dir;
}

function errorOf(run: PluginRun): { cniVersion: string; code: number; msg: string; details?: string } {
  assert.equal(run.exitCode, 1, `expected failure; stdout ${run.stdout} stderr ${run.stderr}`);
  const json = run.json as { cniVersion: string; code: number; msg: string; details?: string };
  assert.equal(typeof json?.code, 'number', `stdout is not a CNI error: ${run.stdout}`);
  assert.equal(typeof json.msg, 'string');
  assert.equal(typeof json.cniVersion, 'string');
  return json;
}

function resultOf(run: PluginRun): Record<string, unknown> {
  assert.equal(run.exitCode, 0, `expected success; stdout ${run.stdout} stderr ${run.stderr}`);
  return run.json as Record<string, unknown>;
}

describe('contract', () => {
  test('the C source uses the names, version list and timeout of plugin-protocol.ts', () => {
    const c = readFileSync(PLUGIN_SOURCE, 'utf8');
    const define = (name: string) => new RegExp(`#define ${name} (.+)`).exec(c)?.[1]?.trim();
    assert.equal(define('SOCKET_NAME'), JSON.stringify(PLUGIN_EVENT_SOCKET_NAME));
    assert.equal(define('STATE_FILE_NAME'), JSON.stringify(ENROLLMENT_STATE_FILE_NAME));
    assert.equal(define('STATE_FILE_HEADER'), JSON.stringify(ENROLLMENT_STATE_HEADER));
    assert.equal(define('DEFAULT_RUN_DIR'), JSON.stringify(DEFAULT_CNI_AGENT_RUN_DIR));
    assert.equal(define('AGENT_TIMEOUT_MS'), String(PLUGIN_AGENT_TIMEOUT_MS));
    assert.equal(/ERR_AGENT_PROTOCOL = (\d+)/.exec(c)?.[1], String(CNI_ERROR_CODE.agentProtocol));
  });

  test('VERSION prints the supported versions', async () => {
    const run = await runPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    assert.deepEqual(resultOf(run), { cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_CNI_VERSIONS] });
    assert.equal(run.stdout.trim().split('\n').length, 1, 'one JSON document, nothing else on stdout');
  });
});

describe('ADD with the agent up', () => {
  for (const cniVersion of ['0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
    test(`${cniVersion}: the agent receives the pod and the plugin prints prevResult unchanged`, async () => {
      const { dir, requests } = await agent();
      const prev = bridgeResult(cniVersion);
      const run = await runPlugin(
        podEnv({ namespace: 'app', name: 'web-0' }),
        pluginConfig({ runDir: dir, cniVersion, prevResult: prev }),
      );
      assert.deepEqual(resultOf(run), prev);
      assert.deepEqual(resultOf(run), encodeResultForVersion(prev, cniVersion));
      assert.equal(requests.length, 1);
      const req = requests[0] as CmdAddRequest;
      assert.equal(req.podName, 'web-0');
      assert.equal(req.podNamespace, 'app');
      assert.equal(req.podUid, '3b2a1c0e-5d4f-4a6b-8c7d-9e0f1a2b3c4d');
      assert.equal(req.netns, '/var/run/netns/icni-test-pod');
      assert.equal(req.ifName, 'eth0');
      assert.match(req.containerId, /^c0ffee/);
      assert.equal(req.infraContainerId, req.containerId);
      assert.equal(req.cniVersion, cniVersion);
      assert.equal(req.config.cniAgentRunDir, dir);
      assert.deepEqual(req.config.excludeNamespaces, ['kube-system', 'istio-system']);
      assert.deepEqual(
        req.ips.map((i) => [i.ip, i.prefixLength, i.family, i.gateway, i.interfaceName, i.inSandbox]),
        [
          ['10.244.1.5', 24, 4, '10.244.1.1', 'eth0', true],
          ['fd00:10:244:1::5', 64, 6, 'fd00:10:244:1::1', 'eth0', true],
        ],
      );
    });
  }

  test('a retryable enrollment failure fails ADD with code 11 and the agent message', async () => {
    const { dir } = await agent(async () => {
      throw new EnrollError('ENROLL_FAILED', 'ztunnel on node1 did not ack pod app/web-0', {
        retryable: true,
      });
    });
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.equal(err.msg, 'ztunnel on node1 did not ack pod app/web-0');
    assert.equal(err.cniVersion, '1.0.0');
    assert.match(err.details ?? '', /ENROLL_FAILED/);
  });

  test('a non-retryable enrollment failure fails ADD with code 100', async () => {
    const { dir } = await agent(async () => {
      throw new Error('pod app/web-0 netns is gone');
    });
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir, cniVersion: '0.4.0' })));
    assert.equal(err.code, CNI_ERROR_CODE.enrollmentFailed);
    assert.equal(err.msg, 'pod app/web-0 netns is gone');
    assert.equal(err.cniVersion, '0.4.0');
  });

  test('an enrollment that outlives the handler timeout is answered 503 (code 11) and aborted', async () => {
    let aborted: unknown;
    const { dir } = await agent(
      (_req, signal) =>
        new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => {
            aborted = signal.reason;
            resolve();
          });
        }),
      300,
    );
    const started = Date.now();
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /did not finish within 300 ms/);
    assert.ok(Date.now() - started < 3000);
    assert.ok(aborted instanceof Error, 'the handler was aborted');
  });

  test('a request the agent rejects gets the field named (code 4 for the environment)', async () => {
    const { dir, requests } = await agent();
    const err = errorOf(
      await runPlugin(podEnv({}, { CNI_CONTAINERID: 'not a container id' }), pluginConfig({ runDir: dir })),
    );
    assert.equal(err.code, CNI_ERROR_CODE.invalidEnvironment);
    assert.match(err.msg, /ContainerID "not a container id" is not a CNI container id/);
    assert.equal(requests.length, 0);
  });

  test('an invalid prevResult address is rejected naming the field (code 7)', async () => {
    const { dir } = await agent();
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.300/24' }] };
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir, prevResult: prev })));
    assert.equal(err.code, CNI_ERROR_CODE.invalidNetworkConfig);
    assert.match(err.msg, /Config\.prevResult\.ips\[0\]\.address "10\.0\.0\.300\/24"/);
  });

  for (const [what, env, extra] of [
    ['ambient_enabled is false', podEnv(), { ambient_enabled: false }],
    ['the namespace is excluded', podEnv({ namespace: 'kube-system', name: 'coredns-0' }), {}],
    ['the container is not a Kubernetes pod', podEnv({}, { CNI_ARGS: 'IgnoreUnknown=1' }), {}],
  ] as const) {
    test(`prevResult passes through without asking the agent when ${what}`, async () => {
      const { dir, requests } = await agent();
      const run = await runPlugin(env, pluginConfig({ runDir: dir, extra }));
      assert.deepEqual(resultOf(run), bridgeResult('1.0.0'));
      assert.equal(requests.length, 0);
    });
  }
});

describe('ADD with the agent down', () => {
  async function downWithState(state?: { namespaces?: string[]; pods?: string[]; exempt?: string[] }) {
    const dir = await runDir();
    if (state !== undefined) {
      const ref = (k: string) => ({ namespace: k.split('/')[0] as string, name: k.split('/')[1] as string });
      await writeEnrollmentState(dir, {
        namespaces: state.namespaces ?? [],
        pods: (state.pods ?? []).map(ref),
        exemptPods: (state.exempt ?? []).map(ref),
      });
    }
    return dir;
  }

  test('a pod in a namespace the state file lists as ambient fails ADD (code 11)', async () => {
    const dir = await downWithState({ namespaces: ['app'] });
    const err = errorOf(await runPlugin(podEnv({ namespace: 'app' }), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /agent unreachable .* pod app\/web-0 may be ambient/);
    assert.match(err.details ?? '', /lists namespace app as ambient/);
  });

  test('a pod the state file lists as ambient fails ADD wherever it is', async () => {
    const dir = await downWithState({ namespaces: ['app'], pods: ['plain/db-0'] });
    const err = errorOf(
      await runPlugin(podEnv({ namespace: 'plain', name: 'db-0' }), pluginConfig({ runDir: dir })),
    );
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.details ?? '', /lists pod plain\/db-0 as ambient/);
  });

  test('a pod that is not ambient starts with prevResult unchanged', async () => {
    const dir = await downWithState({ namespaces: ['app'], pods: ['plain/db-0'] });
    const run = await runPlugin(podEnv({ namespace: 'plain', name: 'web-1' }), pluginConfig({ runDir: dir }));
    assert.deepEqual(resultOf(run), bridgeResult('1.0.0'));
    assert.match(run.stderr, /starts outside the mesh/);
  });

  test('an exempt pod in an ambient namespace starts', async () => {
    const dir = await downWithState({ namespaces: ['app'], exempt: ['app/web-0'] });
    const run = await runPlugin(podEnv({ namespace: 'app', name: 'web-0' }), pluginConfig({ runDir: dir }));
    assert.deepEqual(resultOf(run), bridgeResult('1.0.0'));
  });

  test('without a state file every pod fails ADD: ambient ones must never start unmeshed', async () => {
    const dir = await downWithState();
    const err = errorOf(await runPlugin(podEnv({ namespace: 'plain' }), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /enrollment state is unavailable/);
  });

  test('a state file without the header counts as missing', async () => {
    const dir = await downWithState();
    await writeFile(enrollmentStatePath(dir), 'namespace other\n');
    const err = errorOf(await runPlugin(podEnv({ namespace: 'plain' }), pluginConfig({ runDir: dir })));
    assert.match(err.details ?? '', /does not start with/);
  });

  test('a stale socket (agent killed) counts as down', async () => {
    const dir = await downWithState({ namespaces: ['app'] });
    const path = pluginEventSocketPath(dir);
    const child = spawn(
      process.execPath,
      ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", path],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const ok = await runPlugin(podEnv({ namespace: 'plain' }), pluginConfig({ runDir: dir }));
    assert.deepEqual(resultOf(ok), bridgeResult('1.0.0'));
    assert.match(ok.stderr, /Connection refused/);
    const err = errorOf(await runPlugin(podEnv({ namespace: 'app' }), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
  });
});

describe('ADD with a misbehaving agent', () => {
  test('an agent that answers 200 with something that is not JSON fails ADD (code 101)', async () => {
    const dir = await rawAgent((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'));
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.agentProtocol);
  });

  test('an agent error without a CNI error body fails ADD naming the status', async () => {
    const dir = await rawAgent((s) =>
      s.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy'),
    );
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /answered HTTP 503/);
    assert.equal(err.details, 'busy');
  });

  test('an agent that closes the connection without answering fails ADD (it may be enrolling)', async () => {
    const dir = await rawAgent((s) => s.destroy());
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
  });

  test('an agent that never answers fails ADD after the 5 s deadline', async () => {
    const dir = await rawAgent(() => {});
    const started = Date.now();
    const err = errorOf(await runPlugin(podEnv(), pluginConfig({ runDir: dir })));
    const took = Date.now() - started;
    assert.equal(err.code, CNI_ERROR_CODE.tryAgainLater);
    assert.match(err.msg, /did not answer within 5000 ms/);
    assert.ok(took >= 4900 && took < 8000, `took ${took} ms`);
  });
});

describe('bad input', () => {
  const env = podEnv();
  for (const [what, stdin] of [
    ['garbage', 'not json at all'],
    ['empty stdin', ''],
    ['an array', '[]'],
    ['truncated JSON', '{"cniVersion":"1.0.0","prevResult":{'],
    ['JSON nested 100 deep', `{"a":${'['.repeat(100)}${']'.repeat(100)}}`],
    ['a control character in a string', '{"cniVersion":"1.0.0","name":"a\u0001b"}'],
  ] as const) {
    test(`${what} on stdin fails with code 6`, async () => {
      assert.equal(errorOf(await runPlugin(env, stdin)).code, CNI_ERROR_CODE.decodingFailure);
    });
  }

  test('more than 4 MiB on stdin fails with code 6', async () => {
    const big = JSON.stringify({ cniVersion: '1.0.0', pad: 'x'.repeat(5 << 20) });
    const err = errorOf(await runPlugin(env, big));
    assert.equal(err.code, CNI_ERROR_CODE.decodingFailure);
    assert.match(err.msg, /exceeds/);
  });

  test('missing CNI_COMMAND fails with code 4', async () => {
    const err = errorOf(await runPlugin({ ...env, CNI_COMMAND: undefined }, '{}'));
    assert.equal(err.code, CNI_ERROR_CODE.invalidEnvironment);
    assert.match(err.msg, /CNI_COMMAND/);
  });

  test('an unknown CNI_COMMAND fails with code 4', async () => {
    const err = errorOf(await runPlugin({ ...env, CNI_COMMAND: 'EXPLODE' }, '{}'));
    assert.equal(err.code, CNI_ERROR_CODE.invalidEnvironment);
  });

  for (const name of ['CNI_NETNS', 'CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH']) {
    test(`ADD without ${name} fails with code 4 naming it`, async () => {
      const dir = await runDir();
      const err = errorOf(await runPlugin({ ...env, [name]: undefined }, pluginConfig({ runDir: dir })));
      assert.equal(err.code, CNI_ERROR_CODE.invalidEnvironment);
      assert.match(err.msg, new RegExp(name));
    });
  }

  test('a non-ASCII CNI_NETNS fails with code 4', async () => {
    const dir = await runDir();
    const err = errorOf(
      await runPlugin({ ...env, CNI_NETNS: '/var/run/netns/\u00e9' }, pluginConfig({ runDir: dir })),
    );
    assert.equal(err.code, CNI_ERROR_CODE.invalidEnvironment);
  });

  test('an unsupported or missing cniVersion fails with code 1', async () => {
    const dir = await runDir();
    for (const cniVersion of ['0.2.0', '2.0.0']) {
      const err = errorOf(await runPlugin(env, pluginConfig({ runDir: dir, cniVersion })));
      assert.equal(err.code, CNI_ERROR_CODE.incompatibleVersion);
      assert.equal(err.cniVersion, cniVersion);
    }
    const { cniVersion: _omit, ...noVersion } = pluginConfig({ runDir: dir });
    assert.equal(errorOf(await runPlugin(env, noVersion)).code, CNI_ERROR_CODE.incompatibleVersion);
  });

  test('ADD without prevResult fails with code 7 (istio-cni runs chained)', async () => {
    const dir = await runDir();
    const err = errorOf(await runPlugin(env, pluginConfig({ runDir: dir, prevResult: null })));
    assert.equal(err.code, CNI_ERROR_CODE.invalidNetworkConfig);
    assert.match(err.msg, /chained/);
  });

  test('wrongly typed plugin fields fail with code 7', async () => {
    const dir = await runDir();
    for (const extra of [
      { exclude_namespaces: 'kube-system' },
      { ambient_enabled: 'yes' },
      { cni_agent_run_dir: 'relative' },
    ]) {
      const err = errorOf(await runPlugin(env, pluginConfig({ runDir: dir, extra })));
      assert.equal(err.code, CNI_ERROR_CODE.invalidNetworkConfig, JSON.stringify(extra));
    }
  });
});

describe('DEL, CHECK, GC, STATUS', () => {
  test('DEL succeeds without the agent and prints nothing', async () => {
    const dir = await runDir();
    const run = await runPlugin(
      podEnv({}, { CNI_COMMAND: 'DEL', CNI_NETNS: undefined }),
      pluginConfig({ runDir: dir }),
    );
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(run.stdout, '');
  });

  test('DEL without prevResult (a rolled-back ADD) succeeds', async () => {
    const dir = await runDir();
    const run = await runPlugin(
      podEnv({}, { CNI_COMMAND: 'DEL' }),
      pluginConfig({ runDir: dir, prevResult: null }),
    );
    assert.equal(run.exitCode, 0, run.stderr);
  });

  test('CHECK succeeds without the agent and prints nothing', async () => {
    const dir = await runDir();
    const run = await runPlugin(podEnv({}, { CNI_COMMAND: 'CHECK' }), pluginConfig({ runDir: dir }));
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(run.stdout, '');
  });

  test('CHECK before 0.4.0 fails with code 1', async () => {
    const dir = await runDir();
    const err = errorOf(
      await runPlugin(
        podEnv({}, { CNI_COMMAND: 'CHECK' }),
        pluginConfig({ runDir: dir, cniVersion: '0.3.1' }),
      ),
    );
    assert.equal(err.code, CNI_ERROR_CODE.incompatibleVersion);
  });

  test('GC and STATUS succeed for 1.1.0 and are refused before it', async () => {
    const dir = await runDir();
    for (const command of ['GC', 'STATUS']) {
      const env = { CNI_COMMAND: command, CNI_PATH: '/opt/cni/bin' };
      const ok = await runPlugin(env, {
        cniVersion: '1.1.0',
        name: 'k8s-pod-network',
        type: 'istio-cni',
        cni_agent_run_dir: dir,
      });
      assert.equal(ok.exitCode, 0, ok.stderr);
      assert.equal(ok.stdout, '');
      const err = errorOf(await runPlugin(env, { cniVersion: '1.0.0', name: 'n', type: 'istio-cni' }));
      assert.equal(err.code, CNI_ERROR_CODE.incompatibleVersion);
    }
  });
});

test('the plugin never writes logs to stdout', async () => {
  const { dir } = await agent();
  const run = await runPlugin(podEnv(), pluginConfig({ runDir: dir, extra: { plugin_log_level: 'debug' } }));
  assert.equal(run.exitCode, 0);
  assert.doesNotThrow(() => JSON.parse(run.stdout));
  assert.match(run.stderr, /accepted by the node agent/);
});
