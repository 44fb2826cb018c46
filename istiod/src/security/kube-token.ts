import { errorMessage } from '@ambient/common/errors';
import { formatIdentity, makeIdentity } from '@ambient/common/identity';
import { type Logger, logger } from '@ambient/common/log';
import type { AuthenticationV1Api, V1TokenReview } from '@kubernetes/client-node';
import {
  type AuthenticationRequest,
  type Authenticator,
  bearerToken,
  type Caller,
  tokenDigest,
} from './authenticate.ts';
import { AuthenticationError } from './errors.ts';

/** The Kubernetes call {@link KubeTokenAuthenticator} makes (an `AuthenticationV1Api` satisfies it). */
export type TokenReviewApi = Pick<AuthenticationV1Api, 'createTokenReview'>;

/** Bound-token extras naming the pod a token was issued for (`istio:security/pkg/k8s/tokenreview/k8sauthn.go`). */
export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
/** `TOKEN_AUDIENCES` default: the audience of ztunnel's projected token. */
export const DEFAULT_TOKEN_AUDIENCES: readonly string[] = ['istio-ca'];

export interface KubeTokenAuthenticatorOptions {
  readonly api: TokenReviewApi;
  /** The mesh trust domain, for the caller's SPIFFE identity. */
  readonly trustDomain: string;
  /** Accepted token audiences (`TOKEN_AUDIENCES`); default `istio-ca`. */
  readonly audiences?: readonly string[];
  /** This cluster's id (`CLUSTER_ID`); a `clusterid` header naming another cluster is refused. */
  readonly clusterId?: string;
  /** How long an accepted token is remembered; default 60 s, never past the token's own `exp`. */
  readonly cacheTtlMs?: number;
  /** Most tokens remembered at once; the least recently used goes first. Default 4096. */
  readonly cacheMaxEntries?: number;
  /** A TokenReview slower than this fails the call (`TOKEN_REVIEW_FAILED`). Default 10 s. */
  readonly reviewTimeoutMs?: number;
  /** Clock, for tests of the cache. */
  readonly now?: () => number;
  readonly log?: Logger;
}

interface CacheEntry {
  readonly caller: Caller;
  readonly expiresAt: number;
}

/**
 * Authenticates Kubernetes service-account tokens with a TokenReview, as istiod does for ztunnel's
 * projected token: the audience must be one of ours, the user a service account
 * (`system:serviceaccount:<ns>:<sa>`), and the pod name and UID come from the bound-token extras.
 * Accepted tokens are cached briefly by digest, so a ztunnel fetching eight certificates at once
 * costs one review; concurrent reviews of one token are shared. Refusals are never cached.
 */
export class KubeTokenAuthenticator implements Authenticator {
  readonly name = 'kube-token';
  readonly #api: TokenReviewApi;
  readonly #trustDomain: string;
  readonly #audiences: readonly string[];
  readonly #clusterId: string;
  readonly #cacheTtlMs: number;
  readonly #cacheMax: number;
  readonly #reviewTimeoutMs: number;
  readonly #now: () => number;
  readonly #log: Logger;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<Caller>>();
  #reviews = 0;

  constructor(options: KubeTokenAuthenticatorOptions) {
    this.#api = options.api;
    this.#trustDomain = options.trustDomain;
    this.#audiences = options.audiences ?? DEFAULT_TOKEN_AUDIENCES;
    this.#clusterId = options.clusterId ?? 'Kubernetes';
    this.#cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.#cacheMax = options.cacheMaxEntries ?? 4096;
    this.#reviewTimeoutMs = options.reviewTimeoutMs ?? 10_000;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? logger('security');
  }

  /** TokenReview calls made so far (cache misses). */
  get reviewCount(): number {
    return this.#reviews;
  }

