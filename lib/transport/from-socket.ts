import type { Socket } from 'node:net';
import { Observable } from 'rxjs';
import { FrameDecoder } from '../protocol/codec.js';
import { ProtocolError } from '../protocol/errors.js';

/**
 * Wraps a socket's read side as an Observable of frame payloads (the length prefix removed).
 *
 * Completes when the peer ends the stream at a frame boundary or the socket closes; errors with a
 * `ProtocolError` (`ERR_FRAME_TOO_LARGE`, `ERR_EMPTY_FRAME`, `ERR_UNEXPECTED_EOF`) or the socket's
 * own error (`ECONNRESET`, ...). Unsubscribing destroys the socket. This is the only code that
 * listens to a socket's read events.
 */
export function fromSocket(socket: Socket, decoder: FrameDecoder = new FrameDecoder()): Observable<Buffer> {
  return new Observable<Buffer>((subscriber) => {
    const onData = (chunk: Buffer): void => {
      const frames: Buffer[] = [];
      let failure: unknown;
      try {
        decoder.push(chunk, frames);
      } catch (err) {
        failure = err; // the frames before the bad one still count
      }
      for (const frame of frames) {
        if (subscriber.closed) return;
        subscriber.next(frame);
      }
      if (failure !== undefined) subscriber.error(failure);
    };
    const onEnd = (): void => {
      if (decoder.bufferedBytes === 0) subscriber.complete();
      else {
        subscriber.error(
          new ProtocolError(
            'ERR_UNEXPECTED_EOF',
            `stream ended inside a frame (${decoder.bufferedBytes} bytes pending)`,
          ),
        );
      }
    };
    const onError = (err: Error): void => subscriber.error(err);
    const onClose = (): void => subscriber.complete();
    socket.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
    return () => {
      socket.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      socket.on('error', ignore); // a late 'error' after teardown must not crash the process
      socket.destroy();
    };
  });
}

function ignore(): void {}
