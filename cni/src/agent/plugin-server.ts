/**
 * The node agent's side of the istio-cni plugin: an HTTP/1.1 server on the unix socket
 * `<run dir>/pluginevent.sock` (spec §6.1). POST /cmdadd carries a new pod; the agent's enrollment
 * decision and work run in the injected `onCmdAdd`, and the answer tells the plugin what to print.
 * POST /log takes the plugin's log lines.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Component, StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import {
  CMD_ADD_PATH,
  type CmdAddRequest,
  CNI_ERROR_CODE,
  type CniErrorResult,
  cniErrorResult,
  DEFAULT_CNI_AGENT_RUN_DIR,
  encodeResultForVersion,
  PLUGIN_AGENT_TIMEOUT_MS,
  PLUGIN_LOG_PATH,
  type PluginLogEntry,
  PluginProtocolError,
  parseCmdAddRequest,
  parsePluginLog,
  pluginEventSocketPath,
  SUPPORTED_CNI_VERSIONS,
} from '../plugin-protocol.ts';

/**
 * - `SOCKET_IN_USE`: another process answers on the socket path (a second agent);
 * - `SOCKET_PATH_INVALID`: the path exists and is not a socket (it is never removed then);
 * - `LISTEN_FAILED`: binding or listening on the socket failed;
 * - `HANDLER_TIMEOUT`: the abort reason handed to `onCmdAdd` when the plugin's answer is due.
 */
export type PluginServerErrorCode =
  | 'SOCKET_IN_USE'
  | 'SOCKET_PATH_INVALID'
  | 'LISTEN_FAILED'
  | 'HANDLER_TIMEOUT';

export class PluginServerError extends MeshError<PluginServerErrorCode> {}

/**
 * The agent's enrollment for one new pod: resolve when the pod may start (enrolled, or not
 * ambient); throw to make the plugin fail ADD (the pod sandbox is retried by the runtime). A
 * MeshError with `retryable` is answered with CNI code 11 ("try again later"), anything else with
 * 100. `signal` aborts when the plugin can no longer be answered (deadline or shutdown).
 */
export type CmdAddHandler = (request: CmdAddRequest, signal: AbortSignal) => Promise<void>;

export interface PluginServerOptions {
  readonly onCmdAdd: CmdAddHandler;
  /** Default /var/run/istio-cni. */
  readonly runDir?: string;
  /** Default `<runDir>/pluginevent.sock`. */
  readonly socketPath?: string;
  /**
   * How long `onCmdAdd` may take before the plugin is answered 503 (code 11). Default 4500 ms: under
   * the plugin's own 5 s deadline, so the plugin prints the agent's reason instead of a timeout.
   */
  readonly handlerTimeoutMs?: number;
  /** Largest accepted request body. Default 1 MiB (a config with prevResult is a few KiB). */
  readonly maxBodyBytes?: number;
  /** Receives the plugin's /log lines; default: logged at their level through `log`. */
  readonly onPluginLog?: (entry: PluginLogEntry) => void;
  readonly log?: Logger;
}

const DEFAULT_HANDLER_TIMEOUT_MS = PLUGIN_AGENT_TIMEOUT_MS - 500;
const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** The version an error is encoded with when the request's own cannot be read. */
const FALLBACK_CNI_VERSION = SUPPORTED_CNI_VERSIONS[SUPPORTED_CNI_VERSIONS.length - 1] as string;

class HttpFailure extends Error {
  readonly status: number;
  readonly result: CniErrorResult;

  constructor(status: number, result: CniErrorResult) {
    super(result.msg);
    this.status = status;
    this.result = result;
  }
}

/** Whether something accepts connections on a unix socket path (an agent that is still running). */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (answers: boolean) => {
      s.destroy();
      resolve(answers);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    // A listener with a full backlog leaves connect pending: it is alive.
    s.setTimeout(1000, () => done(true));
  });
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** The cniVersion of a raw body, for error answers before (or when) validation fails. */
function versionOf(body: unknown): string {
  const v = (body as { Config?: { cniVersion?: unknown } } | null)?.Config?.cniVersion;
  return typeof v === 'string' && /^\d+\.\d+\.\d+$/.test(v) ? v : FALLBACK_CNI_VERSION;
}

/** The error's code chain, for the error result's `details` (the message is already `msg`). */
function errorDetails(err: unknown): string | undefined {
  const parts: string[] = [];
  if (err instanceof MeshError) parts.push(err.code);
  if (err instanceof Error && err.cause !== undefined) parts.push(`caused by: ${errorMessage(err.cause)}`);
  return parts.length > 0 ? parts.join('; ') : undefined;
}

