import { filter, map, withLatestFrom, type Observable, type OperatorFunction, pipe } from 'rxjs';
import type { ChatFrame } from '../protocol/frames.js';
import type { Inbound } from './types.js';

/** A message to forward and the peers to forward it to. */
export interface Relayed {
  readonly frame: ChatFrame;
  /** Payload bytes to write, unchanged from what was received. */
  readonly payload: Buffer;
  /** Ids of the peers to send it to: every connected peer but the one it came from. */
  readonly to: readonly string[];
}

/**
 * Decides where each message goes: to every peer in the latest value of `peers$` except the one
 * that delivered it. A message with nobody to go to is dropped.
 *
 * Messages arriving before `peers$` has emitted are dropped too (there is nobody to send them to);
 * pass a `BehaviorSubject`-like source. Completes and errors with the source; an error of `peers$`
 * is passed on.
 *
 * @param peers$ ids of the connected peers, the latest list standing for the current set.
 */
export function relay(peers$: Observable<readonly string[]>): OperatorFunction<Inbound<ChatFrame>, Relayed> {
  return pipe(
    withLatestFrom(peers$),
    map(([{ peer, frame, payload }, peers]): Relayed => {
      const origin = peer?.id;
      return { frame, payload, to: origin === undefined ? peers : peers.filter((id) => id !== origin) };
    }),
    filter((relayed) => relayed.to.length > 0),
  );
}
