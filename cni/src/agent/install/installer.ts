/**
 * The istio-cni installer (spec §6.1, chart values `cniBinDir`, `cniConfDir`, `chained`,
 * `istioOwnedCNIConfig`, `excludeNamespaces`): puts the plugin binary into the CNI bin dir and the
 * plugin into the network config runtimes load, keeps both in place while the primary CNI
 * rewrites its files, and takes them out again on uninstall.
 *
 * Modes:
 * - chained (default): the istio-cni entry is chained into the primary config, the first `.conf` /
 *   `.conflist` in byte order (the one runtimes load); a `.conf` becomes a `.conflist`;
 * - `istioOwnedCniConfig`: the primary is left alone and a copy with istio-cni chained in is
 *   written to `02-istio-cni.conflist`, which sorts first so runtimes load it even after the
 *   primary CNI rewrites its own file (node reboot races, checklist 36);
 * - not chained: a standalone `YYY-istio-cni.conf` (for multus-style setups).
 *
 * No kubeconfig is written: the plugin never talks to the API server (the node agent decides).
 */
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { readFile, stat, unlink } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { errorMessage } from '@ambient/common/errors';
import { type Logger, logger } from '@ambient/common/log';
import {
  DEFAULT_PLUGIN_CONFIG,
  ISTIO_CNI_PLUGIN_TYPE,
  type IstioCniPluginConfig,
  pluginConfigFields,
} from '../../plugin-protocol.ts';
import { writeFileAtomic } from './atomic-file.ts';
import { installBinary, removeBinary } from './binary.ts';
import {
  chainIstioCni,
  type JsonObject,
  listConfFiles,
  parseConfFile,
  parseJsonPreservingNumbers,
  sameConf,
  serializeConf,
  unchainIstioCni,
} from './cni-config.ts';
import { InstallError } from './errors.ts';

/** Upstream's name for the owned config; `02` sorts before the usual `05-`/`10-` primaries. */
export const ISTIO_OWNED_CONFIG_FILE_NAME = '02-istio-cni.conflist';
/** Upstream's standalone config name when not chained (sorts after every numbered config). */
export const STANDALONE_CONFIG_FILE_NAME = 'YYY-istio-cni.conf';

export interface CniInstallerOptions {
  /** The host's CNI bin dir as mounted in the agent (chart `cniBinDir`, /opt/cni/bin). */
  readonly cniBinDir: string;
  /** The host's CNI conf dir as mounted in the agent (chart `cniConfDir`, /etc/cni/net.d). */
  readonly cniConfDir: string;
  /** The plugin binary to install (cni/build/istio-cni in the image). */
  readonly pluginBinary: string;
  /** Chart `chained`. Default true. */
  readonly chained?: boolean;
  /** Chart `istioOwnedCNIConfig`. Default false. */
  readonly istioOwnedCniConfig?: boolean;
  /** Default `02-istio-cni.conflist`. */
  readonly istioOwnedCniConfigFileName?: string;
  /** The primary config's file name (`CNI_CONF_NAME`); default: the first one runtimes would load. */
  readonly cniConfName?: string;
  /** The plugin's conflist fields (spec §6.1); unset ones take the defaults. */
  readonly pluginConfig?: Partial<IstioCniPluginConfig>;
  /** Full re-check period besides file events (events can be missed on some filesystems). Default 15 s. */
  readonly resyncIntervalMs?: number;
  /** Quiet period after a file event before re-checking, so a burst of writes costs one pass. Default 100 ms. */
  readonly debounceMs?: number;
  /**
   * Least time between the starts of event-triggered passes. Bounds the write rate when another
   * writer keeps undoing istio-cni's entry (two installers with different settings). Default 250 ms.
   */
  readonly minPassIntervalMs?: number;
  /** Called whenever the status changes (readiness for the agent's /readyz). */
  readonly onStatusChange?: (status: InstallStatus) => void;
  readonly log?: Logger;
}

