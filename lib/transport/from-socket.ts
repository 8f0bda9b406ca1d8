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
    // Frame by frame: the subscriber may change the decoder's limit while it handles one (a
    // handshake's last message), and the frames after it in the same read are held to the new one.
    const onData = (chunk: Buffer): void => {
      decoder.append(chunk);
      while (!subscriber.closed) {
        let frame: Buffer | undefined;
        try {
          frame = decoder.nextFrame();
        } catch (err) {
          subscriber.error(err); // the frames before the bad one were passed on
          return;
        }
        if (frame === undefined) return;
        subscriber.next(frame);
      }
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
