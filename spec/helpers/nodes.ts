/**
 * Helpers of the real-socket specs (spec/transport, spec/node): loopback socket pairs, nodes with short
 * timers that are always closed, a bounded polling wait, recorders for hot streams, and a raw peer
 * that speaks the wire protocol by hand (Noise handshake included).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import type { Observable } from 'rxjs';
import {
  createNode,
  type NodeEvent,
  type NodeOptions,
  type NodeTiming,
  type P2PNode,
} from '../../lib/node/node.js';
import type { Logger } from '../../lib/node/log.js';
import type { Address } from '../../lib/protocol/address.js';
import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  isPack,
  pack,
  unpack,
} from '../../lib/protocol/codec.js';
import {
  isBinaryChat,
  parseFrame,
  PROTOCOL_VERSION,
  serializeFrame,
  type ChatFrame,
  type Frame,
  type HelloFrame,
  type SyncFrame,
} from '../../lib/protocol/frames.js';
import { networkTag } from '../../lib/security/network-key.js';
import { signedChatFrame } from '../../lib/security/sign.js';
import { TAG_BYTES } from '../../lib/security/cipher.js';
import { generateIdentity, type Identity } from '../../lib/security/identity.js';
import { createHandshake, type SecureSession } from '../../lib/security/noise.js';

export const HOST = '127.0.0.1';

/** Timers short enough for tests, long enough for a loaded CI machine. */
export const FAST_TIMING: NodeTiming = {
  // A loaded 2-core machine can stall an event loop for hundreds of ms: a timeout near that makes
  // healthy links flap and the tests flaky.
  pingIntervalMs: 250,
  peerTimeoutMs: 1500,
  helloTimeoutMs: 1500,
  connectTimeoutMs: 1000,
  peerListDelayMs: 20,
  backoff: { baseMs: 20, maxMs: 200 },
};

/** `127.0.0.1:port` as an {@link Address}. */
export const loopback = (port: number): Address => ({ host: HOST, port });

/**
 * Polls `predicate` every few milliseconds until it holds; rejects after `timeoutMs` naming `what`.
 * The only way these specs wait: never a fixed sleep.
 */
export async function waitFor(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Resolves on the next turn of the event loop, after pending I/O callbacks. */
export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A port that was free a moment ago: listen on port 0, read the port, close. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** Resolves when `socket` has closed (at once if it already has). */
export function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed && !socket.connecting) resolve();
    else socket.once('close', () => resolve());
  });
}

/** Two ends of one TCP connection on loopback: `client` dialled `server`'s listener. */
export interface SocketPair {
  readonly client: Socket;
  readonly server: Socket;
}

/**
 * Opens a loopback TCP connection through a listener on port 0. The listener and both sockets are
 * destroyed after the test `t`, whatever its outcome.
 */
export async function socketPair(t: TestContext): Promise<SocketPair> {
  const listener: Server = createServer();
  await new Promise<void>((resolve) => listener.listen(0, HOST, resolve));
  const address = listener.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const client = connect({ host: HOST, port: address.port });
  await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
  const server = await accepted;
  t.after(async () => {
    for (const socket of [client, server]) {
      socket.on('error', () => {}); // a reset during teardown is expected
      socket.destroy();
    }
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  });
  return { client, server };
}

/**
 * Listeners that accept and never answer the handshake (nodes that hang: each dial of them stays
 * open until the node gives up). What they read is ignored, so the node's close is seen.
 */
export interface DeadEnds {
  /** Their addresses, `127.0.0.1:port`. */
  readonly addresses: string[];
  /** Connections accepted so far, over all of them. */
  readonly accepted: () => number;
  /** Most connections open at the same time, over all of them. */
  readonly peak: () => number;
  /** Listeners that received at least one connection. */
  readonly reached: () => number;
}

