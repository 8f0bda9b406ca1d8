import { map, type OperatorFunction } from 'rxjs';
import { parseFrame, type BinaryChatLayout, type Frame } from '../protocol/frames.js';

/** A frame payload and the frame it holds. */
export interface Decoded {
  readonly frame: Frame;
  readonly payload: Buffer;
  /** For a binary chat frame, where its parts lie in `payload` (`binaryChatLayout`), when read. */
  readonly layout?: BinaryChatLayout | undefined;
}

/**
 * Parses each frame payload (UTF-8 JSON, or a binary chat frame) into a validated {@link Frame},
 * keeping the payload bytes.
 *
 * Errors with a `ProtocolError` (`ERR_BAD_JSON`, `ERR_BAD_FRAME`, `ERR_UNKNOWN_TYPE`,
 * `ERR_PROTOCOL_VERSION`) at the first payload that is not a valid frame: a peer that sends one has
 * broken the protocol, so its stream ends there. Apply it per connection, before merging.
 * Completes when the source completes.
 *
 * @example
 * fromSocket(socket).pipe(decode()).subscribe(({ frame }) => console.log(frame.type));
 */
export function decode(): OperatorFunction<Buffer, Decoded> {
  return map((payload) => ({ frame: parseFrame(payload), payload }));
}
