import { filter, type MonoTypeOperatorFunction } from 'rxjs';
import type { ChatFrame } from '../protocol/frames.js';
import type { MessageStore } from '../store/message-store.js';
import type { Inbound } from './types.js';

/**
 * Keeps each new message in the node's history and passes it on; drops a message the store already
 * holds, or one older than what it holds of that sender (the per-sender high-water mark that
 * complements `dedup`'s LRU: an old message whose id left the cache is still recognised), or one
 * older than the history window.
 *
 * The store is the state, shared by design across subscriptions: it is the node's memory.
 * Completes and errors with the source.
 */
export function remember(store: MessageStore): MonoTypeOperatorFunction<Inbound<ChatFrame>> {
  return filter(({ frame, payload }) => store.add(frame, payload));
}
