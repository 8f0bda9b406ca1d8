import { Observable, type OperatorFunction } from 'rxjs';
import { filterMap } from './filter-map.js';
import type { ChatFrame } from '../protocol/frames.js';
import type { Inbound, PeerRef } from './types.js';

/** A message to forward and the peers to forward it to. */
export interface Relayed {
  readonly frame: ChatFrame;
  /** Payload bytes to write, unchanged from what was received. */
  readonly payload: Buffer;
  /**
   * Ids of the peers to send it to: every connected peer but the one it came from and the peers
   * that one is connected to.
   */
  readonly to: readonly string[];
  /** Passed on from the message ({@link Inbound.unverified}): check its signature before it goes. */
  readonly unverified?: true;
}

/** What a node knows of the peers around it, for {@link relayTargets} to send fewer copies. */
export interface RelayView {
  /** This node's id. */
  readonly selfId: string;
  /** The peers that peer `id` said (its latest peer list) it is connected to, if known. */
  readonly neighboursOf: (id: string) => ReadonlySet<string> | undefined;
  /**
   * A number that changes whenever what `neighboursOf` answers may have changed. With it, the
   * targets of a message are those of the message before it when both came from the same peer (the
   * same `PeerRef` object) over the same peer list (the same array): the usual case in a burst,
   * where computing them is a walk over every peer's neighbours. Without it, each message's are
   * computed.
   */
  readonly version?: () => number;
}

/**
 * The peers a message goes on to: every one of `peers` except the peer that delivered it and the
 * peers that one said it is connected to (`PeerRef.neighbours`: they have it from it, or from
 * whoever it had it from). In a full mesh a message makes one hop.
 *
 * With `view`, a link counts only when both its ends list it (so a peer cannot stop this node from
 * relaying by claiming links), and a peer Y is also left to another neighbour of the deliverer
 * with a smaller id than this node that is connected to Y: that node most likely had the message
 * from the same deliverer and sends it to Y, so Y gets one copy instead of one from each.
 *
 * Skipping is safe only with anti-entropy behind it (the node's periodic sync): a peer list can be
 * stale, and a node can fail to relay.
 */
export function relayTargets(
  message: Inbound<ChatFrame>,
  peers: readonly string[],
  view?: RelayView,
): readonly string[] {
  const origin = message.peer;
  if (origin === null) return peers;
  const skip = origin.neighbours;
  if (skip === undefined) return peers.filter((id) => id !== origin.id);
  // With a view, a link counts only when both ends list it: a peer cannot stop this node from
  // relaying by claiming links it does not have.
  const linked = (a: string, b: string): boolean =>
    view === undefined ? skip.has(a) : skip.has(a) && view.neighboursOf(a)?.has(b) === true;
  return peers.filter((id) => {
    if (id === origin.id || linked(id, origin.id)) return false;
    const around = view?.neighboursOf(id);
    if (view === undefined || around === undefined) return true;
    for (const other of around) if (other < view.selfId && linked(other, origin.id)) return false;
    return true;
  });
}

/**
 * {@link relayTargets}, keeping its last answer for the next message from the same peer over the
 * same peer list while `view.version` stays the same (see {@link RelayView.version}).
 */
export function lastRelayTargets(
  view?: RelayView,
): (message: Inbound<ChatFrame>, peers: readonly string[]) => readonly string[] {
  let last:
    { origin: PeerRef | null; peers: readonly string[]; version: number; to: readonly string[] } | undefined;
  return (message, peers) => {
    const version = view?.version?.();
    if (
      last !== undefined &&
      version !== undefined &&
      last.version === version &&
      last.origin === message.peer &&
      last.peers === peers
    )
      return last.to;
    const to = relayTargets(message, peers, view);
    if (version !== undefined) last = { origin: message.peer, peers, version, to };
    return to;
  };
}

/**
 * Decides where each message goes: to every peer in the latest value of `peers$` except the one
 * that delivered it and the peers it is connected to, and with `view` those that another of its
 * peers covers ({@link relayTargets}). A message with nobody to go to is dropped.
 *
 * Messages arriving before `peers$` has emitted are dropped too (there is nobody to send them to);
 * pass a `BehaviorSubject`-like source. Completes and errors with the source; an error of `peers$`
 * is passed on.
 *
 * @param peers$ ids of the connected peers, the latest list standing for the current set.
 */
export function relay(
  peers$: Observable<readonly string[]>,
  view?: RelayView,
): OperatorFunction<Inbound<ChatFrame>, Relayed> {
  // The latest peer list in a variable, not withLatestFrom: that builds an array of the values (a
  // spread) for every message, and this runs per message, mostly before V8 optimises it.
  return (source) =>
    new Observable<Relayed>((subscriber) => {
      const targets = lastRelayTargets(view);
      let peers: readonly string[] | undefined;
      subscriber.add(
        peers$.subscribe({
          next: (latest) => {
            peers = latest;
          },
          error: (err: unknown) => subscriber.error(err),
        }),
      );
      if (subscriber.closed) return;
      source
        .pipe(
          filterMap((message): Relayed | undefined => {
            if (peers === undefined) return undefined;
            const to = targets(message, peers);
            if (to.length === 0) return undefined;
            // Literals, not a spread: this runs per message, mostly before V8 optimises it.
            return message.unverified === true
              ? { frame: message.frame, payload: message.payload, to, unverified: true }
              : { frame: message.frame, payload: message.payload, to };
          }),
        )
        .subscribe(subscriber);
    });
}
