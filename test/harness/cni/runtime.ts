import { CniError } from '../errors.ts';
import { type CniNetwork, cniVersionAtLeast, pluginStdinConfig } from './config.ts';
import { type CniAttachment, invokePlugin } from './invoke.ts';
import { type CniResult, parseCniResult } from './result.ts';

/** How a {@link CniRuntime} runs plugins. */
export interface CniRuntimeOptions {
  /** The netns plugins run in (the node's root netns). */
  readonly runtimeNetnsPath: string;
  /** Per plugin execution. Default 10 s. */
  readonly timeoutMs?: number;
}

/**
 * Executes network configuration lists the way libcni (and so containerd and CRI-O) does: ADD
 * runs the plugins in order, each after the first receiving the previous result as `prevResult`;
 * DEL runs them in reverse with the cached ADD result as `prevResult` (0.4.0+); CHECK runs them in
 * order with the cached result (0.4.0+ only).
 */
export class CniRuntime {
  readonly #opts: Required<CniRuntimeOptions>;

  constructor(options: CniRuntimeOptions) {
    this.#opts = { timeoutMs: 10_000, ...options };
  }

  /** ADD: returns the last plugin's result. */
  async add(net: CniNetwork, att: CniAttachment): Promise<CniResult> {
    const { list } = net;
    let prev: CniResult | undefined;
    for (const plugin of list.plugins) {
      const out = await invokePlugin({
        ...this.#common(net, att),
        plugin: plugin.type,
        command: 'ADD',
        stdinConfig: pluginStdinConfig(list, plugin, prev?.raw),
      });
      prev = parseCniResult(out, plugin.type, 'ADD');
    }
    if (prev === undefined) {
      throw new CniError('CNI_RESULT_INVALID', `network list "${list.name}" has no plugins`, {
        plugin: '',
        command: 'ADD',
        msg: 'no plugins',
      });
    }
    return prev;
  }

  /**
   * DEL: every plugin in reverse order, even after one fails (so a failed plugin does not leak
   * what the others hold); throws the first failure afterwards.
   */
  async del(net: CniNetwork, att: CniAttachment, cached: CniResult | undefined): Promise<void> {
    const { list } = net;
    const prevResult = cniVersionAtLeast(list.cniVersion, '0.4.0') ? cached?.raw : undefined;
    let first: unknown;
    for (const plugin of [...list.plugins].reverse()) {
      try {
        await invokePlugin({
          ...this.#common(net, att),
          plugin: plugin.type,
          command: 'DEL',
          stdinConfig: pluginStdinConfig(list, plugin, prevResult),
        });
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }

  /** CHECK: every plugin in order against the cached ADD result; throws the first failure. */
  async check(net: CniNetwork, att: CniAttachment, cached: CniResult): Promise<void> {
    const { list } = net;
    if (!cniVersionAtLeast(list.cniVersion, '0.4.0')) {
      throw new CniError(
        'CNI_COMMAND_UNSUPPORTED',
        `CHECK needs cniVersion 0.4.0 or later; network list "${list.name}" is ${list.cniVersion}`,
        { plugin: list.plugins[0]?.type ?? '', command: 'CHECK', msg: 'CHECK is not supported' },
      );
    }
    for (const plugin of list.plugins) {
      await invokePlugin({
        ...this.#common(net, att),
        plugin: plugin.type,
        command: 'CHECK',
        stdinConfig: pluginStdinConfig(list, plugin, cached.raw),
      });
    }
  }

  #common(net: CniNetwork, attachment: CniAttachment) {
    return {
      attachment,
      cniPath: net.cniPath,
      runtimeNetnsPath: this.#opts.runtimeNetnsPath,
      timeoutMs: this.#opts.timeoutMs,
    };
  }
}