/**
 * The HTTP server the plugin talks to. `start()` removes a stale socket (never a live one or a
 * non-socket), listens, and restricts the socket to its owner (0600: only root's plugin may
 * enroll pods); `stop()` aborts pending enrollments and removes the socket if it is still ours.
 */
export class PluginServer implements Component {
  readonly name = 'cni-plugin-server';
  readonly socketPath: string;
  readonly #onCmdAdd: CmdAddHandler;
  readonly #onPluginLog: (entry: PluginLogEntry) => void;
  readonly #handlerTimeoutMs: number;
  readonly #maxBodyBytes: number;
  readonly #log: Logger;
  readonly #inflight = new Set<AbortController>();
  #server: Server | undefined;
  #socketIno: number | undefined;

  constructor(options: PluginServerOptions) {
    this.socketPath =
      options.socketPath ?? pluginEventSocketPath(options.runDir ?? DEFAULT_CNI_AGENT_RUN_DIR);
    this.#onCmdAdd = options.onCmdAdd;
    this.#handlerTimeoutMs = options.handlerTimeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS;
    this.#maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.#log = options.log ?? logger('cni-agent');
    this.#onPluginLog = options.onPluginLog ?? ((e) => this.#logPluginLine(e));
  }

  async start(): Promise<void> {
    if (this.#server !== undefined) return;
    await mkdir(dirname(this.socketPath), { recursive: true, mode: 0o755 });
    await this.#removeStaleSocket();
    const server = createServer(
      { maxHeaderSize: 16 * 1024, requestTimeout: 10_000, headersTimeout: 5_000 },
      (req, res) => {
        void this.#dispatch(req, res);
      },
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(
          new PluginServerError('LISTEN_FAILED', `listening on plugin socket ${this.socketPath} failed`, {
            cause: err,
          }),
        ),
      );
      server.listen(this.socketPath, () => resolve());
    });
    server.on('error', (err) => this.#log.error({ err }, 'plugin socket server error'));
    // The default umask leaves the socket without group/other write, so nobody else could connect
    // before this chmod; it makes the intent explicit and independent of the umask.
    await chmod(this.socketPath, 0o600);
    this.#socketIno = (await lstat(this.socketPath)).ino;
    this.#server = server;
    this.#log.info({ socket: this.socketPath }, 'plugin event server listening');
  }

