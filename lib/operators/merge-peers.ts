import { defer, mergeMap, type OperatorFunction } from 'rxjs';
import { boundedLru } from '../util/lru.js';
import { isLoopback, isUnspecified, parseAddress, formatAddress, AddressError } from '../protocol/address.js';
import type { PeerEntry, PeersFrame } from '../protocol/frames.js';
import type { Inbound } from './types.js';

/** Options of {@link mergePeers}. */
export interface MergePeersOptions {
  /** This node's id: entries naming it are skipped. */
  readonly selfId: string;
  /** Most nodes remembered. Default 1,000: far more than a chat needs, small enough to bound memory. */
  readonly max?: number;
  /**
   * How long an entry emitted stays known (ms): a node named again at the same address after that
   * is emitted again, so a receiver that gave up on an address (it was unreachable, or full) hears of
   * it once more. Default: for ever.
   */
  readonly rememberMs?: number;
  /** The clock for `rememberMs` (ms). Default `Date.now`. */
  readonly now?: () => number;
}

/**
 * Merges the peer lists that neighbours send into a table of known nodes, and emits each entry that
 * is new (a node not known before, or known at another address).
 *
 * Entries are skipped when they name this node, advertise an unspecified address (`0.0.0.0`, `::`),
 * do not parse as `host:port`, or carry a loopback address received from a peer that is not itself on
 * loopback (that address would point at this host, not at the node it names). The table is an LRU of
 * `max` entries, per subscription; an entry is emitted again once `rememberMs` has passed. Completes
 * and errors with the source.
 * @throws {RangeError} at call time for a non-positive `max` or `rememberMs`.
 */
export function mergePeers(options: MergePeersOptions): OperatorFunction<Inbound<PeersFrame>, PeerEntry> {
  const max = options.max ?? 1000;
  if (!Number.isInteger(max) || max < 1)
    throw new RangeError(`mergePeers: max must be a positive integer, got ${max}`);
  const { selfId, rememberMs = Infinity, now = Date.now } = options;
  if (!(rememberMs > 0)) throw new RangeError(`mergePeers: rememberMs must be positive, got ${rememberMs}`);
  return (source) =>
    defer(() => {
      // Per node: the address it was emitted at, and when.
      const known = boundedLru<string, { readonly addr: string; readonly at: number }>(max);
      return source.pipe(
        mergeMap(({ peer, frame }) => {
          const fresh: PeerEntry[] = [];
          for (const entry of frame.peers) {
            if (entry.id === selfId) continue;
            let addr: string;
            try {
              const parsed = parseAddress(entry.addr);
              if (isUnspecified(parsed.host)) continue;
              if (isLoopback(parsed.host) && peer !== null && !isLoopback(peer.host)) continue;
              addr = formatAddress(parsed);
            } catch (err) {
              if (err instanceof AddressError) continue;
              throw err;
            }
            const at = now();
            const seen = known.get(entry.id);
            if (seen !== undefined && seen.addr === addr && at - seen.at < rememberMs) continue;
            known.set(entry.id, { addr, at });
            fresh.push({ id: entry.id, addr });
          }
          return fresh;
        }),
      );
    });
}
