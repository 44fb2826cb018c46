import type { Component } from '../lifecycle.ts';

/**
 * Where configuration comes from: the Kubernetes API (informers) or a local manifests directory.
 * A source validates every object it reads and writes the valid ones into the ConfigStore it was
 * given; a malformed object is rejected alone (`ConfigStore.reject`), logged and counted, and never
 * stops the rest.
 */
export interface ConfigSource extends Component {
  /** Resolves once every kind has been listed at least once. */
  synced(): Promise<void>;
  /** Whether every kind has been listed and its watch is live. */
  readonly healthy: boolean;
}