  async stop(_ctx?: StopContext): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    for (const ac of this.#inflight) {
      ac.abort(new PluginServerError('HANDLER_TIMEOUT', 'the plugin event server is stopping'));
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // Pending answers were just aborted; give their responses a moment, then cut the rest.
    const timer = setTimeout(() => server.closeAllConnections(), 200);
    await closed;
    clearTimeout(timer);
    try {
      // Another agent may have taken the path over since; only remove our own socket.
      if ((await lstat(this.socketPath)).ino === this.#socketIno) await unlink(this.socketPath);
    } catch (err) {
      if (!isErrno(err, 'ENOENT'))
        this.#log.warn({ err, socket: this.socketPath }, 'removing plugin socket failed');
    }
  }

  async #removeStaleSocket(): Promise<void> {
    let stat: Awaited<ReturnType<typeof lstat>>;
    try {
      stat = await lstat(this.socketPath);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    if (!stat.isSocket()) {
      throw new PluginServerError(
        'SOCKET_PATH_INVALID',
        `plugin socket path ${this.socketPath} exists and is not a socket; refusing to replace it`,
      );
    }
    if (await socketAnswers(this.socketPath)) {
      throw new PluginServerError(
        'SOCKET_IN_USE',
        `plugin socket ${this.socketPath} is in use by another process (is a second node agent running?)`,
      );
    }
    this.#log.info({ socket: this.socketPath }, 'removing stale plugin socket');
    await unlink(this.socketPath);
  }

  async #dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let rawBody: unknown;
    try {
      const path = (req.url ?? '').split('?')[0];
      if (path !== CMD_ADD_PATH && path !== PLUGIN_LOG_PATH) {
        throw new HttpFailure(
          404,
          cniErrorResult(FALLBACK_CNI_VERSION, CNI_ERROR_CODE.agentProtocol, `no plugin endpoint ${path}`),
        );
      }
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        throw new HttpFailure(
          405,
          cniErrorResult(
            FALLBACK_CNI_VERSION,
            CNI_ERROR_CODE.agentProtocol,
            `${path} takes POST, not ${req.method}`,
          ),
        );
      }
      const text = await this.#readBody(req);
      if (path === PLUGIN_LOG_PATH) {
        for (const entry of parsePluginLog(text)) this.#onPluginLog(entry);
        this.#send(res, 200, {});
        return;
      }
      try {
        rawBody = JSON.parse(text);
      } catch (err) {
        throw new HttpFailure(
          400,
          cniErrorResult(
            FALLBACK_CNI_VERSION,
            CNI_ERROR_CODE.decodingFailure,
            'cmdadd body is not valid JSON',
            errorMessage(err),
          ),
        );
      }
      this.#send(res, 200, await this.#cmdAdd(rawBody));
    } catch (err) {
      if (err instanceof HttpFailure) {
        this.#send(res, err.status, err.result);
        return;
      }
      this.#log.error({ err }, 'plugin request failed unexpectedly');
      this.#send(
        res,
        500,
        cniErrorResult(
          versionOf(rawBody),
          CNI_ERROR_CODE.enrollmentFailed,
          errorMessage(err),
          errorDetails(err),
        ),
      );
    }
  }

  async #cmdAdd(body: unknown): Promise<Record<string, unknown>> {
    let request: CmdAddRequest;
    try {
      request = parseCmdAddRequest(body);
    } catch (err) {
      if (!(err instanceof PluginProtocolError)) throw err;
      this.#log.warn({ err: err.message, field: err.field }, 'rejected invalid cmdadd request');
      throw new HttpFailure(400, cniErrorResult(versionOf(body), err.cniCode, err.message));
    }
    const pod = `${request.podNamespace}/${request.podName}`;
    const log = this.#log.child({ pod, containerId: request.containerId });
    const started = performance.now();
    const ac = new AbortController();
    this.#inflight.add(ac);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#handlerTimeoutMs);
    });
    const handled = this.#onCmdAdd(request, ac.signal).then(
      () => ({ ok: true as const }),
      (err: unknown) => ({ ok: false as const, err }),
    );
    try {
      const outcome = await Promise.race([handled, timedOut]);
      const ms = Math.round(performance.now() - started);
      if (outcome === 'timeout') {
        ac.abort(
          new PluginServerError(
            'HANDLER_TIMEOUT',
            `enrollment of pod ${pod} did not finish within ${this.#handlerTimeoutMs} ms`,
          ),
        );
        void handled.then((late) =>
          log.warn(
            { ok: late.ok, err: late.ok ? undefined : errorMessage(late.err) },
            'enrollment finished after the plugin was answered',
          ),
        );
        log.error({ ms }, 'enrollment timed out; plugin answered 503');
        throw new HttpFailure(
          503,
          cniErrorResult(
            request.cniVersion,
            CNI_ERROR_CODE.tryAgainLater,
            `enrollment of pod ${pod} did not finish within ${this.#handlerTimeoutMs} ms`,
          ),
        );
      }
      if (!outcome.ok) {
        const err = outcome.err;
        const retryable = err instanceof MeshError && err.retryable;
        log.error({ err, ms, retryable }, 'enrollment failed; pod ADD fails');
        throw new HttpFailure(
          500,
          cniErrorResult(
            request.cniVersion,
            retryable ? CNI_ERROR_CODE.tryAgainLater : CNI_ERROR_CODE.enrollmentFailed,
            errorMessage(err),
            errorDetails(err),
          ),
        );
      }
      log.debug({ ms }, 'cmdadd handled');
      return encodeResultForVersion(request.prevResult, request.cniVersion);
    } finally {
      clearTimeout(timer);
      this.#inflight.delete(ac);
    }
  }

  #readBody(req: IncomingMessage): Promise<string> {
    const max = this.#maxBodyBytes;
    const tooLarge = () =>
      new HttpFailure(
        413,
        cniErrorResult(
          FALLBACK_CNI_VERSION,
          CNI_ERROR_CODE.decodingFailure,
          `plugin request body exceeds ${max} bytes`,
        ),
      );
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      req.resume();
      return Promise.reject(tooLarge());
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > max) {
          req.pause();
          reject(tooLarge());
          return;
        }
        chunks.push(chunk);
      });
      req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.once('error', reject);
    });
  }

  #send(res: ServerResponse, status: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      // One request per connection: the plugin makes exactly one, and an over-long body must not
      // leave a half-read request on a kept-alive connection.
      connection: 'close',
    });
    res.end(text);
  }

  #logPluginLine(entry: PluginLogEntry): void {
    const fields = { ...entry.fields, source: 'istio-cni-plugin' };
    switch (entry.level) {
      case 'debug':
        this.#log.debug(fields, entry.msg);
        break;
      case 'warn':
      case 'warning':
        this.#log.warn(fields, entry.msg);
        break;
      case 'error':
        this.#log.error(fields, entry.msg);
        break;
      default:
        this.#log.info(fields, entry.msg);
    }
  }
}