/** Starts `n` {@link DeadEnds}, closed (with their connections) after the test. */
export async function deadEnds(t: TestContext, n = 1): Promise<DeadEnds> {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const reached = new Set<number>();
  let accepted = 0;
  let peak = 0;
  for (let i = 0; i < n; i++) {
    const server = createServer((socket) => {
      sockets.add(socket);
      accepted++;
      reached.add(i);
      peak = Math.max(peak, sockets.size);
      socket.on('error', () => {});
      socket.resume(); // read (and ignore) what comes, so the node's close is seen
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
    servers.push(server);
  }
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });
  const addresses = servers.map((s) => {
    const a = s.address();
    if (typeof a !== 'object' || a === null) throw new Error('no port');
    return `${HOST}:${a.port}`;
  });
  return { addresses, accepted: () => accepted, peak: () => peak, reached: () => reached.size };
}

/**
 * Listens on `port` (on 127.0.0.1) from now on, closing each connection at once; returns the count of
 * connections so far. Closed after the test.
 */
export async function listenOn(t: TestContext, port: number): Promise<() => number> {
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.on('error', () => {});
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(port, HOST, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return () => accepted;
}

/** Timers set with the global `setTimeout` since {@link liveTimers}, not yet cleared and not fired. */
export interface LiveTimers {
  /** How many of them were set with a delay of `delayMs`. */
  count(delayMs: number): number;
}

/**
 * Tracks the timers that code sets with the global `setTimeout` (as lib/ does) until the test ends,
 * so a spec can tell a timer that outlives what it was for. Unref'd timers included, which
 * `process.getActiveResourcesInfo()` leaves out. Tests of one file run one at a time, so the
 * process-wide patch sees only the running test's timers.
 */
export function liveTimers(t: TestContext): LiveTimers {
  const live = new Map<NodeJS.Timeout, number>();
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const tracked = (callback: (...args: unknown[]) => void, delayMs?: number, ...args: unknown[]) => {
    const timer: NodeJS.Timeout = realSet(
      (...given: unknown[]) => {
        live.delete(timer);
        callback(...given);
      },
      delayMs,
      ...args,
    );
    live.set(timer, delayMs ?? 0);
    return timer;
  };
  // The patched pair has setTimeout's call signature; its __promisify__ is the original's.
  globalThis.setTimeout = Object.assign(tracked, {
    __promisify__: realSet.__promisify__,
  }) as typeof setTimeout;
  globalThis.clearTimeout = (timer?: string | number | NodeJS.Timeout) => {
    if (typeof timer === 'object') live.delete(timer);
    realClear(timer);
  };
  t.after(() => {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
  });
  return { count: (delayMs) => [...live.values()].filter((d) => d === delayMs).length };
}

/** A TCP forwarder's port, and its switch to stop it the way a host that vanished stops. */
export interface Forwarder {
  readonly port: number;
  /**
   * From now on nothing is forwarded and nothing closed, either way (both ends hear silence), or
   * with `'back'` only what comes back from the port (the way a one-way fault looks).
   */
  freeze(which?: 'both' | 'back'): void;
}

/**
 * A TCP forwarder on a loopback port of its own: each connection to it is piped to `127.0.0.1:port`.
 * Two addresses that lead to one node. What comes back from `port` is held `delayBackMs` first (the
 * other way is not delayed). Closed, with every socket it opened, after the test `t`.
 */
export async function forwarder(t: TestContext, port: number, delayBackMs = 0): Promise<Forwarder> {
  const sockets: Socket[] = [];
  let frozen = false;
  let backFrozen = false;
  const server: Server = createServer((inbound) => {
    const outbound = connect({ host: HOST, port });
    sockets.push(inbound, outbound);
    for (const [from, to, delay] of [
      [inbound, outbound, 0],
      [outbound, inbound, delayBackMs],
    ] as const) {
      const stopped = (): boolean => frozen || (from === outbound && backFrozen);
      const pass = (act: () => void): void => {
        if (stopped()) return;
        if (delay === 0) act();
        else setTimeout(() => stopped() || act(), delay);
      };
      from.on('error', () => pass(() => to.destroy()));
      from.on('close', () => pass(() => to.destroy()));
      from.on('data', (chunk: Buffer) => pass(() => to.write(chunk)));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as { port: number }).port,
    freeze: (which = 'both') => void (which === 'both' ? (frozen = true) : (backFrozen = true)),
  };
}

/** Everything a hot Observable emitted since {@link record} subscribed, when, and how it ended. */
export interface Recording<T> {
  readonly values: T[];
  /** `Date.now()` at each value, in step with `values`. */
  readonly at: number[];
  readonly completed: boolean;
  readonly error: unknown;
}

/** The peer-down events of a node's recorded `events$`. */
export const downs = (events: Recording<NodeEvent>): Array<NodeEvent & { type: 'peer-down' }> =>
  events.values.filter((e): e is NodeEvent & { type: 'peer-down' } => e.type === 'peer-down');

/** The peer-up events of a node's recorded `events$`. */
export const ups = (events: Recording<NodeEvent>): Array<NodeEvent & { type: 'peer-up' }> =>
  events.values.filter((e): e is NodeEvent & { type: 'peer-up' } => e.type === 'peer-up');

/** Subscribes to `source$` and records what it emits; the subscription lives as long as the source. */
export function record<T>(source$: Observable<T>): Recording<T> {
  const state: { values: T[]; at: number[]; completed: boolean; error: unknown } = {
    values: [],
    at: [],
    completed: false,
    error: undefined,
  };
  source$.subscribe({
    next: (value) => {
      state.values.push(value);
      state.at.push(Date.now());
    },
    error: (err: unknown) => (state.error = err),
    complete: () => (state.completed = true),
  });
  return state;
}

/** A logger that keeps every line, level included (`debug: connected to ...`), and when it came. */
export interface LineLogger extends Logger {
  readonly lines: string[];
  /** Lines containing `text`. */
  count(text: string): number;
  /** `Date.now()` at each line containing `text`. */
  times(text: string): number[];
}

export function lineLogger(): LineLogger {
  const lines: string[] = [];
  const at: number[] = [];
  const add = (line: string): void => {
    lines.push(line);
    at.push(Date.now());
  };
  const times = (text: string): number[] => at.filter((_, i) => lines[i]!.includes(text));
  return {
    lines,
    count: (text) => times(text).length,
    times,
    error: (line) => add(`error: ${line}`),
    warn: (line) => add(`warn: ${line}`),
    info: (line) => add(`info: ${line}`),
    debug: (line) => add(`debug: ${line}`),
  };
}

/**
 * Starts nodes on 127.0.0.1:0 with {@link FAST_TIMING} and closes every one of them after the test `t`,
 * even when it fails.
 */
export function nodeFactory(t: TestContext): (options?: NodeOptions) => Promise<P2PNode> {
  const nodes: P2PNode[] = [];
  t.after(() => Promise.all(nodes.map((node) => node.close())));
  return async (options = {}) => {
    const node = await createNode({
      port: 0,
      host: HOST,
      ...options,
      timing: { ...FAST_TIMING, ...options.timing },
    });
    nodes.push(node);
    return node;
  };
}

/** The ids of a node's connected peers, sorted. */
export const peerIds = (node: P2PNode): string[] =>
  node
    .peers()
    .map((p) => p.id)
    .sort();

/** True when `node` is connected to exactly the nodes `others`. */
export function connectedTo(node: P2PNode, others: readonly P2PNode[]): boolean {
  const want = others.map((o) => o.id).sort();
  const have = peerIds(node);
  return have.length === want.length && have.every((id, i) => id === want[i]);
}

/**
 * A TCP socket of this host, as Linux's /proc/net/tcp and /proc/net/tcp6 list it: the remote address
 * as the kernel writes it (hex: 127.0.0.1 is `0100007F`), ports as numbers, and the state's code
 * (`01` ESTABLISHED, `02` SYN_SENT, ...).
 */
export interface TcpSocket {
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly state: string;
}

/** Every TCP socket of this host ({@link TcpSocket}); throws where there is no /proc/net/tcp (not Linux). */
export function tcpSockets(): TcpSocket[] {
  const sockets: TcpSocket[] = [];
  let tables = 0;
  const split = (endpoint: string): [string, number] => {
    const colon = endpoint.lastIndexOf(':');
    return [endpoint.slice(0, colon), parseInt(endpoint.slice(colon + 1), 16)];
  };
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
      tables++;
    } catch {
      continue; // tcp6 is absent on a kernel without IPv6
    }
    for (const line of text.split('\n').slice(1)) {
      const [, local, remote, state] = line.trim().split(/\s+/);
      if (local === undefined || remote === undefined || state === undefined) continue;
      const [remoteAddress, remotePort] = split(remote);
      sockets.push({ localPort: split(local)[1], remoteAddress, remotePort, state });
    }
  }
  if (tables === 0) throw new Error('tcpSockets reads /proc/net/tcp, which only Linux has');
  return sockets;
}

