/**
 * The built-in "images" of the local mesh. There is no container runtime: a container whose
 * `image` is one of these runs the matching TypeScript program with the mesh's own Node; any other
 * image must give `command` (and `args`), run as given inside the pod.
 */
import { fileURLToPath } from 'node:url';

/** HTTP echo server on 8080 (see echo.ts). */
export const ECHO_IMAGE = 'ambient/echo';
/** An idle client pod, or a request loop with `--url` (see client.ts). */
export const CLIENT_IMAGE = 'ambient/client';

export const ECHO_PROGRAM = fileURLToPath(new URL('./echo.ts', import.meta.url));
export const CLIENT_PROGRAM = fileURLToPath(new URL('./client.ts', import.meta.url));

/** Image name → the program it runs. A tag (`ambient/echo:latest`) is accepted and ignored. */
export const BUILTIN_IMAGES: Readonly<Record<string, string>> = {
  [ECHO_IMAGE]: ECHO_PROGRAM,
  [CLIENT_IMAGE]: CLIENT_PROGRAM,
};

/** The program of a built-in image, or undefined for any other image. */
export function builtinProgram(image: string): string | undefined {
  const name = image.replace(/:[^/:]*$/, '');
  return Object.hasOwn(BUILTIN_IMAGES, name) ? BUILTIN_IMAGES[name] : undefined;
}
