// @peculiar/x509 resolves its dependency-injection metadata at import time, so this must come first.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/*
 * istiod's one X.509 library (node:crypto cannot build certificates or CSRs), configured once with
 * Node's WebCrypto. Every istiod module that builds or decodes certificates imports it from here.
 */
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
