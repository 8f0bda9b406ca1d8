/**
 * In-process micro-benchmark of the node's pipeline: frames per second through each stage (framing,
 * JSON, validation, the RxJS operators, the writer) and through the whole relay path wired the way
 * `lib/node` wires it, so the cost of each stage is known.
 *
 *   node --import tsx bench/pipeline.ts [--frames N] [--reps R] [--markdown]
 *   npm run bench -- --micro
 *
 * Everything runs in this process on synthetic frames; no socket is opened (the sockets are stand-ins
 * that discard what is written). Times are medians of `reps` repetitions after one warm-up.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { openSync, closeSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import minimist from 'minimist';
import {
  BehaviorSubject,
  filter,
  from,
  map,
  merge,
  mergeMap,
  share,
  Subject,
  type Observable,
  type Subscription,
} from 'rxjs';
import { decode, type Decoded } from '../lib/operators/decode.js';
import { dedup } from '../lib/operators/dedup.js';
import { relay } from '../lib/operators/relay.js';
import { verifySignatures } from '../lib/operators/verify.js';
import type { Inbound } from '../lib/operators/types.js';
import { encodeFrame, FrameDecoder, pack, unpack } from '../lib/protocol/codec.js';
import { encodeChat, parseFrame, serializeFrame, type ChatFrame } from '../lib/protocol/frames.js';
import { fromSocket } from '../lib/transport/from-socket.js';
import { generateIdentity, type Identity } from '../lib/security/identity.js';
import { networkTag } from '../lib/security/network-key.js';
import { createHandshake, type SecureSession } from '../lib/security/noise.js';
import {
  signChat,
  signedChatFrame,
  signedChatFrames,
  verifyChat,
  verifyBinaryChat,
  verifyChatInBatch,
} from '../lib/security/sign.js';
import { PeerWriter } from '../lib/transport/writer.js';
import { renderTable } from './report.js';

export interface MicroOptions {
  /** Distinct chat frames per repetition. Default 50,000. */
  readonly frames: number;
  readonly reps: number;
  /** Bytes of each message text. */
  readonly size: number;
  /** Peers a message is relayed to. Default 8 (the node's target degree). */
  readonly peers: number;
  /** Bytes per simulated socket read. Default 64 KiB, what a busy TCP socket hands Node. */
  readonly chunkBytes: number;
}

export const MICRO_DEFAULTS: MicroOptions = {
  frames: 50_000,
  reps: 5,
  size: 100,
  peers: 8,
  chunkBytes: 65_536,
};

export interface MicroRow {
  readonly stage: string;
  /** Nanoseconds per input frame (median over repetitions). */
  readonly ns: number;
  readonly what: string;
}

const noop = (): void => {};

/** A socket stand-in whose write side discards everything and never asks to wait. */
function nullSocket(): Socket {
  const w = new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  (w as unknown as { setNoDelay: () => void }).setNoDelay = noop;
  return w as unknown as Socket;
}

/** A socket stand-in for the read side: the test emits 'data' itself. */
function readSocket(): Socket & EventEmitter {
  const e = new EventEmitter() as Socket & EventEmitter;
  (e as unknown as { destroy: () => void }).destroy = noop;
  return e;
}

/** Lets queued microtasks (the writers' flushes) run. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function measure(reps: number, count: number, fn: () => void | Promise<void>): Promise<number> {
  await fn(); // warm-up: JIT, caches
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0));
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]! / count;
}

function chatFrames(n: number, size: number): ChatFrame[] {
  const key = randomBytes(32).toString('hex');
  const from = key.slice(0, 16);
  const ts = Date.now();
  // Shaped as the node's own (`send` in lib/node/node.ts); signing fields, when the protocol has them,
  // are well-formed but not real signatures (nothing here verifies them). Built untyped and checked
  // at run time (see runPipelineBench), so a change of the frame format is reported, not miscompiled.
  return Array.from(
    { length: n },
    (_, i) =>
      ({
        type: 'chat',
        id: randomBytes(12).toString('base64url'),
        from,
        nick: 'bench',
        ts: ts + i,
        seq: i + 1,
        key,
        sig: randomBytes(64).toString('base64url'),
        text: `m|${i}|${ts}|`.padEnd(size, 'x'),
      }) as unknown as ChatFrame,
  );
}

function chunked(stream: Buffer, chunkBytes: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let off = 0; off < stream.length; off += chunkBytes)
    chunks.push(stream.subarray(off, off + chunkBytes));
  return chunks;
}

/** The link cryptography of the secure relay path: a session per inbound link, one for sending. */
interface LinkCrypto {
  readonly rx: readonly SecureSession[];
  readonly tx: SecureSession;
  readonly network: Uint8Array;
}