/** The outcome of the last installation pass. */
export interface InstallStatus {
  /** Binary in place and istio-cni chained into the config runtimes load. */
  readonly ready: boolean;
  /** The config file holding the istio-cni entry. */
  readonly configFile: string | undefined;
  /** Why it is not ready. */
  readonly problem: InstallError | undefined;
  /** Config files that were malformed and left untouched, with what is wrong with each. */
  readonly invalidFiles: readonly { readonly file: string; readonly problem: string }[];
}

/** What uninstall changed. */
export interface UninstallReport {
  /** Config files the istio-cni entry was removed from. */
  readonly unchained: readonly string[];
  /** Files removed (own config, binary, lists left empty). */
  readonly removed: readonly string[];
}

const NOT_STARTED: InstallStatus = {
  ready: false,
  configFile: undefined,
  problem: undefined,
  invalidFiles: [],
};

/** A compare-and-swap write lost to a concurrent writer this many times in a row: give up for now. */
const MAX_CONTENDED_ATTEMPTS = 5;

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}

async function readTextOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

function readTextSyncOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

class ContendedWrite extends Error {}

/**
 * Installs and maintains the plugin. `start()` runs a first pass and then watches; `install()` is
 * one pass; `uninstall()` stops watching and removes everything the installer put in place.
 */
export class CniInstaller {
  readonly #opts: Required<
    Omit<CniInstallerOptions, 'cniConfName' | 'onStatusChange' | 'log' | 'pluginConfig'>
  > & {
    cniConfName: string | undefined;
  };
  readonly #entry: JsonObject;
  readonly #onStatusChange: ((status: InstallStatus) => void) | undefined;
  readonly #log: Logger;
  #status: InstallStatus = NOT_STARTED;
  #running: Promise<InstallStatus> | undefined;
  #rerun = false;
  #watchers: FSWatcher[] = [];
  #debounce: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  #started = false;
  #lastPassStart = Number.NEGATIVE_INFINITY;

