/**
 * The string formats Kubernetes and Istio validate: object names, label keys and values, IP
 * addresses and CIDR prefixes, port names. Each returns a message saying what is wrong, or
 * undefined when the string is well formed (the {@link StringRule} shape of `schema.ts`).
 */
import { isIP } from 'node:net';
import type { StringRule } from './schema.ts';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** A namespace name (RFC 1123 label): lower-case alphanumerics and `-`, at most 63. */
export const dns1123Label: StringRule = (s) => {
  if (s.length > 63) return `${JSON.stringify(s)} is longer than 63 characters`;
  return DNS1123_LABEL.test(s)
    ? undefined
    : `${JSON.stringify(s)} is not a valid DNS-1123 label (lower-case alphanumerics and '-', starting and ending with an alphanumeric)`;
};

/** Most object names (RFC 1123 subdomain): labels joined by `.`, at most 253. */
export const dns1123Subdomain: StringRule = (s) => {
  if (s.length > 253) return `${JSON.stringify(s)} is longer than 253 characters`;
  return DNS1123_SUBDOMAIN.test(s)
    ? undefined
    : `${JSON.stringify(s)} is not a valid DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', starting and ending with an alphanumeric)`;
};

/** A Service name (RFC 1035 label): like a DNS-1123 label but starting with a letter. */
export const dns1035Label: StringRule = (s) => {
  if (s.length > 63) return `${JSON.stringify(s)} is longer than 63 characters`;
  return DNS1035_LABEL.test(s)
    ? undefined
    : `${JSON.stringify(s)} is not a valid DNS-1035 label (lower-case alphanumerics and '-', starting with a letter)`;
};

/** A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most 63. */
export const qualifiedName: StringRule = (s) => {
  const slash = s.indexOf('/');
  const prefix = slash === -1 ? undefined : s.slice(0, slash);
  const name = slash === -1 ? s : s.slice(slash + 1);
  if (prefix !== undefined && (prefix === '' || dns1123Subdomain(prefix) !== undefined)) {
    return `${JSON.stringify(s)} has an invalid prefix (must be a DNS-1123 subdomain)`;
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    return `${JSON.stringify(s)} is not a valid qualified name (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)`;
  }
  return undefined;
};

/** A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric. */
export const labelValue: StringRule = (s) => {
  if (s === '') return undefined;
  if (s.length > 63) return `${JSON.stringify(s)} is longer than 63 characters`;
  return QUALIFIED_NAME.test(s) ? undefined : `${JSON.stringify(s)} is not a valid label value`;
};

/** A named port (`targetPort: http`): an IANA service name, at most 15 characters with a letter. */
export const ianaSvcName: StringRule = (s) => {
  if (s.length === 0 || s.length > 15) return `${JSON.stringify(s)} must be 1 to 15 characters`;
  if (!IANA_SVC_NAME.test(s) || s.includes('--') || !/[a-z]/.test(s)) {
    return `${JSON.stringify(s)} is not a valid port name (lower-case alphanumerics and '-', with at least one letter)`;
  }
  return undefined;
};

export const ipAddress: StringRule = (s) =>
  isIP(s) === 0 ? `${JSON.stringify(s)} is not an IP address` : undefined;

export const ipv4Address: StringRule = (s) =>
  isIP(s) === 4 ? undefined : `${JSON.stringify(s)} is not an IPv4 address`;

export const ipv6Address: StringRule = (s) =>
  isIP(s) === 6 ? undefined : `${JSON.stringify(s)} is not an IPv6 address`;

/** `10.0.0.0/8`, `2001:db8::/32`; the prefix length must fit the address family. */
export const cidr: StringRule = (s) => {
  const slash = s.indexOf('/');
  if (slash === -1) return `${JSON.stringify(s)} is not a CIDR prefix`;
  const family = isIP(s.slice(0, slash));
  const len = s.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  if (family === 0 || !/^(0|[1-9][0-9]{0,2})$/.test(len) || Number(len) > max) {
    return `${JSON.stringify(s)} is not a CIDR prefix`;
  }
  return undefined;
};

/** An address or a CIDR prefix, as AuthorizationPolicy `ipBlocks` and ServiceEntry `addresses` take. */
export const ipOrCidr: StringRule = (s) =>
  s.includes('/')
    ? cidr(s)
    : isIP(s) === 0
      ? `${JSON.stringify(s)} is not an IP address or CIDR prefix`
      : undefined;

/** A decimal port number written as a string (AuthorizationPolicy `ports`, PeerAuthentication keys). */
export const portString: StringRule = (s) => {
  if (!/^[0-9]{1,5}$/.test(s)) return `${JSON.stringify(s)} is not a port number`;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? undefined : `${JSON.stringify(s)} is out of range 1..65535`;
};