/**
 * Established TCP connections on this host whose listening end is one of `ports` (each connection
 * counted once, by its accepted socket).
 */
export function establishedOn(ports: readonly number[]): number {
  return tcpSockets().filter((s) => s.state === '01' && ports.includes(s.localPort)).length;
}

/** Options of a hand-written Noise client ({@link secureHandshake}). */
export interface SecureOptions {
  /** Who the client proves to be. Default: a fresh {@link generateIdentity}. */
  readonly identity?: Identity;
  /** The network key to handshake with (XXpsk0). Default: none (XX). */
  readonly networkKey?: Uint8Array;
  /**
   * Largest plaintext the client encrypts. Default the session's own (a frame of 256 KiB once
   * encrypted); the frame-limit tests raise it to send the largest frame the node must accept.
   */
  readonly maxMessageBytes?: number;
  /** Bound on the whole handshake. Default 5 s. */
  readonly timeoutMs?: number;
}

/** A completed handshake on a socket: the client side of an encrypted link to a node. */
export interface SecureLink {
  readonly identity: Identity;
  readonly session: SecureSession;
  /**
   * One encrypted frame, length prefix included, ready to write. Each call uses the next nonce: write
   * the frames in the order they were sealed (or tamper with one to see it refused).
   */
  seal(payload: Buffer): Buffer;
  /** Encrypts `payload` into one frame and writes it. */
  sendPayload(payload: Buffer): void;
  /** Encrypts and writes one frame. */
  send(frame: Frame): void;
  /** Encrypts `payloads` as one pack (lib/protocol/codec.ts) and writes it. */
  sendPack(payloads: readonly Buffer[]): void;
  /** The first error after the handshake: a frame from the node that did not decrypt. */
  readonly error: unknown;
  /** Encrypted messages received after the handshake, how many were packs, and the largest pack. */
  readonly received: { messages: number; packs: number; largestPack: number };
}

