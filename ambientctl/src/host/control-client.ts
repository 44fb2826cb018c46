import { request } from 'node:http';
import { errorMessage } from '@ambient/common/errors';
import { AmbientctlError, type AmbientctlErrorCode } from '../errors.ts';
import type { ErrorBody } from './protocol.ts';

/** Every code, so the daemon's answer keeps its meaning here (the compiler keeps it complete). */
const CODES: Record<AmbientctlErrorCode, true> = {
  USAGE: true,
  NOT_ROOT: true,
  BUILD_MISSING: true,
  STEP_FAILED: true,
  MESH_RUNNING: true,
  MESH_NOT_RUNNING: true,
  MANIFEST_INVALID: true,
  POD_NOT_FOUND: true,
  NOT_FOUND: true,
  CONFIG_DUMP_INVALID: true,
  CHECK_FAILED: true,
  CONTROL_FAILED: true,
  TIMEOUT: true,
  EXEC_FAILED: true,
  MESH_STOPPED: true,
  TEARDOWN_INCOMPLETE: true,
};

function isAmbientctlCode(code: string): code is AmbientctlErrorCode {
  return Object.hasOwn(CODES, code);
}

/**
 * An error answer of the daemon: its code and message, and whatever else it sent along (`apply`
 * sends the documents it did apply).
 */
export class ControlAnswerError extends AmbientctlError {
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: AmbientctlErrorCode, message: string, details: Readonly<Record<string, unknown>>) {
    super(code, message);
    this.details = details;
  }
}

/** How long a request may take unless the caller says otherwise (exec passes its own). */
const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * A client of the daemon's control socket. A refused or missing socket is MESH_NOT_RUNNING; an
 * error answer is rethrown with the daemon's code (codes from other packages, such as the
 * harness's, become CONTROL_FAILED with the original code in the message).
 */
export class ControlClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  get<T>(path: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    return this.#request<T>('GET', path, undefined, timeoutMs);
  }

  post<T>(path: string, body: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    return this.#request<T>('POST', path, body, timeoutMs);
  }

  #request<T>(method: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const contentType = typeof body === 'string' ? 'application/yaml' : 'application/json';
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          headers: {
            ...(payload === undefined
              ? {}
              : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              reject(
                new AmbientctlError(
                  'CONTROL_FAILED',
                  `the daemon answered ${method} ${path} with ${res.statusCode} and no JSON: ${text.slice(0, 200)}`,
                ),
              );
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const {
                code = 'CONTROL_FAILED',
                message = `status ${res.statusCode}`,
                ...details
              } = (parsed as Partial<ErrorBody>).error ?? {};
              reject(
                isAmbientctlCode(code)
                  ? new ControlAnswerError(code, message, details)
                  : new ControlAnswerError('CONTROL_FAILED', `${code}: ${message}`, details),
              );
              return;
            }
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(
          new AmbientctlError('TIMEOUT', `the daemon did not answer ${method} ${path} in ${timeoutMs} ms`),
        ),
      );
      req.on('error', (err) => {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ECONNREFUSED') {
          reject(
            new AmbientctlError('MESH_NOT_RUNNING', `no daemon answers on ${this.socketPath} (${code})`, {
              cause: err,
            }),
          );
          return;
        }
        reject(
          err instanceof AmbientctlError
            ? err
            : new AmbientctlError(
                'CONTROL_FAILED',
                `control request ${method} ${path}: ${errorMessage(err)}`,
                {
                  cause: err,
                },
              ),
        );
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }
}
