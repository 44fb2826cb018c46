import type { Config } from '../config.ts';

/** What every verb gets: the configuration, the mesh it is about, and where to print. */
export interface CliContext {
  readonly config: Config;
  /** The mesh name (`--name`, default `ambient`). */
  readonly name: string;
  /** `<stateRoot>/<name>`. */
  readonly stateDir: string;
  /** Prints a line (a newline is added) to stdout. */
  readonly out: (line: string) => void;
  /** Prints a line to stderr. */
  readonly err: (line: string) => void;
}

/** `--name x` on the hints a verb prints, when the mesh is not the default one. */
export function nameFlag(ctx: CliContext): string {
  return ctx.name === 'ambient' ? '' : ` --name ${ctx.name}`;
}

/** A command line to suggest: `sudo ambientctl/bin/ambientctl down --name x`. */
export function suggest(ctx: CliContext, args: string): string {
  return `sudo ${ctx.config.program} ${args}${nameFlag(ctx)}`;
}