/**
 * Runs the initiator's side of the node's Noise handshake on a connected `socket`, as a real node
 * would (lib/security/noise.ts, each message one length-prefixed frame), then decrypts every later
 * frame and hands its payload (each payload of a pack) to `onPayload` (with the link, which may not
 * have resolved yet). Resolves with the link once the session exists; rejects
 * with the handshake's error if it fails, the socket closes first, or `timeoutMs` passes.
 */
export function secureHandshake(
  socket: Socket,
  onPayload: (payload: Buffer, link: SecureLink) => void,
  options: SecureOptions = {},
): Promise<SecureLink> {
  const identity = options.identity ?? generateIdentity();
  const handshake = createHandshake({
    initiator: true,
    identity,
    ...(options.networkKey !== undefined ? { networkKey: options.networkKey } : {}),
    ...(options.maxMessageBytes !== undefined ? { maxMessageBytes: options.maxMessageBytes } : {}),
  });
  const decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES + TAG_BYTES);
  return new Promise<SecureLink>((resolve, reject) => {
    let session: SecureSession | undefined;
    let error: unknown;
    const received = { messages: 0, packs: 0, largestPack: 0 };
    const write = (bytes: Buffer): void => {
      if (!socket.destroyed) socket.write(bytes);
    };
    const seal = (payload: Buffer): Buffer => encodeFrame(session!.encrypt(payload));
    const link: SecureLink = {
      identity,
      get session() {
        return session!;
      },
      seal,
      sendPayload: (payload) => write(seal(payload)),
      send: (frame) => write(seal(serializeFrame(frame))),
      sendPack: (payloads) => write(seal(pack(payloads))),
      get error() {
        return error;
      },
      received,
    };
    const fail = (err: unknown): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.destroy();
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const timer = setTimeout(
      () => fail(new Error(`no handshake within ${options.timeoutMs ?? 5000} ms`)),
      options.timeoutMs ?? 5000,
    );
    const onClose = (): void => fail(handshake.closedError());
    const onData = (chunk: Buffer): void => {
      try {
        for (const raw of decoder.push(chunk)) {
          if (session !== undefined) {
            const plaintext = session.decrypt(raw);
            received.messages++;
            if (isPack(plaintext)) {
              received.packs++;
              received.largestPack = Math.max(received.largestPack, plaintext.length);
            }
            for (const payload of isPack(plaintext) ? unpack(plaintext) : [plaintext])
              onPayload(payload, link);
            continue;
          }
          const step = handshake.receive(raw);
          if (step.reply !== undefined) write(encodeFrame(step.reply));
          if (step.session !== undefined) {
            session = step.session;
            clearTimeout(timer);
            socket.off('close', onClose);
            resolve(link);
          }
        }
      } catch (err) {
        if (session === undefined) fail(err);
        else {
          error ??= err;
          socket.destroy();
        }
      }
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    write(encodeFrame(handshake.start()!));
  });
}