/** Chat frames signed for real by `author` in the public network, as `send` builds them. */
function signedFrames(n: number, size: number, author: Identity, network: Uint8Array): ChatFrame[] {
  const ts = Date.now();
  return Array.from({ length: n }, (_, i) =>
    signedChatFrame(
      author,
      {
        id: randomBytes(12).toString('base64url'),
        nick: 'bench',
        ts: ts + i,
        seq: i + 1,
        text: `m|${i}|${ts}|`.padEnd(size, 'x'),
      },
      network,
    ),
  );
}

/** Both ends of one Noise session, run in memory: what one side encrypts the other decrypts. */
function sessionPair(): { tx: SecureSession; rx: SecureSession } {
  const initiator = createHandshake({ initiator: true, identity: generateIdentity() });
  const responder = createHandshake({ initiator: false, identity: generateIdentity() });
  // XX: -> e; <- e, ee, s, es; -> s, se.
  const second = responder.receive(initiator.start()!).reply!;
  const third = initiator.receive(second);
  const last = responder.receive(third.reply!);
  return { tx: third.session!, rx: last.session! };
}

/**
 * The relay path of a node, wired as `lib/node/node.ts` does: per connection fromSocket → decode →
 * (session: hello check, frame switch) → merge → dedup → share → relay(peerIds) → per-peer outbox
 * Subject → PeerWriter; and messages$ (filter, map to a ChatMessage) → the --json console's
 * JSON.stringify. Returns the sockets to feed and a way to tear it down.
 */
function nodeLikePipeline(
  inputs: number,
  peers: number,
  security?: LinkCrypto,
): { sockets: (Socket & EventEmitter)[]; stop: () => void } {
  const sockets = Array.from({ length: inputs }, readSocket);
  const peerIds = Array.from({ length: peers }, (_, i) => `peer${i}`);
  const outboxes = peerIds.map(() => new Subject<Buffer>());
  const subs: Subscription[] = outboxes.map((o) =>
    (security === undefined ? o : o.pipe(map((payload) => security.tx.encrypt(payload)))).subscribe(
      new PeerWriter(nullSocket(), noop),
    ),
  );
  const connections$ = from(sockets.map((socket, i) => ({ socket, i, id: peerIds[i % peers]! })));
  const inbound$: Observable<Inbound> = connections$.pipe(
    mergeMap(({ socket, i, id }) =>
      fromSocket(socket, new FrameDecoder()).pipe(
        map((raw) => (security === undefined ? raw : security.rx[i]!.decrypt(raw))),
        decode(),
        mergeMap(({ frame, payload }: Decoded): Inbound[] => {
          switch (frame.type) {
            case 'chat':
            case 'peers':
              return [{ peer: { id, host: '127.0.0.1' }, frame, payload }];
            default:
              return [];
          }
        }),
      ),
    ),
    share(),
  );
  const local$ = new Subject<Inbound<ChatFrame>>();
  const chat$ = merge(
    local$,
    inbound$.pipe(filter((m): m is Inbound<ChatFrame> => m.frame.type === 'chat')),
  ).pipe(
    dedup({ key: (m: Inbound<ChatFrame>) => m.frame.id, time: (m) => m.frame.ts }),
    security === undefined
      ? (m$: Observable<Inbound<ChatFrame>>) => m$
      : verifySignatures({ network: security.network }),
    share(),
  );
  const byId = new Map(peerIds.map((id, i) => [id, outboxes[i]!]));
  const ids$ = new BehaviorSubject<readonly string[]>(peerIds);
  subs.push(
    chat$.pipe(relay(ids$)).subscribe(({ payload, to }) => {
      for (const id of to) byId.get(id)?.next(payload);
    }),
  );
  let sink = 0;
  subs.push(
    chat$
      .pipe(
        filter((m) => m.peer !== null),
        map(({ frame }) => ({
          id: frame.id,
          from: frame.from,
          nick: frame.nick,
          ts: frame.ts,
          text: frame.text,
        })),
        share(),
      )
      .subscribe((m) => {
        sink += JSON.stringify({
          event: 'message',
          id: m.id,
          from: m.from,
          nick: m.nick,
          text: m.text,
          ts: m.ts,
        }).length;
      }),
  );
  return {
    sockets,
    stop: () => {
      for (const s of subs) s.unsubscribe();
      if (sink < 0) throw new Error('unreachable');
    },
  };
}

