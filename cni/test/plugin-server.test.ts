/**
 * The agent's plugin event server on its own: socket lifecycle and permissions, HTTP framing,
 * limits, and the /log endpoint, driven with node:http over the unix socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { after, test } from 'node:test';
import { Logging } from '@ambient/common/log';
import { PluginServer, PluginServerError } from '../src/agent/plugin-server.ts';
import {
  CNI_ERROR_CODE,
  formatEnrollmentState,
  type PluginLogEntry,
  PluginProtocolError,
  parseEnrollmentState,
  pluginEventSocketPath,
} from '../src/plugin-protocol.ts';
import { bridgeResult, pluginConfig, tempRunDir } from './plugin-fixture.ts';

const quietLog = new Logging({ levels: 'off' }).logger('cni-agent');
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function runDir(): Promise<string> {
  const d = await tempRunDir();
  cleanups.push(d.remove);
  return d.dir;
}

async function started(options: Partial<ConstructorParameters<typeof PluginServer>[0]> = {}) {
  const dir = await runDir();
  const server = new PluginServer({ runDir: dir, log: quietLog, onCmdAdd: async () => {}, ...options });
  await server.start();
  cleanups.push(() => server.stop());
  return { dir, server };
}

function post(
  socketPath: string,
  path: string,
  body: string | Buffer,
  method = 'POST',
): Promise<{ status: number; json: unknown; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, path, method, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          text += d;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: text === '' ? undefined : JSON.parse(text),
            headers: res.headers,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function addBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    Netns: '/var/run/netns/p',
    PodName: 'web-0',
    PodNamespace: 'app',
    PodUID: '',
    InfraContainerID: '',
    ContainerID: 'abc123',
    IfName: 'eth0',
    IPs: [],
    Config: pluginConfig({ runDir: '/var/run/istio-cni' }),
    ...extra,
  });
}

test('the socket is created 0600 and removed on stop', async () => {
  const { server } = await started();
  const st = await lstat(server.socketPath);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  await server.stop();
  await assert.rejects(lstat(server.socketPath), { code: 'ENOENT' });
});

test('a stale socket is replaced; a live one or a non-socket is refused', async () => {
  const dir = await runDir();
  const path = pluginEventSocketPath(dir);
  const child = spawn(
    process.execPath,
    ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", path],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  const second = new PluginServer({ runDir: dir, log: quietLog, onCmdAdd: async () => {} });
  await assert.rejects(
    second.start(),
    (err: unknown) => err instanceof PluginServerError && err.code === 'SOCKET_IN_USE',
  );
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  await second.start();
  cleanups.push(() => second.stop());
  assert.equal((await post(path, '/cmdadd', addBody())).status, 200);

  const other = await runDir();
  await writeFile(pluginEventSocketPath(other), 'precious');
  const third = new PluginServer({ runDir: other, log: quietLog, onCmdAdd: async () => {} });
  await assert.rejects(
    third.start(),
    (err: unknown) => err instanceof PluginServerError && err.code === 'SOCKET_PATH_INVALID',
  );
});

test('the run dir is created when missing', async () => {
  const dir = `${await runDir()}/nested/run`;
  const server = new PluginServer({ runDir: dir, log: quietLog, onCmdAdd: async () => {} });
  await server.start();
  cleanups.push(() => server.stop());
  assert.ok((await lstat(server.socketPath)).isSocket());
});

test('200 carries prevResult re-encoded for the config version', async () => {
  const { server } = await started();
  const prev = bridgeResult('1.0.0');
  const config = pluginConfig({ runDir: '/r', cniVersion: '0.4.0', prevResult: prev });
  const r = await post(server.socketPath, '/cmdadd', addBody({ Config: config }));
  assert.equal(r.status, 200);
  const out = r.json as { cniVersion: string; ips: { version?: string; address: string }[] };
  assert.equal(out.cniVersion, '0.4.0');
  assert.deepEqual(
    out.ips.map((i) => [i.version, i.address]),
    [
      ['4', '10.244.1.5/24'],
      ['6', 'fd00:10:244:1::5/64'],
    ],
  );
});

test('bad requests are answered 400 with a CNI error naming the field', async () => {
  const { server } = await started();
  const cases: [string, string, number, RegExp][] = [
    ['not json', '{', CNI_ERROR_CODE.decodingFailure, /not valid JSON/],
    ['array', '[]', CNI_ERROR_CODE.decodingFailure, /not a JSON object/],
    ['no netns', addBody({ Netns: '' }), CNI_ERROR_CODE.invalidEnvironment, /field Netns/],
    ['relative netns', addBody({ Netns: 'netns/p' }), CNI_ERROR_CODE.invalidEnvironment, /Netns "netns\/p"/],
    ['bad pod name', addBody({ PodName: 'Web_0' }), CNI_ERROR_CODE.invalidEnvironment, /PodName "Web_0"/],
    [
      'bad namespace',
      addBody({ PodNamespace: 'a'.repeat(64) }),
      CNI_ERROR_CODE.invalidEnvironment,
      /PodNamespace/,
    ],
    ['bad ifname', addBody({ IfName: 'eth0/x' }), CNI_ERROR_CODE.invalidEnvironment, /IfName/],
    ['no config', addBody({ Config: 'x' }), CNI_ERROR_CODE.invalidNetworkConfig, /field Config /],
    [
      'old version',
      addBody({ Config: { ...pluginConfig({ runDir: '/r' }), cniVersion: '0.2.0' } }),
      CNI_ERROR_CODE.incompatibleVersion,
      /Config\.cniVersion "0\.2\.0"/,
    ],
    [
      'no prevResult',
      addBody({ Config: pluginConfig({ runDir: '/r', prevResult: null }) }),
      CNI_ERROR_CODE.invalidNetworkConfig,
      /Config\.prevResult is missing/,
    ],
    [
      'interface index out of range',
      addBody({
        Config: pluginConfig({
          runDir: '/r',
          prevResult: { ips: [{ address: '10.0.0.1/8', interface: 9 }] },
        }),
      }),
      CNI_ERROR_CODE.invalidNetworkConfig,
      /ips\[0\]\.interface 9/,
    ],
    [
      'bad selector',
      addBody({
        Config: pluginConfig({
          runDir: '/r',
          extra: {
            enablement_selectors: [{ podSelector: { matchExpressions: [{ key: 'k', operator: 'Near' }] } }],
          },
        }),
      }),
      CNI_ERROR_CODE.invalidNetworkConfig,
      /enablement_selectors\[0\]\.podSelector\.matchExpressions\[0\]\.operator "Near"/,
    ],
  ];
  for (const [what, body, code, msg] of cases) {
    const r = await post(server.socketPath, '/cmdadd', body);
    assert.equal(r.status, 400, what);
    const err = r.json as { code: number; msg: string; cniVersion: string };
    assert.equal(err.code, code, what);
    assert.match(err.msg, msg, what);
    assert.equal(typeof err.cniVersion, 'string');
  }
});

test('oversized bodies get 413, other paths 404, other methods 405', async () => {
  const { server } = await started({ maxBodyBytes: 1024 });
  const big = await post(server.socketPath, '/cmdadd', addBody({ pad: 'x'.repeat(4096) }));
  assert.equal(big.status, 413);
  assert.equal((big.json as { code: number }).code, CNI_ERROR_CODE.decodingFailure);
  assert.equal((await post(server.socketPath, '/cmdel', '{}')).status, 404);
  const get = await post(server.socketPath, '/cmdadd', '', 'GET');
  assert.equal(get.status, 405);
  assert.equal(get.headers.allow, 'POST');
  // The server still serves after all that.
  assert.equal((await post(server.socketPath, '/cmdadd', addBody())).status, 200);
});

test('/log delivers the plugin lines (one object, or upstream newline-separated entries)', async () => {
  const entries: PluginLogEntry[] = [];
  const { server } = await started({ onPluginLog: (e) => entries.push(e) });
  const r = await post(
    server.socketPath,
    '/log',
    '{"level":"warn","time":"2024-01-01T00:00:00Z","msg":"agent slow","pod":"app/web-0"}\n{"msg":"second"}\nplain text\n',
  );
  assert.equal(r.status, 200);
  assert.deepEqual(entries, [
    { level: 'warn', msg: 'agent slow', fields: { pod: 'app/web-0' } },
    { level: 'info', msg: 'second', fields: {} },
    { level: 'info', msg: 'plain text', fields: {} },
  ]);
});

test('stop aborts a pending enrollment', async () => {
  let aborted = false;
  let entered: () => void = () => {};
  const inHandler = new Promise<void>((resolve) => {
    entered = resolve;
  });
  const { server } = await started({
    onCmdAdd: (_req, signal) =>
      new Promise<void>((resolve) => {
        entered();
        signal.addEventListener('abort', () => {
          aborted = true;
          resolve();
        });
      }),
  });
  const pending = post(server.socketPath, '/cmdadd', addBody()).catch((err: unknown) => err);
  await inHandler;
  await server.stop();
  assert.ok(aborted);
  await pending;
});

test('enrollment state round-trips and rejects names the plugin could not match', async () => {
  const state = {
    namespaces: ['b-ns', 'a-ns', 'a-ns'],
    pods: [{ namespace: 'plain', name: 'db-0' }],
    exemptPods: [{ namespace: 'a-ns', name: 'job.x' }],
  };
  const text = formatEnrollmentState(state);
  assert.match(text, /^istio-cni-enrollment-state 1\n/);
  assert.deepEqual(parseEnrollmentState(text), {
    namespaces: ['a-ns', 'b-ns'],
    pods: [{ namespace: 'plain', name: 'db-0' }],
    exemptPods: [{ namespace: 'a-ns', name: 'job.x' }],
  });
  assert.throws(
    () => formatEnrollmentState({ ...state, namespaces: ['Bad NS'] }),
    (err: unknown) => err instanceof PluginProtocolError && err.code === 'STATE_INVALID',
  );
  assert.throws(() => parseEnrollmentState('namespace x\n'), /not "istio-cni-enrollment-state 1"/);
});