/**
 * A peer written by hand on a raw socket: completes the Noise handshake as a real client, sends a
 * valid hello (its id is its identity's), records every frame the node sends, and answers pings only
 * when `answerPings` is set. Everything it sends after the handshake is encrypted, except what a test
 * writes with `writePlain`.
 */
export interface RawPeer {
  readonly socket: Socket;
  /** Its identity, and the node id derived from it (the id in its hello). */
  readonly identity: Identity;
  readonly id: string;
  readonly frames: Frame[];
  /** The Noise handshake's hash: of two connections, a node keeps the one whose hash is lower. */
  readonly handshakeHash: Buffer;
  /** Whether it answers the node's pings now (from `answerPings`; a test may change it). */
  answersPings: boolean;
  /** Frames of `type` received so far. */
  count(type: Frame['type']): number;
  /** Whether a frame of `type` came (a `bye`: with `reason`, when given). */
  got(type: Frame['type'], reason?: string): boolean;
  /** Sends its hello (done at once unless `deferHello`), with `fields` over its own (nick `raw`). */
  hello(fields?: Partial<HelloFrame>): void;
  /** Encrypts and sends one frame. */
  send(frame: Frame): void;
  /** Encrypts and sends one payload as it is (bytes that need not be a valid frame). */
  sendPayload(payload: Buffer): void;
  /** Encrypts and sends payloads as one pack. */
  sendPack(payloads: readonly Buffer[]): void;
  /** Encrypted messages received after the handshake, how many were packs, and the largest pack. */
  readonly received: { readonly messages: number; readonly packs: number; readonly largestPack: number };
  /** Chat frames received in each encoding: JSON, and binary (lib/protocol/frames.ts, `encodeChat`). */
  readonly chatEncodings: { readonly json: number; readonly binary: number };
  /** Writes bytes on the socket as they are, unencrypted and unframed. */
  writePlain(bytes: Buffer | string): void;
  readonly closed: Promise<void>;
}