/** Runs every stage and returns ns per frame for each. */
export async function runPipelineBench(o: MicroOptions = MICRO_DEFAULTS): Promise<MicroRow[]> {
  const K = o.frames;
  const frames = chatFrames(K, o.size);
  const payloads = frames.map((f) => serializeFrame(f));
  const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
  const chunks = chunked(stream, o.chunkBytes);
  const strings = payloads.map((p) => p.toString('utf8'));
  const inbounds: Inbound<ChatFrame>[] = frames.map((frame, i) => ({
    peer: { id: 'peer0', host: '127.0.0.1' },
    frame,
    payload: payloads[i]!,
  }));
  const tripled = inbounds.flatMap((m) => [m, m, m]);
  const peerIds = Array.from({ length: o.peers }, (_, i) => `peer${i}`);
  try {
    parseFrame(payloads[0]!);
  } catch (err) {
    throw new Error(
      `bench/pipeline.ts builds chat frames that parseFrame refuses (${(err as Error).message}): ` +
        'the frame format changed; update chatFrames()',
      { cause: err },
    );
  }
  const rows: MicroRow[] = [];
  const add = async (stage: string, what: string, count: number, fn: () => void | Promise<void>) => {
    rows.push({ stage, what, ns: await measure(o.reps, count, fn) });
  };
  let sink = 0;

  await add('framing: FrameDecoder.push', `${o.chunkBytes / 1024} KiB chunks -> payloads`, K, () => {
    const decoder = new FrameDecoder();
    const out: Buffer[] = [];
    for (const chunk of chunks) {
      out.length = 0;
      decoder.push(chunk, out);
      sink += out.length;
    }
  });
  await add('payload.toString(utf8)', 'bytes -> string', K, () => {
    for (const p of payloads) sink += p.toString('utf8').length;
  });
  await add('JSON.parse(string)', 'floor of any JSON protocol', K, () => {
    for (const s of strings) sink += (JSON.parse(s) as { ts: number }).ts;
  });
  await add('parseFrame', 'toString + JSON.parse + validation (regex on ids)', K, () => {
    for (const p of payloads) sink += (parseFrame(p) as ChatFrame).ts;
  });
  await add('serializeFrame', 'JSON.stringify + Buffer.from (sending)', K, () => {
    for (const f of frames) sink += serializeFrame(f).length;
  });
  const binaryPayloads = frames.map((f) => encodeChat(f));
  await add('parseFrame, binary', 'a chat frame in the binary encoding (encodeChat)', K, () => {
    for (const p of binaryPayloads) sink += (parseFrame(p) as ChatFrame).ts;
  });
  await add('encodeChat', 'the binary encoding (sending)', K, () => {
    for (const f of frames) sink += encodeChat(f).length;
  });
  await add('--json event: JSON.stringify', 'the console line of one message', K, () => {
    for (const f of frames) {
      sink += JSON.stringify({
        event: 'message',
        id: f.id,
        from: f.from,
        nick: f.nick,
        text: f.text,
        ts: f.ts,
      }).length;
    }
  });
  const fd = openSync('/dev/null', 'w');
  const line = `${JSON.stringify({ event: 'message', ...frames[0] })}\n`;
  await add('write() of one line (/dev/null)', 'syscall floor of one stdout write per event', K, () => {
    for (let i = 0; i < K; i++) sink += writeSync(fd, line);
  });
  closeSync(fd);
  await add('rxjs: from(array).pipe(map)', 'floor of one operator per value', K, () => {
    from(frames)
      .pipe(map((f) => f.ts))
      .subscribe((v) => (sink += v));
  });
  await add('decode()', 'operator: parseFrame per payload', K, () => {
    from(payloads)
      .pipe(decode())
      .subscribe(() => sink++);
  });
  await add('dedup, all new', 'operator: timestamp gate + LRU get/set', K, () => {
    from(inbounds)
      .pipe(dedup({ key: (m) => m.frame.id, time: (m) => m.frame.ts }))
      .subscribe(() => sink++);
  });
  await add('dedup, each id 3x', 'per arrival; 2 of 3 dropped (a degree-3 node)', 3 * K, () => {
    from(tripled)
      .pipe(dedup({ key: (m) => m.frame.id, time: (m) => m.frame.ts }))
      .subscribe(() => sink++);
  });
  await add(`relay(peers$), ${o.peers} peers`, 'operator: withLatestFrom + filter the origin out', K, () => {
    from(inbounds)
      .pipe(relay(new BehaviorSubject<readonly string[]>(peerIds)))
      .subscribe((r) => (sink += r.to.length));
  });
  await add(
    'outbox Subject + PeerWriter, 1 peer',
    'per payload queued; batched into one write per turn',
    K,
    async () => {
      const outbox = new Subject<Buffer>();
      const sub = outbox.subscribe(new PeerWriter(nullSocket(), noop));
      const perChunk = Math.ceil(K / chunks.length);
      for (let i = 0; i < K; i++) {
        outbox.next(payloads[i]!);
        if (i % perChunk === perChunk - 1) await tick();
      }
      await tick();
      sub.unsubscribe();
    },
  );
  await add(
    `node-like relay path, 1 link in, ${o.peers} out`,
    'fromSocket -> decode -> dedup -> relay -> writers + --json line (each message new)',
    K,
    async () => {
      const p = nodeLikePipeline(1, o.peers);
      for (const chunk of chunks) {
        p.sockets[0]!.emit('data', chunk);
        await tick();
      }
      p.stop();
    },
  );
  await add(
    'node-like relay path, 3 links in',
    'the same stream arriving on 3 links (per arrival: 1 new, 2 duplicates)',
    3 * K,
    async () => {
      const p = nodeLikePipeline(3, o.peers);
      for (const chunk of chunks) {
        for (const socket of p.sockets) socket.emit('data', chunk);
        await tick();
      }
      p.stop();
    },
  );
  // Security: each stage per message, then the relay path with all of it on. Real signatures are
  // slow to make, so these rows use fewer frames (the per-frame figures are what count).
  const S = Math.min(K, 10_000);
  const author = generateIdentity();
  const network = networkTag();
  const signed = signedFrames(S, o.size, author, network);
  const signedPayloads = signed.map((f) => serializeFrame(f));
  const fields = signed.map((f) => ({ id: f.id, nick: f.nick, ts: f.ts, seq: f.seq, text: f.text }));
  const withKeys = fields.map((f) => ({ ...f, publicKey: author.publicKey }));
  const sigs = signed.map((f) => Buffer.from(f.sig, 'base64url'));
  await add('signChat (Ed25519, node:crypto)', 'the sender, once per message', S, () => {
    for (const f of fields) sink += signChat(author, f, network).length;
  });
  await add('verifyChat (Ed25519, libsodium)', 'every node, once per message', S, () => {
    for (let i = 0; i < S; i++) sink += verifyChat(withKeys[i]!, sigs[i]!, network) ? 1 : 0;
  });
  // A paste or a burst from stdin: one signature per batch (lib/security/sign.ts).
  const BATCH = 256;
  const batches = Array.from({ length: Math.ceil(S / BATCH) }, (_, b) =>
    fields.slice(b * BATCH, (b + 1) * BATCH),
  );
  await add(
    `signedChatFrames, batches of ${BATCH}`,
    'the sender, per message: hash tree + 1 signature per batch',
    S,
    () => {
      for (const batch of batches) sink += signedChatFrames(author, batch, network).length;
    },
  );
  const batched = batches.flatMap((batch) => signedChatFrames(author, batch, network));
  const batchedPayloads = batched.map((f) => serializeFrame(f));
  await add(
    `verifyChatInBatch, batches of ${BATCH}`,
    'every node, per message: its path (8 hashes), 1 Ed25519 per batch',
    S,
    () => {
      const cache = new Map<string, string>();
      for (let i = 0; i < S; i++) {
        const f = batched[i]!;
        sink += verifyChatInBatch(withKeys[i]!, f.proof!, Buffer.from(f.sig, 'base64url'), network, cache)
          ? 1
          : 0;
      }
    },
  );
  const batchedBinary = batched.map((f) => encodeChat(f));
  await add(
    `verifyBinaryChat, batches of ${BATCH}`,
    'the same, over the bytes of binary frames (nothing decoded)',
    S,
    () => {
      const cache = new Map<string, string>();
      for (const p of batchedBinary) sink += verifyBinaryChat(p, network, cache) ? 1 : 0;
    },
  );
  const pair = sessionPair();
  await add('encrypt + decrypt (ChaCha20-Poly1305)', 'one frame over one link, both ends', S, () => {
    for (const p of signedPayloads) sink += pair.rx.decrypt(pair.tx.encrypt(p)).length;
  });
  await add('encrypt + decrypt, packs of 64', 'frames sealed 64 to a message (a burst), both ends', S, () => {
    for (let i = 0; i < signedPayloads.length; i += 64) {
      sink += unpack(pair.rx.decrypt(pair.tx.encrypt(pack(signedPayloads.slice(i, i + 64))))).length;
    }
  });
  // Fresh sessions and their encrypted stream for every repetition (nonces only go forward).
  const securePath = async (stage: string, what: string, payloads: readonly Buffer[]): Promise<void> => {
    const secureRuns = Array.from({ length: o.reps + 1 }, () => {
      const { tx, rx } = sessionPair();
      const stream = Buffer.concat(payloads.map((p) => encodeFrame(tx.encrypt(p))));
      return { rx, chunks: chunked(stream, o.chunkBytes) };
    });
    let run = 0;
    await add(stage, what, S, async () => {
      const { rx, chunks: secureChunks } = secureRuns[run++ % secureRuns.length]!;
      const p = nodeLikePipeline(1, o.peers, { rx: [rx], tx: sessionPair().tx, network });
      for (const chunk of secureChunks) {
        p.sockets[0]!.emit('data', chunk);
        await tick();
      }
      p.stop();
    });
  };
  await securePath(
    `secure relay path, 1 link in, ${o.peers} out`,
    'as above + decrypt -> verify -> encrypt per peer (each message new, signed alone)',
    signedPayloads,
  );
  await securePath(
    `secure relay path, batches of ${BATCH}`,
    'the same, messages signed in batches (a paste, a burst)',
    batchedPayloads,
  );
  await securePath(
    `secure relay path, batches of ${BATCH}, binary`,
    'the same, chat frames in the binary encoding',
    batchedBinary,
  );
  if (sink === -1) throw new Error('unreachable'); // keeps the work observable to the JIT
  return rows;
}

/** The micro-benchmark's table. */
export function renderMicro(rows: readonly MicroRow[], o: MicroOptions, markdown: boolean): string {
  const header = `${o.frames.toLocaleString('en-US')} chat frames of ${o.size} B text, median of ${o.reps} reps, Node ${process.version}`;
  const body = renderTable(
    ['stage', 'ns/frame', 'frames/s', 'what'],
    rows.map((r) => [
      r.stage,
      Math.round(r.ns).toLocaleString('en-US'),
      Math.round(1e9 / r.ns).toLocaleString('en-US'),
      r.what,
    ]),
    markdown,
  );
  return `${markdown ? `**Pipeline micro-benchmark** (${header})` : `== Pipeline micro-benchmark (${header})`}\n\n${body}\n`;
}

async function cli(): Promise<void> {
  const a = minimist(process.argv.slice(2), { boolean: ['markdown'] });
  const o: MicroOptions = {
    ...MICRO_DEFAULTS,
    frames: Number(a['frames'] ?? MICRO_DEFAULTS.frames),
    reps: Number(a['reps'] ?? MICRO_DEFAULTS.reps),
  };
  const rows = await runPipelineBench(o);
  process.stdout.write(renderMicro(rows, o, a['markdown'] === true));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await cli();
