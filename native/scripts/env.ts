/** The environment the build script reads: npm's own location and the PATH its children get. */
import { delimiter } from 'node:path';

/** Path of the npm CLI running this script (`npm_execpath`), when run through npm. */
export function npmExecPath(): string | undefined {
  return process.env.npm_execpath || undefined;
}

/** This process's environment with `dir` first on PATH. */
export function envWithPathFirst(dir: string): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dir}${delimiter}${process.env.PATH ?? ''}` };
}