export async function rawPeer(
  t: TestContext,
  port: number,
  /**
   * `pack`: the largest pack its hello says it reads (default: none, as a node before packs).
   * `binary`: its hello says it reads binary chat frames (default: no, as a node before them).
   * `deferHello`: no hello until the test calls `hello()`.
   */
  options: SecureOptions & {
    listenPort?: number;
    answerPings?: boolean;
    pack?: number;
    binary?: boolean;
    deferHello?: boolean;
  } = {},
): Promise<RawPeer> {
  const listenPort = options.listenPort ?? (await freePort());
  const socket = connect({ host: HOST, port });
  socket.on('error', () => {}); // the node may reset it; the test looks at `closed`
  t.after(() => socket.destroy());
  const done = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const frames: Frame[] = [];
  const chatEncodings = { json: 0, binary: 0 };
  const state = { answersPings: options.answerPings === true };
  const link = await secureHandshake(
    socket,
    (payload, self) => {
      const frame = parseFrame(payload);
      frames.push(frame);
      if (frame.type === 'chat') chatEncodings[isBinaryChat(payload) ? 'binary' : 'json']++;
      if (frame.type === 'ping' && state.answersPings) self.send({ type: 'pong', n: frame.n });
    },
    options,
  );
  const { identity } = link;
  const hello = (fields: Partial<HelloFrame> = {}): void =>
    link.send({
      type: 'hello',
      v: PROTOCOL_VERSION,
      id: identity.id,
      nick: 'raw',
      port: listenPort,
      ...(options.pack !== undefined ? { pack: options.pack } : {}),
      ...(options.binary !== undefined ? { binary: options.binary } : {}),
      ...fields,
    });
  if (options.deferHello !== true) hello();
  return Object.assign(state, {
    socket,
    identity,
    id: identity.id,
    frames,
    handshakeHash: link.session.handshakeHash,
    count: (type: Frame['type']) => frames.filter((f) => f.type === type).length,
    got: (type: Frame['type'], reason?: string) =>
      frames.some(
        (f) => f.type === type && (reason === undefined || (f as { reason?: string }).reason === reason),
      ),
    hello,
    send: (frame: Frame) => link.send(frame),
    sendPayload: (payload: Buffer) => link.sendPayload(payload),
    sendPack: (payloads: readonly Buffer[]) => link.sendPack(payloads),
    received: link.received,
    chatEncodings,
    writePlain: (bytes: Buffer | string) => {
      if (!socket.destroyed) socket.write(bytes);
    },
    closed: done,
  });
}

/** What a test may choose of a message it signs; the rest gets fresh values. */
/**
 * Waits for `count` more upkeep ticks of the node `witness` is connected to: the node pings each peer
 * once a tick, so a raw peer (one that answers pings) is the test's clock.
 */
export async function upkeepTicks(witness: RawPeer, count: number, timeoutMs = 5000): Promise<void> {
  const pings = witness.count('ping');
  await waitFor(() => witness.count('ping') >= pings + count, `${count} upkeep tick(s)`, timeoutMs);
}

let syncPings = 0;
/**
 * Sends `sync` from `peer`, then a ping; resolves with the chat frames the node sent back before its
 * pong. A node answers a sync at once (its first batch of messages), so these are the whole answer.
 */
export async function askSync(peer: RawPeer, sync: Omit<SyncFrame, 'type'>): Promise<ChatFrame[]> {
  const n = (syncPings = (syncPings + 1) >>> 0);
  const from = peer.frames.length;
  peer.send({ type: 'sync', ...sync });
  peer.send({ type: 'ping', n });
  await waitFor(() => peer.frames.some((f) => f.type === 'pong' && f.n === n), 'the pong');
  const end = peer.frames.findIndex((f) => f.type === 'pong' && f.n === n);
  return peer.frames.slice(from, end).filter((f): f is ChatFrame => f.type === 'chat');
}

export interface SignedFields {
  readonly text: string;
  readonly seq: number;
  readonly id?: string;
  readonly ts?: number;
  readonly nick?: string;
}

/**
 * A chat frame signed by `author` for the network with tag `network` (default: the public network),
 * exactly as a node builds one.
 */
export function signedChat(
  author: Identity,
  fields: SignedFields,
  network: Uint8Array = networkTag(),
): ChatFrame {
  return signedChatFrame(
    author,
    {
      id: fields.id ?? randomBytes(12).toString('base64url'),
      nick: fields.nick ?? 'raw',
      ts: fields.ts ?? Date.now(),
      seq: fields.seq,
      text: fields.text,
    },
    network,
  );
}