  constructor(options: CniInstallerOptions) {
    for (const [name, path] of [
      ['cniBinDir', options.cniBinDir],
      ['cniConfDir', options.cniConfDir],
      ['pluginBinary', options.pluginBinary],
    ] as const) {
      if (!isAbsolute(path)) {
        throw new InstallError(
          'OPTIONS_INVALID',
          `installer option ${name} ${JSON.stringify(path)} is not an absolute path`,
        );
      }
    }
    for (const [name, file] of [
      ['istioOwnedCniConfigFileName', options.istioOwnedCniConfigFileName],
      ['cniConfName', options.cniConfName],
    ] as const) {
      if (file !== undefined && (basename(file) !== file || !/\.(conf|conflist)$/.test(file))) {
        throw new InstallError(
          'OPTIONS_INVALID',
          `installer option ${name} ${JSON.stringify(file)} is not a .conf or .conflist file name`,
        );
      }
    }
    this.#opts = {
      cniBinDir: options.cniBinDir,
      cniConfDir: options.cniConfDir,
      pluginBinary: options.pluginBinary,
      chained: options.chained ?? true,
      istioOwnedCniConfig: options.istioOwnedCniConfig ?? false,
      istioOwnedCniConfigFileName: options.istioOwnedCniConfigFileName ?? ISTIO_OWNED_CONFIG_FILE_NAME,
      cniConfName: options.cniConfName,
      resyncIntervalMs: options.resyncIntervalMs ?? 15_000,
      debounceMs: options.debounceMs ?? 100,
      minPassIntervalMs: options.minPassIntervalMs ?? 250,
    };
    const config: IstioCniPluginConfig = { ...DEFAULT_PLUGIN_CONFIG, ...options.pluginConfig };
    this.#entry = { name: ISTIO_CNI_PLUGIN_TYPE, type: ISTIO_CNI_PLUGIN_TYPE, ...pluginConfigFields(config) };
    this.#onStatusChange = options.onStatusChange;
    this.#log = options.log ?? logger('cni-install');
  }

  /** The last pass's outcome. */
  get status(): InstallStatus {
    return this.#status;
  }

  /** The istio-cni conflist entry this installer writes. */
  get pluginEntry(): Readonly<JsonObject> {
    return this.#entry;
  }

  /**
   * Runs the first installation pass, then re-runs it on every change in the conf and bin dirs and
   * every `resyncIntervalMs`. Resolves with the first pass's status (not ready is not an error: the
   * watch keeps trying, e.g. until the primary CNI writes its config).
   */
  async start(): Promise<InstallStatus> {
    if (!this.#started) {
      this.#started = true;
      this.#watch();
      this.#resync = setInterval(() => void this.install(), this.#opts.resyncIntervalMs);
      this.#resync.unref();
    }
    return this.install();
  }

  /** Stops watching; leaves everything installed (pods keep being enrolled by a restarted agent). */
  async stop(): Promise<void> {
    this.#started = false;
    clearInterval(this.#resync);
    clearTimeout(this.#debounce);
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    await this.#running?.catch(() => {});
  }

  /**
   * One pass: binary, then config. Passes never overlap; a request during a pass runs one more
   * pass after it (so a change made during a pass is never missed).
   */
  install(): Promise<InstallStatus> {
    if (this.#running !== undefined) {
      this.#rerun = true;
      return this.#running;
    }
    if (this.#started && this.#watchers.length < 2) this.#rewatch();
    this.#running = (async () => {
      let status: InstallStatus;
      do {
        this.#rerun = false;
        this.#lastPassStart = performance.now();
        status = await this.#pass();
        this.#setStatus(status);
      } while (this.#rerun);
      return status;
    })().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /**
   * Removes istio-cni: its entry from every valid config in the conf dir (malformed files are left
   * alone), its own config file, and the binary. Config goes first, so no runtime is left with a
   * config naming a binary that is gone.
   */
  async uninstall(): Promise<UninstallReport> {
    await this.stop();
    const { cniConfDir: dir } = this.#opts;
    const unchained: string[] = [];
    const removed: string[] = [];
    const own = [this.#opts.istioOwnedCniConfigFileName, STANDALONE_CONFIG_FILE_NAME];
    for (const name of await listConfFiles(dir)) {
      const path = join(dir, name);
      if (own.includes(name)) {
        await unlink(path).catch((err: unknown) => {
          if (!isErrno(err, 'ENOENT')) throw err;
        });
        removed.push(path);
        continue;
      }
      await this.#casRetry(async () => {
        const text = await readTextOrUndefined(path);
        if (text === undefined) return;
        const parsed = parseConfFile(name, text);
        if (!parsed.ok || parsed.kind !== 'conflist') return;
        const without = unchainIstioCni(parsed.list);
        if (without === undefined) return;
        if ((without.plugins as unknown[]).length === 0) {
          // A list of nothing but istio-cni would make every pod fail to load the network.
          await this.#casUnlink(path, text);
          removed.push(path);
        } else {
          await this.#casWrite(path, serializeConf(without), text);
          unchained.push(path);
        }
      });
    }
    if (await removeBinary(this.#opts.cniBinDir))
      removed.push(join(this.#opts.cniBinDir, ISTIO_CNI_PLUGIN_TYPE));
    this.#log.info({ unchained, removed }, 'istio-cni uninstalled');
    this.#setStatus(NOT_STARTED);
    return { unchained, removed };
  }

  /** (Re)creates the directory watches; a dir that did not exist before may exist now. */
  #rewatch(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    this.#watch();
  }

  #watch(): void {
    for (const dir of [this.#opts.cniConfDir, this.#opts.cniBinDir]) {
      try {
        const w = watch(dir, { persistent: false }, () => this.#scheduleSoon());
        w.on('error', (err) => {
          this.#log.warn({ err, dir }, 'watch failed; relying on the periodic re-check');
          w.close();
          this.#watchers = this.#watchers.filter((x) => x !== w);
        });
        this.#watchers.push(w);
      } catch (err) {
        // The dir may not exist yet (a CNI that has not started); the periodic pass covers it.
        this.#log.warn(
          { err: errorMessage(err), dir },
          'cannot watch directory; relying on the periodic re-check',
        );
      }
    }
  }

  #scheduleSoon(): void {
    if (!this.#started) return;
    clearTimeout(this.#debounce);
    const throttle = this.#lastPassStart + this.#opts.minPassIntervalMs - performance.now();
    this.#debounce = setTimeout(() => void this.install(), Math.max(this.#opts.debounceMs, throttle));
    this.#debounce.unref();
  }

  #setStatus(status: InstallStatus): void {
    const prev = this.#status;
    this.#status = status;
    const changed =
      prev.ready !== status.ready ||
      prev.configFile !== status.configFile ||
      prev.problem?.message !== status.problem?.message ||
      JSON.stringify(prev.invalidFiles) !== JSON.stringify(status.invalidFiles);
    if (!changed) return;
    if (status.ready) this.#log.info({ configFile: status.configFile }, 'istio-cni installed');
    else if (status.problem !== undefined) {
      this.#log.warn({ code: status.problem.code, err: status.problem.message }, 'istio-cni not ready');
    }
    this.#onStatusChange?.(status);
  }

  async #pass(): Promise<InstallStatus> {
    try {
      if (await installBinary(this.#opts.pluginBinary, this.#opts.cniBinDir)) {
        this.#log.info({ binDir: this.#opts.cniBinDir }, 'installed istio-cni binary');
      }
    } catch (err) {
      return {
        ...NOT_STARTED,
        problem: new InstallError(
          'BINARY_INSTALL_FAILED',
          `installing ${this.#opts.pluginBinary} into ${this.#opts.cniBinDir} failed: ${errorMessage(err)}`,
          { cause: err, retryable: true },
        ),
      };
    }
    const invalidFiles: { file: string; problem: string }[] = [];
    try {
      const configFile = await this.#casRetry(() => this.#installConfig(invalidFiles));
      return { ready: true, configFile, problem: undefined, invalidFiles };
    } catch (err) {
      const problem =
        err instanceof InstallError
          ? err
          : new InstallError(
              'CONFIG_WRITE_FAILED',
              `writing CNI config in ${this.#opts.cniConfDir} failed: ${errorMessage(err)}`,
              {
                cause: err,
                retryable: true,
              },
            );
      return { ready: false, configFile: undefined, problem, invalidFiles };
    }
  }

  /** Runs `step` again while a concurrent writer beats its compare-and-swap. */
  async #casRetry<T>(step: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (err) {
        if (!(err instanceof ContendedWrite)) throw err;
        if (attempt >= MAX_CONTENDED_ATTEMPTS) {
          throw new InstallError(
            'CONFIG_CONTENDED',
            `${err.message} changed during each of ${MAX_CONTENDED_ATTEMPTS} attempts to chain istio-cni into it; retrying on the next change`,
            { retryable: true },
          );
        }
      }
    }
  }

  /**
   * Writes `text` to `path` only if the file still holds `expected` (undefined: absent) right
   * before the rename, so a rewrite by the primary CNI in between is never overwritten with stale
   * content. The window left is the check-to-rename gap of one process step.
   */
  async #casWrite(path: string, text: string, expected: string | undefined): Promise<void> {
    let mode = 0o644;
    if (expected !== undefined) mode = (await stat(path).catch(() => ({ mode: 0o644 }))).mode & 0o777;
    const written = await writeFileAtomic(path, text, {
      mode,
      beforeRename: () => readTextSyncOrUndefined(path) === expected,
    });
    if (!written) throw new ContendedWrite(path);
    this.#log.info({ file: path }, 'wrote CNI config');
  }

  async #casUnlink(path: string, expected: string): Promise<void> {
    if ((await readTextOrUndefined(path)) !== expected) throw new ContendedWrite(path);
    await unlink(path);
    this.#log.info({ file: path }, 'removed CNI config');
  }

  /** Brings the config in line with the mode; returns the file that holds the istio-cni entry. */
  async #installConfig(invalidFiles: { file: string; problem: string }[]): Promise<string> {
    const {
      cniConfDir: dir,
      chained,
      istioOwnedCniConfig: owned,
      istioOwnedCniConfigFileName: ownName,
    } = this.#opts;
    if (!chained) {
      const path = join(dir, STANDALONE_CONFIG_FILE_NAME);
      const desired = { cniVersion: '0.3.1', ...this.#entry };
      const current = await readTextOrUndefined(path);
      if (current === undefined || !this.#sameText(current, desired))
        await this.#casWrite(path, serializeConf(desired), current);
      return path;
    }
    let files: string[];
    try {
      files = await listConfFiles(dir);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      files = [];
    }
    const candidates = owned ? files.filter((f) => f !== ownName) : files;
    const primaryName = this.#primaryName(candidates);
    if (primaryName === undefined) {
      throw new InstallError(
        'NO_PRIMARY_CONFIG',
        `no CNI network config in ${dir} yet; waiting for the primary CNI to write one`,
        {
          retryable: true,
        },
      );
    }
    const primaryPath = join(dir, primaryName);
    const text = await readTextOrUndefined(primaryPath);
    if (text === undefined) throw new ContendedWrite(primaryPath);
    const parsed = parseConfFile(primaryName, text);
    if (!parsed.ok) {
      invalidFiles.push({ file: primaryPath, problem: parsed.problem });
      throw new InstallError(
        'CONFIG_INVALID',
        `CNI config ${primaryPath} ${parsed.problem}; left untouched, waiting for it to be fixed`,
        { retryable: true },
      );
    }
    const desired = chainIstioCni(parsed.list, this.#entry);

    if (owned) {
      const ownPath = join(dir, ownName);
      const current = await readTextOrUndefined(ownPath);
      if (current === undefined || !this.#sameText(current, desired)) {
        await this.#casWrite(ownPath, serializeConf(desired), current);
      }
      const first = [...files, ownName].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))[0];
      if (first !== ownName) {
        throw new InstallError(
          'CONFIG_SHADOWED',
          `istio-cni's config ${ownPath} is not loaded by runtimes: ${join(dir, first ?? '')} sorts before it`,
          { retryable: true },
        );
      }
      return ownPath;
    }

    if (parsed.kind === 'conflist') {
      if (!sameConf(parsed.list, desired)) await this.#casWrite(primaryPath, serializeConf(desired), text);
      return primaryPath;
    }
    // A single-plugin .conf: write it as a list under .conflist, then drop the .conf. Until the
    // unlink, runtimes still load the .conf (it sorts first); never is there no valid config.
    const listPath = `${primaryPath}list`;
    const existing = await readTextOrUndefined(listPath);
    // A .conflist twin is our own earlier conversion of this .conf, which the primary CNI has since
    // rewritten: replace it (compare-and-swap, like any other write).
    if (existing === undefined || !this.#sameText(existing, desired)) {
      await this.#casWrite(listPath, serializeConf(desired), existing);
    }
    await this.#casUnlink(primaryPath, text);
    return listPath;
  }

  /** The file runtimes load: the configured name (or its .conf/.conflist twin), else the first. */
  #primaryName(files: readonly string[]): string | undefined {
    const name = this.#opts.cniConfName;
    if (name === undefined) return files[0];
    if (files.includes(name)) return name;
    if (name.endsWith('.conf') && files.includes(`${name}list`)) return `${name}list`;
    if (name.endsWith('.conflist') && files.includes(name.slice(0, -4))) return name.slice(0, -4);
    return undefined;
  }

  #sameText(text: string, desired: unknown): boolean {
    try {
      return sameConf(parseJsonPreservingNumbers(text), desired);
    } catch {
      return false;
    }
  }
}
