import { readFile } from 'node:fs/promises';
import { errorMessage } from '@ambient/common/errors';
import { formatIdentity, makeIdentity } from '@ambient/common/identity';
import { parse as parseYaml } from 'yaml';
import {
  type AuthenticationRequest,
  type Authenticator,
  bearerToken,
  type Caller,
  tokenDigest,
} from './authenticate.ts';
import { AuthenticationError } from './errors.ts';

// Shorter tokens are guessable; the file is the only thing between a local process and a certificate.
const MIN_TOKEN_LENGTH = 16;
const ENTRY_KEYS = new Set(['namespace', 'serviceAccount', 'podName', 'podUid']);

/**
 * Local mode's stand-in for TokenReview: a JSON or YAML file mapping each bearer token to the
 * workload it stands for,
 *
 * ```yaml
 * "<token>": { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-node1, podUid: "…" }
 * ```
 *
 * Tokens are held only as SHA-256 digests. {@link TokenFileAuthenticator.reload} re-reads the file;
 * a malformed file is refused whole and the previous contents stay in use.
 */
export class TokenFileAuthenticator implements Authenticator {
  readonly name = 'token-file';
  readonly #path: string;
  readonly #trustDomain: string;
  #callers: ReadonlyMap<string, Caller> = new Map();

  private constructor(path: string, trustDomain: string) {
    this.#path = path;
    this.#trustDomain = trustDomain;
  }

  /** Reads the file; throws `TOKEN_FILE_INVALID` naming the first problem. */
  static async load(path: string, options: { trustDomain: string }): Promise<TokenFileAuthenticator> {
    const a = new TokenFileAuthenticator(path, options.trustDomain);
    await a.reload();
    return a;
  }

  /** How many tokens the file defines. */
  get size(): number {
    return this.#callers.size;
  }

  async reload(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      throw new AuthenticationError(
        'TOKEN_FILE_INVALID',
        `cannot read token file ${this.#path}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    this.#callers = parseTokenFile(text, this.#path, this.#trustDomain);
  }

  async authenticate(request: AuthenticationRequest): Promise<Caller> {
    const token = bearerToken(request.metadata);
    if (token === undefined)
      throw new AuthenticationError('NO_CREDENTIALS', 'request carries no bearer token');
    const caller = this.#callers.get(tokenDigest(token));
    if (!caller) throw new AuthenticationError('TOKEN_REJECTED', `token is not in ${this.#path}`);
    return caller;
  }
}

/** Parses a token file into digest → caller; throws `TOKEN_FILE_INVALID`. */
export function parseTokenFile(text: string, path: string, trustDomain: string): Map<string, Caller> {
  const bad = (why: string, cause?: unknown): AuthenticationError =>
    new AuthenticationError(
      'TOKEN_FILE_INVALID',
      `token file ${path}: ${why}`,
      cause === undefined ? {} : { cause },
    );
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw bad(`not JSON or YAML: ${errorMessage(err)}`, err);
  }
  if (doc === null || doc === undefined) return new Map();
  if (typeof doc !== 'object' || Array.isArray(doc)) throw bad('must be a mapping of token to workload');
  const callers = new Map<string, Caller>();
  for (const [token, entry] of Object.entries(doc as Record<string, unknown>)) {
    const where = `token ${token.slice(0, 4)}…`;
    if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
      throw bad(`${where} must be at least ${MIN_TOKEN_LENGTH} characters without whitespace`);
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw bad(`${where} must map to {namespace, serviceAccount, podName, podUid}`);
    }
    const e = entry as Record<string, unknown>;
    for (const key of Object.keys(e)) {
      if (!ENTRY_KEYS.has(key)) throw bad(`${where} has unknown field ${JSON.stringify(key)}`);
    }
    for (const key of ENTRY_KEYS) {
      if (e[key] !== undefined && typeof e[key] !== 'string')
        throw bad(`${where} field ${key} must be a string`);
    }
    const namespace = e.namespace as string | undefined;
    const serviceAccount = e.serviceAccount as string | undefined;
    if (!namespace || !serviceAccount) throw bad(`${where} needs namespace and serviceAccount`);
    let identity: string;
    try {
      identity = formatIdentity(makeIdentity(trustDomain, namespace, serviceAccount));
    } catch (err) {
      throw bad(`${where}: ${errorMessage(err)}`, err);
    }
    const podName = e.podName as string | undefined;
    const podUid = e.podUid as string | undefined;
    callers.set(tokenDigest(token), {
      identity,
      namespace,
      serviceAccount,
      ...(podName ? { podName } : {}),
      ...(podUid ? { podUid } : {}),
      via: 'token',
    });
  }
  return callers;
}
