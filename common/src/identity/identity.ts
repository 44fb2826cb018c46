import { MeshError } from '../errors.ts';

/** Why a SPIFFE ID was refused; stable, used as the error code. */
export type IdentityErrorCode =
  | 'IDENTITY_SCHEME'
  | 'IDENTITY_NUL'
  | 'IDENTITY_SEGMENTS'
  | 'IDENTITY_EMPTY_PART'
  | 'IDENTITY_INVALID_CHARACTER'
  | 'IDENTITY_TOO_LONG';

export class IdentityError extends MeshError<IdentityErrorCode> {}

/** Istio's default trust domain; an empty `trust_domain` in WDS means this. */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** An empty `service_account` in WDS means this. */
export const DEFAULT_SERVICE_ACCOUNT = 'default';

const SCHEME = 'spiffe://';
// The SPIFFE ID standard caps a URI at 2048 bytes; ours are far shorter, so anything longer is hostile.
const MAX_LENGTH = 2048;
// SPIFFE ID standard §2.1: trust domains are lower-case letters, digits, '.', '-' and '_'.
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
// §2.2: path segments are letters, digits, '.', '-' and '_'; '.' and '..' are not segments.
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;

/**
 * A workload identity: `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.
 * Instances are frozen; compare them with {@link identityEquals} or by {@link formatIdentity}.
 */
export interface Identity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** Builds an identity, validating each part exactly as {@link parseIdentity} would. */
export function makeIdentity(trustDomain: string, namespace: string, serviceAccount: string): Identity {
  return parseIdentity(`${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
}

/**
 * Parses exactly `spiffe://<td>/ns/<ns>/sa/<sa>` (ztunnel `Identity::from_str`, plus the SPIFFE
 * ID standard's character rules). Throws {@link IdentityError} naming what was wrong; never
 * returns a partial identity.
 */
export function parseIdentity(uri: string): Identity {
  if (uri.length > MAX_LENGTH) {
    throw new IdentityError('IDENTITY_TOO_LONG', `spiffe id is ${uri.length} characters, over ${MAX_LENGTH}`);
  }
  if (uri.includes('\0')) {
    throw new IdentityError('IDENTITY_NUL', `spiffe id ${JSON.stringify(uri)} contains a NUL byte`);
  }
  if (!uri.startsWith(SCHEME)) {
    throw new IdentityError(
      'IDENTITY_SCHEME',
      `spiffe id ${JSON.stringify(uri)} must start with "${SCHEME}" (scheme is case-sensitive)`,
    );
  }
  const parts = uri.slice(SCHEME.length).split('/');
  if (parts.length !== 5) {
    throw new IdentityError(
      'IDENTITY_SEGMENTS',
      `spiffe id ${JSON.stringify(uri)} must have the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>, found ${parts.length - 1} path segments instead of 4`,
    );
  }
  const [trustDomain, nsKey, namespace, saKey, serviceAccount] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  if (nsKey !== 'ns' || saKey !== 'sa') {
    throw new IdentityError(
      'IDENTITY_SEGMENTS',
      `spiffe id ${JSON.stringify(uri)} must have "ns" and "sa" as its first and third path segments, found ${JSON.stringify(nsKey)} and ${JSON.stringify(saKey)}`,
    );
  }
  for (const [what, value] of [
    ['trust domain', trustDomain],
    ['namespace', namespace],
    ['service account', serviceAccount],
  ] as const) {
    if (value === '') {
      throw new IdentityError('IDENTITY_EMPTY_PART', `spiffe id ${JSON.stringify(uri)} has an empty ${what}`);
    }
  }
  if (!TRUST_DOMAIN_CHARS.test(trustDomain)) {
    throw new IdentityError(
      'IDENTITY_INVALID_CHARACTER',
      `spiffe id ${JSON.stringify(uri)} has trust domain ${JSON.stringify(trustDomain)}; only lower-case letters, digits, ".", "-" and "_" are allowed`,
    );
  }
  for (const [what, value] of [
    ['namespace', namespace],
    ['service account', serviceAccount],
  ] as const) {
    if (!SEGMENT_CHARS.test(value) || value === '.' || value === '..') {
      throw new IdentityError(
        'IDENTITY_INVALID_CHARACTER',
        `spiffe id ${JSON.stringify(uri)} has ${what} ${JSON.stringify(value)}; only letters, digits, ".", "-" and "_" are allowed, and not "." or ".." alone`,
      );
    }
  }
  return Object.freeze({ trustDomain, namespace, serviceAccount });
}

/** Returns the identity, or undefined when the string is not a valid SPIFFE ID. */
export function tryParseIdentity(uri: string): Identity | undefined {
  try {
    return parseIdentity(uri);
  } catch (err) {
    if (err instanceof IdentityError) return undefined;
    throw err;
  }
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function formatIdentity(id: Identity): string {
  return `${SCHEME}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** The form AuthorizationPolicy principals use: the SPIFFE ID without `spiffe://`. */
export function formatPrincipal(id: Identity): string {
  return `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function identityEquals(a: Identity, b: Identity): boolean {
  return (
    a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount
  );
}

/**
 * The identity of a WDS workload, applying Istio's defaults for empty fields (empty trust domain
 * means `cluster.local`, empty service account means `default`).
 */
export function workloadIdentity(w: {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}): Identity {
  return makeIdentity(
    w.trustDomain || DEFAULT_TRUST_DOMAIN,
    w.namespace,
    w.serviceAccount || DEFAULT_SERVICE_ACCOUNT,
  );
}
