/**
 * The installer against real directories: chaining, conversion, owned config, idempotence,
 * malformed files left alone, re-chaining after the primary CNI rewrites its file, uninstall, and
 * atomicity under a concurrent writer.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Logging } from '@ambient/common/log';
import { buildPlugin, PLUGIN_BINARY } from '../scripts/build-plugin.ts';
import { InstallError } from '../src/agent/install/errors.ts';
import {
  CniInstaller,
  type CniInstallerOptions,
  type InstallStatus,
  ISTIO_OWNED_CONFIG_FILE_NAME,
  STANDALONE_CONFIG_FILE_NAME,
} from '../src/agent/install/installer.ts';
import { tempRunDir } from './plugin-fixture.ts';

const quietLog = new Logging({ levels: 'off' }).logger('cni-install');
const cleanups: (() => Promise<void>)[] = [];
before(() => {
  buildPlugin({ quiet: true });
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

type Json = Record<string, unknown>;

const BRIDGE_LIST = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  plugins: [
    { type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]] } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

async function dirs(): Promise<{ binDir: string; confDir: string }> {
  const base = await tempRunDir();
  cleanups.push(base.remove);
  const binDir = join(base.dir, 'bin');
  const confDir = join(base.dir, 'net.d');
  await mkdir(binDir);
  await mkdir(confDir);
  return { binDir, confDir };
}

function installer(
  d: { binDir: string; confDir: string },
  options: Partial<CniInstallerOptions> = {},
): CniInstaller {
  const inst = new CniInstaller({
    cniBinDir: d.binDir,
    cniConfDir: d.confDir,
    pluginBinary: PLUGIN_BINARY,
    pluginConfig: {
      excludeNamespaces: ['kube-system', 'istio-system'],
      cniAgentRunDir: '/var/run/istio-cni',
    },
    debounceMs: 20,
    log: quietLog,
    ...options,
  });
  cleanups.push(() => inst.stop());
  return inst;
}

async function readJson(path: string): Promise<Json> {
  return JSON.parse(await readFile(path, 'utf8')) as Json;
}

function types(list: Json): string[] {
  return (list.plugins as Json[]).map((p) => p.type as string);
}

async function waitFor(
  what: string,
  cond: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function writeAtomically(path: string, text: string): Promise<void> {
  await writeFile(`${path}.writing`, text);
  await rename(`${path}.writing`, path);
}

test('chains into the first conflist, installs the binary, leaves other files alone', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  const other = join(d.confDir, '99-other.conflist');
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  const otherText = JSON.stringify({ ...BRIDGE_LIST, name: 'other' });
  await writeFile(other, otherText);
  const status = await installer(d).install();
  assert.equal(status.ready, true, status.problem?.message);
  assert.equal(status.configFile, primary);
  const list = await readJson(primary);
  assert.deepEqual(types(list), ['bridge', 'portmap', 'istio-cni']);
  assert.deepEqual((list.plugins as Json[])[2], {
    name: 'istio-cni',
    type: 'istio-cni',
    plugin_log_level: 'info',
    cni_agent_run_dir: '/var/run/istio-cni',
    ambient_enabled: true,
    enablement_selectors: [
      { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
      {
        podSelector: {
          matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }],
        },
        namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
      },
    ],
    exclude_namespaces: ['kube-system', 'istio-system'],
    pod_namespace: 'istio-system',
    native_nftables: false,
    enable_ambient_detection_retry: false,
  });
  assert.equal(list.name, 'k8s-pod-network');
  assert.equal(list.cniVersion, '1.0.0');
  assert.equal(await readFile(other, 'utf8'), otherText);
  const bin = join(d.binDir, 'istio-cni');
  assert.ok((await readFile(bin)).equals(await readFile(PLUGIN_BINARY)));
  assert.equal((await stat(bin)).mode & 0o777, 0o755);
  assert.deepEqual(
    (await readdir(d.confDir)).sort(),
    ['10-bridge.conflist', '99-other.conflist'],
    'no temp files left behind',
  );
});

test('a second pass changes nothing (same bytes, same inode, no write)', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  const inst = installer(d);
  await inst.install();
  const before = {
    text: await readFile(primary, 'utf8'),
    st: await stat(primary),
    bin: await stat(join(d.binDir, 'istio-cni')),
  };
  await new Promise((r) => setTimeout(r, 20));
  const again = await inst.install();
  assert.equal(again.ready, true);
  const st = await stat(primary);
  assert.equal(await readFile(primary, 'utf8'), before.text);
  assert.equal(st.ino, before.st.ino);
  assert.equal(st.mtimeMs, before.st.mtimeMs);
  assert.equal((await stat(join(d.binDir, 'istio-cni'))).ino, before.bin.ino);
  // A fresh installer (an agent restart) does not rewrite either.
  await installer(d).install();
  assert.equal((await stat(primary)).ino, before.st.ino);
});

test('an existing istio-cni entry is updated in place; duplicates are dropped', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  const plugins = BRIDGE_LIST.plugins;
  await writeFile(
    primary,
    JSON.stringify({
      ...BRIDGE_LIST,
      plugins: [
        plugins[0],
        { type: 'istio-cni', plugin_log_level: 'debug', stale: true },
        plugins[1],
        { type: 'istio-cni' },
      ],
    }),
  );
  await installer(d).install();
  const list = await readJson(primary);
  assert.deepEqual(types(list), ['bridge', 'istio-cni', 'portmap']);
  const entry = (list.plugins as Json[])[1] as Json;
  assert.equal(entry.plugin_log_level, 'info');
  assert.equal(entry.stale, undefined);
});

test('a .conf is converted to a .conflist with the plugin chained', async () => {
  const d = await dirs();
  const conf = join(d.confDir, '10-bridge.conf');
  await writeFile(
    conf,
    JSON.stringify({ cniVersion: '0.4.0', name: 'bridge-net', type: 'bridge', bridge: 'cni0' }),
  );
  const status = await installer(d).install();
  assert.equal(status.ready, true, status.problem?.message);
  assert.equal(status.configFile, `${conf}list`);
  assert.deepEqual(await readdir(d.confDir), ['10-bridge.conflist']);
  const converted = await readJson(`${conf}list`);
  assert.equal(converted.cniVersion, '0.4.0');
  assert.equal(converted.name, 'bridge-net');
  assert.deepEqual((converted.plugins as Json[])[0], { name: 'bridge-net', type: 'bridge', bridge: 'cni0' });
  assert.deepEqual(types(await readJson(`${conf}list`)), ['bridge', 'istio-cni']);
  // The primary CNI writes its .conf again: the list is brought up to date from it.
  await writeFile(
    conf,
    JSON.stringify({ cniVersion: '0.4.0', name: 'bridge-net', type: 'bridge', bridge: 'cni1' }),
  );
  await installer(d).install();
  assert.deepEqual(await readdir(d.confDir), ['10-bridge.conflist']);
  assert.equal(((await readJson(`${conf}list`)).plugins as Json[])[0]?.bridge, 'cni1');
});

test('istioOwnedCniConfig writes 02-istio-cni.conflist and leaves the primary untouched', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  const text = JSON.stringify(BRIDGE_LIST);
  await writeFile(primary, text);
  const inst = installer(d, { istioOwnedCniConfig: true });
  const status = await inst.install();
  assert.equal(status.ready, true, status.problem?.message);
  const owned = join(d.confDir, ISTIO_OWNED_CONFIG_FILE_NAME);
  assert.equal(status.configFile, owned);
  assert.equal(await readFile(primary, 'utf8'), text);
  const list = await readJson(owned);
  assert.deepEqual(types(list), ['bridge', 'portmap', 'istio-cni']);
  assert.equal(list.name, BRIDGE_LIST.name);
  // Idempotent in this mode too.
  const ino = (await stat(owned)).ino;
  await inst.install();
  assert.equal((await stat(owned)).ino, ino);
  // A config sorting before ours means runtimes would not load ours.
  await writeFile(join(d.confDir, '01-early.conflist'), JSON.stringify({ ...BRIDGE_LIST, name: 'early' }));
  const shadowed = await inst.install();
  assert.equal(shadowed.ready, false);
  assert.equal(shadowed.problem?.code, 'CONFIG_SHADOWED');
  // Uninstall removes the owned file and the binary, and still leaves the primary alone.
  await inst.uninstall();
  assert.deepEqual((await readdir(d.confDir)).sort(), ['01-early.conflist', '10-bridge.conflist']);
  assert.equal(await readFile(primary, 'utf8'), text);
  assert.deepEqual(await readdir(d.binDir), []);
});

test('chained: false writes a standalone config', async () => {
  const d = await dirs();
  const status = await installer(d, { chained: false }).install();
  assert.equal(status.ready, true, status.problem?.message);
  const conf = await readJson(join(d.confDir, STANDALONE_CONFIG_FILE_NAME));
  assert.equal(conf.type, 'istio-cni');
  assert.equal(conf.cniVersion, '0.3.1');
});

for (const [what, file, text] of [
  ['an empty object', '10-bad.conflist', '{}'],
  ['an array', '10-bad.conflist', '[]'],
  ['invalid JSON', '10-bad.conflist', '{"name": "x", "plugins": ['],
  ['plugins that is not an array', '10-bad.conflist', '{"name":"x","plugins":{"type":"bridge"}}'],
  ['an empty plugin list', '10-bad.conflist', '{"name":"x","plugins":[]}'],
  ['a plugin without type', '10-bad.conflist', '{"name":"x","plugins":[{"bridge":"cni0"}]}'],
  ['a list saved as .conf', '10-bad.conf', JSON.stringify(BRIDGE_LIST)],
  ['a .conf with no type', '10-bad.conf', '{"name":"x"}'],
] as const) {
  test(`a primary config that is ${what} is left byte-for-byte and reported`, async () => {
    const d = await dirs();
    const path = join(d.confDir, file);
    await writeFile(path, text);
    const later = join(d.confDir, '20-ok.conflist');
    const laterText = JSON.stringify(BRIDGE_LIST);
    await writeFile(later, laterText);
    const statuses: InstallStatus[] = [];
    const status = await installer(d, { onStatusChange: (s) => statuses.push(s) }).install();
    assert.equal(status.ready, false);
    assert.ok(status.problem instanceof InstallError);
    assert.equal(status.problem.code, 'CONFIG_INVALID');
    assert.match(status.problem.message, new RegExp(`${file.replace('.', '\\.')} .*left untouched`));
    assert.deepEqual(
      status.invalidFiles.map((f) => f.file),
      [path],
    );
    assert.equal(await readFile(path, 'utf8'), text);
    assert.equal(
      await readFile(later, 'utf8'),
      laterText,
      'a later file is not chained instead: runtimes load the first',
    );
    assert.deepEqual((await readdir(d.confDir)).sort(), [file, '20-ok.conflist']);
    assert.equal(statuses.at(-1)?.ready, false);
  });
}

test('numbers in the primary config are kept exactly as written', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-x.conflist');
  await writeFile(
    primary,
    '{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge","mtu":12345678901234567890,"ratio":1.50}]}',
  );
  await installer(d).install();
  const text = await readFile(primary, 'utf8');
  assert.match(text, /"mtu": 12345678901234567890,/);
  assert.match(text, /"ratio": 1\.50\n/);
});

test('waits for the primary CNI, then re-chains whenever it rewrites its file', async () => {
  const d = await dirs();
  const statuses: InstallStatus[] = [];
  const inst = installer(d, { onStatusChange: (s) => statuses.push(s) });
  const first = await inst.start();
  assert.equal(first.ready, false);
  assert.equal(first.problem?.code, 'NO_PRIMARY_CONFIG');

  const primary = join(d.confDir, '10-flannel.conflist');
  await writeAtomically(primary, JSON.stringify(BRIDGE_LIST));
  await waitFor('first chaining', async () => types(await readJson(primary)).includes('istio-cni'));
  await waitFor('ready', () => inst.status.ready);

  // The primary CNI rewrites its file without istio-cni (atomically, then in place), adding a plugin.
  const rewritten = { ...BRIDGE_LIST, plugins: [...BRIDGE_LIST.plugins, { type: 'bandwidth' }] };
  await writeAtomically(primary, JSON.stringify(rewritten));
  await waitFor('re-chaining after an atomic rewrite', async () => {
    const t = types(await readJson(primary).catch(() => ({ plugins: [] })));
    return t.join() === 'bridge,portmap,bandwidth,istio-cni';
  });
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  await waitFor('re-chaining after an in-place rewrite', async () => {
    const t = types(await readJson(primary).catch(() => ({ plugins: [] })));
    return t.join() === 'bridge,portmap,istio-cni';
  });

  // The binary is put back when something deletes it.
  await unlink(join(d.binDir, 'istio-cni'));
  await waitFor('binary reinstalled', async () => (await readdir(d.binDir)).includes('istio-cni'));
  assert.ok(statuses.some((s) => s.ready));
  await inst.stop();
});

test('the periodic re-check repairs what no file event reported', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  // File events would re-check only after a minute here: only the timer can repair in time.
  const inst = installer(d, { resyncIntervalMs: 100, debounceMs: 60_000 });
  assert.equal((await inst.start()).ready, true);
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  assert.ok(!types(await readJson(primary)).includes('istio-cni'));
  await waitFor(
    'periodic re-chaining',
    async () => types(await readJson(primary)).includes('istio-cni'),
    3000,
  );
});

test('uninstall removes the entry and the binary, restoring the original config', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  const other = join(d.confDir, '20-other.conflist');
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  await writeFile(
    other,
    JSON.stringify({
      ...BRIDGE_LIST,
      name: 'other',
      plugins: [...BRIDGE_LIST.plugins, { type: 'istio-cni' }],
    }),
  );
  await writeFile(join(d.confDir, '30-bad.conflist'), '[]');
  const inst = installer(d);
  await inst.start();
  const report = await inst.uninstall();
  assert.deepEqual(await readJson(primary), BRIDGE_LIST);
  assert.deepEqual(types(await readJson(other)), ['bridge', 'portmap']);
  assert.deepEqual([...report.unchained].sort(), [primary, other]);
  assert.deepEqual(report.removed, [join(d.binDir, 'istio-cni')]);
  assert.deepEqual(await readdir(d.binDir), []);
  assert.equal(await readFile(join(d.confDir, '30-bad.conflist'), 'utf8'), '[]');
  assert.equal(inst.status.ready, false);
  // Uninstalling again is harmless.
  const second = await installer(d).uninstall();
  assert.deepEqual(second, { unchained: [], removed: [] });
});

test('a concurrent writer never sees a partial file, and its last write is never lost', async () => {
  const d = await dirs();
  const primary = join(d.confDir, '10-bridge.conflist');
  await writeFile(primary, JSON.stringify(BRIDGE_LIST));
  const inst = installer(d, { debounceMs: 1 });
  await inst.start();

  let stop = false;
  let reads = 0;
  const reader = (async () => {
    while (!stop) {
      const text = await readFile(primary, 'utf8').catch(() => undefined);
      if (text !== undefined) {
        const list = JSON.parse(text) as Json; // throws on a partial file
        assert.ok(Array.isArray(list.plugins) && (list.plugins as unknown[]).length >= 2);
        reads++;
      }
      await new Promise((r) => setImmediate(r));
    }
  })();
  const writes = 150;
  for (let i = 0; i < writes; i++) {
    const list = { ...BRIDGE_LIST, plugins: [...BRIDGE_LIST.plugins, { type: 'tuning', generation: i }] };
    await writeAtomically(primary, JSON.stringify(list));
    if (i % 10 === 0) await inst.install();
    await new Promise((r) => setTimeout(r, i % 3));
  }
  await waitFor('the last write chained', async () => {
    const list = await readJson(primary);
    const plugins = list.plugins as Json[];
    return types(list).join() === 'bridge,portmap,tuning,istio-cni' && plugins[2]?.generation === writes - 1;
  });
  stop = true;
  await reader;
  assert.ok(reads > 10, `reader made ${reads} reads`);
  await waitFor('no temp files left', async () => (await readdir(d.confDir)).join() === '10-bridge.conflist');
});

test('options are checked', () => {
  assert.throws(
    () => new CniInstaller({ cniBinDir: 'bin', cniConfDir: '/etc/cni/net.d', pluginBinary: PLUGIN_BINARY }),
    (err: unknown) =>
      err instanceof InstallError && err.code === 'OPTIONS_INVALID' && /cniBinDir "bin"/.test(err.message),
  );
  assert.throws(
    () =>
      new CniInstaller({
        cniBinDir: '/opt/cni/bin',
        cniConfDir: '/etc/cni/net.d',
        pluginBinary: PLUGIN_BINARY,
        istioOwnedCniConfigFileName: '../02-x.conflist',
      }),
    (err: unknown) => err instanceof InstallError && err.code === 'OPTIONS_INVALID',
  );
});

test('a missing plugin binary makes the installer not ready', async () => {
  const d = await dirs();
  await writeFile(join(d.confDir, '10-bridge.conflist'), JSON.stringify(BRIDGE_LIST));
  const status = await installer(d, { pluginBinary: join(d.binDir, 'nope') }).install();
  assert.equal(status.ready, false);
  assert.equal(status.problem?.code, 'BINARY_INSTALL_FAILED');
  assert.match(status.problem?.message ?? '', /nope/);
});
