import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '@ambient/common/errors';
import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import { CaError } from './errors.ts';

/** A self-signed root as stored: PEM certificate and PEM private key. */
export interface StoredRoot {
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * Where istiod keeps its self-signed root so that a restart (or another replica) signs with the
 * same root: every certificate already issued stays valid, and the distributed root stays right.
 */
export interface RootStore {
  /** Names the store in logs (`directory /var/lib/istiod/ca`, `secret istio-system/istio-ca-secret`). */
  readonly description: string;
  /** The stored root, or undefined when none was ever stored. Throws CaError when what is stored is unusable. */
  load(): Promise<StoredRoot | undefined>;
  /**
   * Stores a newly generated root unless one appeared meanwhile, and resolves with the root that
   * is stored afterwards: the argument, or the one another replica stored first.
   */
  create(root: StoredRoot): Promise<StoredRoot>;
}

/** File names inside the Secret and the directory, as upstream's self-signed `istio-ca-secret`. */
export const ROOT_CERT_KEY = 'ca-cert.pem';
export const ROOT_PRIVATE_KEY_KEY = 'ca-key.pem';

/**
 * The root in a directory (local mode): `ca-cert.pem` and `ca-key.pem` (mode 0600). One istiod
 * owns a directory; each file is written atomically, key first, so a crash while creating leaves
 * either nothing or a lone key, and a lone key is replaced by the next start.
 */
export class DirectoryRootStore implements RootStore {
  readonly #dir: string;
  readonly description: string;

  constructor(dir: string) {
    this.#dir = dir;
    this.description = `directory ${dir}`;
  }

  async load(): Promise<StoredRoot | undefined> {
    const certPem = await readOptional(join(this.#dir, ROOT_CERT_KEY));
    const keyPem = await readOptional(join(this.#dir, ROOT_PRIVATE_KEY_KEY));
    if (certPem === undefined) return undefined;
    if (keyPem === undefined) {
      throw new CaError(
        'ROOT_INVALID',
        `${this.description} holds ${ROOT_CERT_KEY} but no ${ROOT_PRIVATE_KEY_KEY}; restore the key or remove the directory to start a new root`,
      );
    }
    return { certPem, keyPem };
  }

  async create(root: StoredRoot): Promise<StoredRoot> {
    try {
      await mkdir(this.#dir, { recursive: true, mode: 0o700 });
      await writeAtomic(join(this.#dir, ROOT_PRIVATE_KEY_KEY), root.keyPem, 0o600);
      await writeAtomic(join(this.#dir, ROOT_CERT_KEY), root.certPem, 0o644);
    } catch (err) {
      throw new CaError(
        'ROOT_STORE_FAILED',
        `writing the root to ${this.description}: ${errorMessage(err)}`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
    return root;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CaError('ROOT_STORE_FAILED', `reading ${path}: ${errorMessage(err)}`, {
      cause: err,
      retryable: true,
    });
  }
}

/** Writes a temporary file next to `path`, then renames it over `path`: readers see old or new, never half. */
export async function writeAtomic(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(tmp, content, { mode, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The Kubernetes calls {@link SecretRootStore} makes (a `CoreV1Api` satisfies it). */
export type SecretApi = Pick<CoreV1Api, 'readNamespacedSecret' | 'createNamespacedSecret'>;

/**
 * The root in a Secret (Kubernetes mode), `istio-system/istio-ca-secret` with keys `ca-cert.pem`
 * and `ca-key.pem` as upstream istiod's self-signed CA. Created once and reused; when two replicas
 * race, the loser's create gets 409 Conflict and it adopts the winner's root.
 */
export class SecretRootStore implements RootStore {
  readonly #api: SecretApi;
  readonly #namespace: string;
  readonly #name: string;
  readonly description: string;

  constructor(api: SecretApi, options: { namespace?: string; name?: string } = {}) {
    this.#api = api;
    this.#namespace = options.namespace ?? 'istio-system';
    this.#name = options.name ?? 'istio-ca-secret';
    this.description = `secret ${this.#namespace}/${this.#name}`;
  }

  async load(): Promise<StoredRoot | undefined> {
    let secret: V1Secret;
    try {
      secret = await this.#api.readNamespacedSecret({ name: this.#name, namespace: this.#namespace });
    } catch (err) {
      if (httpStatus(err) === 404) return undefined;
      throw new CaError('ROOT_STORE_FAILED', `reading ${this.description}: ${errorMessage(err)}`, {
        cause: err,
        retryable: true,
      });
    }
    const cert = secret.data?.[ROOT_CERT_KEY];
    const key = secret.data?.[ROOT_PRIVATE_KEY_KEY];
    if (!cert || !key) {
      // Never overwrite: a Secret someone else wrote may be a root that workloads already trust.
      throw new CaError(
        'ROOT_INVALID',
        `${this.description} exists but lacks ${!cert ? ROOT_CERT_KEY : ROOT_PRIVATE_KEY_KEY}; fix or delete it`,
      );
    }
    return {
      certPem: Buffer.from(cert, 'base64').toString('utf8'),
      keyPem: Buffer.from(key, 'base64').toString('utf8'),
    };
  }

  async create(root: StoredRoot): Promise<StoredRoot> {
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: this.#name, namespace: this.#namespace },
      type: 'istio.io/ca-root',
      data: {
        [ROOT_CERT_KEY]: Buffer.from(root.certPem).toString('base64'),
        [ROOT_PRIVATE_KEY_KEY]: Buffer.from(root.keyPem).toString('base64'),
      },
    };
    try {
      await this.#api.createNamespacedSecret({ namespace: this.#namespace, body });
      return root;
    } catch (err) {
      if (httpStatus(err) !== 409) {
        throw new CaError('ROOT_STORE_FAILED', `creating ${this.description}: ${errorMessage(err)}`, {
          cause: err,
          retryable: true,
        });
      }
    }
    // Another replica created it between our read and our create: its root wins.
    const winner = await this.load();
    if (!winner) {
      throw new CaError(
        'ROOT_STORE_FAILED',
        `creating ${this.description} conflicted, yet reading it back found nothing`,
        { retryable: true },
      );
    }
    return winner;
  }
}

/** The HTTP status of a client-node ApiException, if the error is one. */
export function httpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}
