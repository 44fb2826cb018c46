import { MeshError } from '@ambient/common/errors';

/** Why the CA refused to sign, or could not start. */
export type CaErrorCode =
  /** The CSR is not one PEM `CERTIFICATE REQUEST` block holding a parsable PKCS#10 request. */
  | 'CSR_MALFORMED'
  /** The CSR is larger than the CA accepts. */
  | 'CSR_TOO_LARGE'
  /** The CSR's self-signature does not verify with its own public key. */
  | 'CSR_SIGNATURE_INVALID'
  /** The CSR's key is not ECDSA P-256/P-384 or RSA of an accepted size. */
  | 'CSR_KEY_UNSUPPORTED'
  /** The requested lifetime is above the maximum (`MAX_WORKLOAD_CERT_TTL`). */
  | 'TTL_TOO_LONG'
  /** The identity to certify is not in the mesh trust domain. */
  | 'IDENTITY_TRUST_DOMAIN'
  /** A stored root (directory or Secret) is unusable: unparsable, key and certificate do not match, half missing. */
  | 'ROOT_INVALID'
  /** Reading or writing the root store failed. */
  | 'ROOT_STORE_FAILED'
  /** A plugged-in `cacerts` directory lacks a file or holds an inconsistent chain. */
  | 'CACERTS_INVALID'
  /** A serving-certificate request names no DNS name or IP address, or a malformed one. */
  | 'SERVING_NAMES_INVALID';

export class CaError extends MeshError<CaErrorCode> {}

/** Why node authorization refused an `ImpersonatedIdentity` (spec §4.3). Logged, never shown to the caller. */
export type ImpersonationErrorCode =
  /** `CA_TRUSTED_NODE_ACCOUNTS` is empty: nobody may impersonate. */
  | 'IMPERSONATION_DISABLED'
  /** The caller's namespace/service account is not a trusted node account. */
  | 'CALLER_NOT_TRUSTED'
  /** The requested identity is not `spiffe://<td>/ns/<ns>/sa/<sa>`. */
  | 'REQUESTED_IDENTITY_INVALID'
  /** The requested identity is in another trust domain. */
  | 'REQUESTED_TRUST_DOMAIN'
  /** The caller's credential names no pod (name and UID), or the pod is not known. */
  | 'CALLER_POD_UNKNOWN'
  /** The pod of that name has another UID: the credential belongs to a deleted pod. */
  | 'CALLER_POD_UID_MISMATCH'
  /** The pod runs under another service account than the credential's. */
  | 'CALLER_POD_ACCOUNT_MISMATCH'
  /** The caller pod is not scheduled on a node. */
  | 'CALLER_POD_NO_NODE'
  /** No pod that is not Failed runs the requested identity on the caller's node. */
  | 'IDENTITY_NOT_ON_NODE';

export class ImpersonationError extends MeshError<ImpersonationErrorCode> {}

/** Why writing the root certificate to its consumers failed. */
export type RootDistributionErrorCode =
  /** Writing `istio-ca-root-cert` into a namespace failed; retried with backoff. */
  | 'CONFIGMAP_WRITE_FAILED'
  /** Writing the root file failed. */
  | 'ROOT_FILE_WRITE_FAILED';

export class RootDistributionError extends MeshError<RootDistributionErrorCode> {}
