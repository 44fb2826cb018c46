/**
 * Where a local mesh keeps its files under its state directory. The manifests directory is the
 * mesh's API server: istiod and every istio-cni agent read it, the pod runner writes it.
 *
 * ```
 * <stateDir>/
 *   manifests/                 Namespaces, Pods, Services, policies (one file per object)
 *   istiod/                    istiod's LOCAL_DATA_DIR: CA root, root-cert.pem, tokens.yaml
 *   nodes/<node>/cni/          the node's istio-cni run dir (plugin socket, pod cache, state file)
 *   nodes/<node>/ztunnel.sock  the node's ZDS socket (agent listens, ztunnel connects)
 *   logs/istiod.log, logs/<component>-<node>.log, logs/pods/<namespace>_<pod>.log
 * ```
 */
import { join } from 'node:path';

/** The longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;

export class MeshLayout {
  readonly stateDir: string;
  readonly manifestsDir: string;
  readonly istiodDir: string;
  readonly tokenFile: string;
  /** Where istiod publishes its root (ROOT_CERT_FILE's default under LOCAL_DATA_DIR). */
  readonly rootCertPath: string;
  readonly logsDir: string;
  readonly podLogsDir: string;

  constructor(stateDir: string) {
    this.stateDir = stateDir;
    this.manifestsDir = join(stateDir, 'manifests');
    this.istiodDir = join(stateDir, 'istiod');
    this.tokenFile = join(this.istiodDir, 'tokens.yaml');
    this.rootCertPath = join(this.istiodDir, 'root-cert.pem');
    this.logsDir = join(stateDir, 'logs');
    this.podLogsDir = join(this.logsDir, 'pods');
  }

  /** What `up` creates and `down` removes again (logs stay for `ambientctl logs` after a failure). */
  get runtimeDirs(): readonly string[] {
    return [this.manifestsDir, this.istiodDir, join(this.stateDir, 'nodes')];
  }

  nodeDir(node: string): string {
    return join(this.stateDir, 'nodes', node);
  }

  cniRunDir(node: string): string {
    return join(this.nodeDir(node), 'cni');
  }

  ztunnelSocket(node: string): string {
    return join(this.nodeDir(node), 'ztunnel.sock');
  }

  componentLog(component: string, node: string | undefined): string {
    return join(this.logsDir, node === undefined ? `${component}.log` : `${component}-${node}.log`);
  }

  podLog(namespace: string, name: string): string {
    return join(this.podLogsDir, `${namespace}_${name}.log`);
  }

  /** Socket paths of a node that must fit in sun_path; the longest decides. */
  socketPaths(node: string): string[] {
    return [this.ztunnelSocket(node), join(this.cniRunDir(node), 'pluginevent.sock')];
  }

  /** The first socket path that is too long for a unix socket, if any. */
  tooLongSocketPath(nodes: readonly string[]): string | undefined {
    return nodes.flatMap((n) => this.socketPaths(n)).find((p) => Buffer.byteLength(p) > MAX_SOCKET_PATH);
  }
}
