/**
 * A bare peer for the lab: run inside a lab host (`ip netns exec`, see `Lab.probe`), it connects to each
 * `host:port` given as a node of its own (a fresh identity), completes the handshake, says hello, and
 * prints one JSON line per target with the node's hello and the first peer list it sent: exactly what
 * that node tells a peer on another host. Then it says `bye` and leaves, before the node's next
 * peer-list broadcast (250 ms) can name it.
 *
 * It uses only the library's public API (the same handshake and framing the node uses) and looks at
 * the frames as they come off the wire, before any of the receiving side's filters. Each target is
 * bounded by 3 s; the process always exits.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import {
  createHandshake,
  encodeFrame,
  FrameDecoder,
  generateIdentity,
  parseFrame,
  PROTOCOL_VERSION,
  serializeFrame,
  type Frame,
  type SecureSession,
} from '../../lib/index.js';

const TARGET_TIMEOUT_MS = 3_000;

interface Result {
  target: string;
  error?: string;
  hello?: Frame;
  peers?: unknown;
}

function probe(target: string): Promise<Result> {
  const colon = target.lastIndexOf(':');
  const host = target.slice(0, colon);
  const port = Number(target.slice(colon + 1));
  const identity = generateIdentity();
  const handshake = createHandshake({ initiator: true, identity });
  const decoder = new FrameDecoder(1024 * 1024);
  let session: SecureSession | undefined;
  return new Promise((resolve) => {
    const result: Result = { target };
    const socket = connect({ host, port });
    const send = (frame: Frame): void => {
      if (session !== undefined) socket.write(encodeFrame(session.encrypt(serializeFrame(frame))));
    };
    const finish = (error?: string): void => {
      clearTimeout(timer);
      if (error !== undefined && result.peers === undefined) result.error = error;
      socket.removeAllListeners('data');
      if (!socket.destroyed) {
        send({ type: 'bye', reason: 'shutdown' });
        socket.end();
        setTimeout(() => socket.destroy(), 200).unref();
      }
      resolve(result);
    };
    const timer = setTimeout(() => finish('timed out'), TARGET_TIMEOUT_MS);
    socket.on('error', (err) => finish(err.message));
    socket.on('connect', () => {
      const first = handshake.start();
      if (first !== undefined) socket.write(encodeFrame(first));
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const raw of decoder.push(chunk)) {
          if (session === undefined) {
            const step = handshake.receive(raw);
            if (step.reply !== undefined) socket.write(encodeFrame(step.reply));
            if (step.session !== undefined) {
              session = step.session;
              // Port 9 (discard): nothing listens there, so a node that dialled us back would fail at once.
              send({
                type: 'hello',
                v: PROTOCOL_VERSION,
                id: identity.id,
                nick: `probe${randomBytes(2).toString('hex')}`,
                port: 9,
              });
            }
            continue;
          }
          const frame = parseFrame(session.decrypt(raw));
          if (frame.type === 'hello') result.hello = frame;
          else if (frame.type === 'peers') {
            result.peers = frame.peers;
            finish();
            return;
          }
        }
      } catch (err) {
        finish((err as Error).message);
      }
    });
  });
}

for (const target of process.argv.slice(2)) {
  process.stdout.write(`${JSON.stringify(await probe(target))}\n`);
}
process.exit(0);
