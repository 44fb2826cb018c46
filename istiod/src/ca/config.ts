import type { EnvReader } from '@ambient/common/env';
import { DEFAULT_TOKEN_AUDIENCES } from '../security/kube-token.ts';
import { DEFAULT_WORKLOAD_CERT_TTL_SECONDS, MAX_WORKLOAD_CERT_TTL_SECONDS } from './authority.ts';
import {
  DEFAULT_TRUSTED_NODE_ACCOUNTS,
  type NodeAccount,
  parseTrustedNodeAccounts,
} from './node-authorizer.ts';

/** The CA's settings, from the environment variables upstream istiod reads. */
export interface CaConfig {
  /** `CA_TRUSTED_NODE_ACCOUNTS`; `,` alone (set, but no account) turns impersonation off. */
  readonly trustedNodeAccounts: readonly NodeAccount[];
  /** `DEFAULT_WORKLOAD_CERT_TTL` (default 24h). */
  readonly defaultTtlSeconds: number;
  /** `MAX_WORKLOAD_CERT_TTL` (default 2160h, 90 days). */
  readonly maxTtlSeconds: number;
  /** `TOKEN_AUDIENCES` (default `istio-ca`). */
  readonly tokenAudiences: readonly string[];
  /** `ROOT_CA_DIR`: where a plugged-in CA's `cacerts` files are looked for (default `/etc/cacerts`). */
  readonly pluggedCertsDir: string;
}

const SECOND_MS = 1000;

/** Reads the CA settings; problems are recorded on `env` and reported by its `finish()`. */
export function readCaConfig(env: EnvReader): CaConfig {
  let trustedNodeAccounts: readonly NodeAccount[] = DEFAULT_TRUSTED_NODE_ACCOUNTS;
  const rawAccounts = env.raw('CA_TRUSTED_NODE_ACCOUNTS');
  if (rawAccounts !== undefined) {
    try {
      trustedNodeAccounts = parseTrustedNodeAccounts(rawAccounts);
    } catch (err) {
      env.problem('CA_TRUSTED_NODE_ACCOUNTS', rawAccounts, (err as Error).message);
    }
  }
  const maxTtlSeconds =
    env.durationMs('MAX_WORKLOAD_CERT_TTL', MAX_WORKLOAD_CERT_TTL_SECONDS * SECOND_MS, { minMs: SECOND_MS }) /
    SECOND_MS;
  const defaultTtlSeconds =
    env.durationMs('DEFAULT_WORKLOAD_CERT_TTL', DEFAULT_WORKLOAD_CERT_TTL_SECONDS * SECOND_MS, {
      minMs: SECOND_MS,
    }) / SECOND_MS;
  if (defaultTtlSeconds > maxTtlSeconds) {
    env.problem(
      'DEFAULT_WORKLOAD_CERT_TTL',
      env.raw('DEFAULT_WORKLOAD_CERT_TTL') ?? `${defaultTtlSeconds}s`,
      `must not exceed MAX_WORKLOAD_CERT_TTL (${maxTtlSeconds}s)`,
    );
  }
  return {
    trustedNodeAccounts,
    defaultTtlSeconds: Math.floor(defaultTtlSeconds),
    maxTtlSeconds: Math.floor(maxTtlSeconds),
    tokenAudiences: env.list('TOKEN_AUDIENCES', DEFAULT_TOKEN_AUDIENCES),
    pluggedCertsDir: env.string('ROOT_CA_DIR', '/etc/cacerts'),
  };
}