  async authenticate(request: AuthenticationRequest): Promise<Caller> {
    const token = bearerToken(request.metadata);
    if (token === undefined)
      throw new AuthenticationError('NO_CREDENTIALS', 'request carries no bearer token');
    const cluster = request.metadata.get('clusterid')[0];
    if (cluster !== undefined && cluster !== '' && String(cluster) !== this.#clusterId) {
      throw new AuthenticationError(
        'UNKNOWN_CLUSTER',
        `request claims cluster ${JSON.stringify(String(cluster))}, but this istiod serves only ${JSON.stringify(this.#clusterId)}`,
      );
    }
    const digest = tokenDigest(token);
    const now = this.#now();
    const hit = this.#cache.get(digest);
    if (hit) {
      this.#cache.delete(digest);
      if (hit.expiresAt > now) {
        this.#cache.set(digest, hit);
        return hit.caller;
      }
    }
    let pending = this.#inFlight.get(digest);
    if (!pending) {
      pending = this.#review(token, digest).finally(() => this.#inFlight.delete(digest));
      this.#inFlight.set(digest, pending);
    }
    return pending;
  }

  async #review(token: string, digest: string): Promise<Caller> {
    const body: V1TokenReview = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: [...this.#audiences] },
    };
    this.#reviews++;
    let review: V1TokenReview;
    let timer: NodeJS.Timeout | undefined;
    try {
      review = await Promise.race([
        this.#api.createTokenReview({ body }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${this.#reviewTimeoutMs}ms`)),
            this.#reviewTimeoutMs,
          );
        }),
      ]);
    } catch (err) {
      throw new AuthenticationError('TOKEN_REVIEW_FAILED', `token review failed: ${errorMessage(err)}`, {
        cause: err,
        retryable: true,
      });
    } finally {
      clearTimeout(timer);
    }
    const caller = this.#callerFromReview(review);
    const tokenExpiry = jwtExpiryMs(token);
    const now = this.#now();
    const expiresAt = Math.min(now + this.#cacheTtlMs, tokenExpiry ?? Number.POSITIVE_INFINITY);
    if (expiresAt > now) {
      while (this.#cache.size >= this.#cacheMax) {
        const oldest = this.#cache.keys().next();
        if (oldest.done) break;
        this.#cache.delete(oldest.value);
      }
      this.#cache.set(digest, { caller, expiresAt });
    }
    this.#log.debug({ identity: caller.identity, pod: caller.podName }, 'token authenticated');
    return caller;
  }

  #callerFromReview(review: V1TokenReview): Caller {
    const st = review.status;
    if (st?.error)
      throw new AuthenticationError('TOKEN_REJECTED', `token review returned an error: ${st.error}`);
    if (!st?.authenticated)
      throw new AuthenticationError('TOKEN_REJECTED', 'token review did not authenticate the token');
    const audiences = st.audiences ?? [];
    if (!audiences.some((a) => this.#audiences.includes(a))) {
      throw new AuthenticationError(
        'TOKEN_AUDIENCE',
        `token audiences ${JSON.stringify(audiences)} include none of ${JSON.stringify(this.#audiences)}`,
      );
    }
    const user = st.user ?? {};
    if (!(user.groups ?? []).includes('system:serviceaccounts')) {
      throw new AuthenticationError(
        'NOT_SERVICE_ACCOUNT',
        `user ${JSON.stringify(user.username)} is not a service account`,
      );
    }
    const parts = (user.username ?? '').split(':');
    if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') {
      throw new AuthenticationError(
        'NOT_SERVICE_ACCOUNT',
        `username ${JSON.stringify(user.username)} is not system:serviceaccount:<namespace>:<name>`,
      );
    }
    const [, , namespace = '', serviceAccount = ''] = parts;
    let identity: string;
    try {
      identity = formatIdentity(makeIdentity(this.#trustDomain, namespace, serviceAccount));
    } catch (err) {
      throw new AuthenticationError(
        'NOT_SERVICE_ACCOUNT',
        `service account does not form an identity: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    const podName = singleExtra(user.extra, POD_NAME_EXTRA);
    const podUid = singleExtra(user.extra, POD_UID_EXTRA);
    return {
      identity,
      namespace,
      serviceAccount,
      ...(podName === undefined ? {} : { podName }),
      ...(podUid === undefined ? {} : { podUid }),
      via: 'token',
    };
  }
}

function singleExtra(extra: Record<string, string[]> | undefined, key: string): string | undefined {
  const values = extra?.[key];
  return values?.length === 1 && values[0] !== '' ? values[0] : undefined;
}

/**
 * The `exp` claim of a JWT in epoch milliseconds, read without verifying anything: it only ever
 * shortens how long an already-reviewed token is cached.
 */
export function jwtExpiryMs(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
