import { filter, mergeMap, Observable, type MonoTypeOperatorFunction } from 'rxjs';
import type { ChatFrame } from '../protocol/frames.js';
import type { MessageStore } from '../store/message-store.js';
import type { Inbound } from './types.js';

/**
 * Keeps each new message in the node's history and passes it on once its record is written; drops a
 * message the store already holds, or one older than what it holds of that sender (the per-sender
 * high-water mark that complements `dedup`'s LRU: an old message whose id left the cache is still
 * recognised), or one older than the history window.
 *
 * With a log on disk, the messages of one turn of the event loop are written together at its end
 * (or at `store.flush()`), and passed on then, in order: nothing downstream (display, relay) sees a
 * message before it would survive `kill -9`. Without a directory it passes them on at once.
 *
 * The store is the state, shared by design across subscriptions: it is the node's memory.
 * Completes with the source once its messages are passed on; errors with it at once.
 */
export function remember(store: MessageStore): MonoTypeOperatorFunction<Inbound<ChatFrame>> {
  return (source) =>
    source.pipe(
      filter(({ frame, payload, unverified }) => store.add(frame, payload, unverified !== true)),
      // One inner per new message (not per copy): it emits when the record is written, and the
      // store runs those callbacks in order, so the messages keep their order.
      mergeMap(
        (message) =>
          new Observable<Inbound<ChatFrame>>((subscriber) => {
            store.afterWrite(() => {
              subscriber.next(message);
              subscriber.complete();
            });
          }),
      ),
    );
}
