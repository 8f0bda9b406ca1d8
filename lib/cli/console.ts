import { clearLine, createInterface, cursorTo, type Interface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { Observable } from 'rxjs';
import type { ChatMessage, PeerInfo } from '../node/node.js';

/** The console sink: the actor that owns stdout (and the prompt). One per CLI run. */
export interface ConsoleSink {
  /** Lines typed or piped in; completes at end of input. */
  readonly lines$: Observable<string>;
  ready(info: { id: string; port: number; nick: string }): void;
  /** A message received from the network. */
  message(message: ChatMessage): void;
  /** A message this node sent. */
  sent(message: ChatMessage): void;
  peerUp(peer: PeerInfo): void;
  peerDown(peer: PeerInfo, reason: string): void;
  /**
   * Messages of the history, oldest first: shown at start (`atStart`, terminal only) and for /history.
   */
  history(messages: readonly ChatMessage[], atStart: boolean): void;
  /** The peer list, as asked for with /peers. */
  peers(peers: readonly PeerInfo[]): void;
  /** A reply to a command, or a problem with what the user typed. */
  notice(text: string): void;
  /** A log line (stderr). */
  log(line: string): void;
  /** The prompt, when it changes (nickname). */
  setPrompt(nick: string): void;
  close(): void;
}

export interface ConsoleIo {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr: Writable;
}

/** Control characters (ANSI escapes among them) from the network are shown, never obeyed. */
export function sanitize(text: string): string {
  return text.replace(/\p{Cc}/gu, (c) =>
    c === '\t' ? ' ' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** The first digits of a node id, enough to tell two nodes with one nickname apart. */
export function shortId(id: string): string {
  return id.slice(0, 6);
}

function clock(ts: number): string {
  return new Date(ts).toTimeString().slice(0, 8);
}

/** One message as the terminal shows it: `[12:34:56] bob (3fa9c1): hello`. */
export function formatMessage(m: ChatMessage): string {
  return `[${clock(m.ts)}] ${sanitize(m.nick)} (${shortId(m.from)}): ${sanitize(m.text)}`;
}

/** History lines, marked as such so they are not mistaken for new messages. */
function formatHistory(messages: readonly ChatMessage[]): string {
  return [
    `-- history: last ${messages.length} --`,
    ...messages.map(formatMessage),
    '-- end of history --',
  ].join('\n');
}

function messageEvent(event: string | undefined, m: ChatMessage): Record<string, unknown> {
  // Built field by field (no spread): this runs once per message on the hot path.
  const out: Record<string, unknown> = {};
  if (event !== undefined) out['event'] = event;
  out['id'] = m.id;
  out['from'] = m.from;
  out['nick'] = m.nick;
  out['text'] = m.text;
  out['ts'] = m.ts;
  out['seq'] = m.seq;
  return out;
}

function formatPeers(peers: readonly PeerInfo[]): string {
  if (peers.length === 0) return 'no peers connected';
  const rows = peers.map(
    (p) => `  ${shortId(p.id)}  ${sanitize(p.nick).padEnd(16)} ${p.address} (${p.direction})`,
  );
  return [`${peers.length} peer${peers.length === 1 ? '' : 's'}:`, ...rows].join('\n');
}

function linesOf(rl: Interface): Observable<string> {
  return new Observable<string>((subscriber) => {
    const onLine = (line: string): void => subscriber.next(line);
    const onClose = (): void => subscriber.complete();
    rl.on('line', onLine).on('close', onClose);
    return () => {
      rl.off('line', onLine).off('close', onClose);
    };
  });
}

/**
 * For a terminal: a prompt that stays intact while messages and logs arrive (each is written above
 * it, then the prompt and the half-typed line are drawn again).
 */
export function ttyConsole(io: ConsoleIo, onInterrupt: () => void): ConsoleSink {
  const out = io.stdout;
  const rl = createInterface({ input: io.stdin, output: out, terminal: true, historySize: 100 });
  rl.on('SIGINT', onInterrupt);
  let closed = false;
  const above = (stream: Writable, text: string): void => {
    if (closed) {
      stream.write(`${text}\n`);
      return;
    }
    cursorTo(out, 0);
    clearLine(out, 0);
    stream.write(`${text}\n`);
    rl.prompt(true);
  };
  return {
    lines$: linesOf(rl),
    ready({ id, port, nick }) {
      rl.setPrompt(`${sanitize(nick)}> `);
      above(out, `p2p: node ${shortId(id)} (${id}) listening on port ${port}. Type a message, or /help.`);
    },
    message: (m) => above(out, formatMessage(m)),
    sent() {
      rl.prompt();
    },
    peerUp: (p) => above(out, `* ${sanitize(p.nick)} (${shortId(p.id)}) joined from ${p.address}`),
    peerDown: (p, reason) => above(out, `* ${sanitize(p.nick)} (${shortId(p.id)}) left: ${reason}`),
    peers: (peers) => above(out, formatPeers(peers)),
    history(messages, atStart) {
      if (messages.length === 0) {
        if (!atStart) above(out, 'no history yet');
        return;
      }
      above(out, formatHistory(messages));
    },
    notice: (text) => above(out, text),
    log: (line) => above(io.stderr, line),
    setPrompt(nick) {
      rl.setPrompt(`${sanitize(nick)}> `);
    },
    close() {
      if (closed) return;
      closed = true;
      rl.close();
      out.write('\n');
    },
  };
}

/** For pipes without --json: each received message as one plain line on stdout. */
export function plainConsole(io: ConsoleIo): ConsoleSink {
  const rl = createInterface({ input: io.stdin, terminal: false, crlfDelay: Infinity });
  const write = (text: string): void => void io.stdout.write(`${text}\n`);
  return {
    lines$: linesOf(rl),
    ready: ({ id, port }) => io.stderr.write(`p2p: node ${id} listening on port ${port}\n`),
    message: (m) => write(formatMessage(m)),
    sent() {},
    peerUp() {},
    peerDown() {},
    peers: (peers) => write(formatPeers(peers)),
    history(messages, atStart) {
      if (!atStart) write(messages.length === 0 ? 'no history yet' : formatHistory(messages));
    },
    notice: (text) => write(text),
    log: (line) => io.stderr.write(`${line}\n`),
    setPrompt() {},
    close: () => rl.close(),
  };
}

/** `--json`: one JSON event per line on stdout, for programs. The events are documented in README. */
export function jsonConsole(io: ConsoleIo): ConsoleSink {
  const rl = createInterface({ input: io.stdin, terminal: false, crlfDelay: Infinity });
  const emit = (event: Record<string, unknown>): void => void io.stdout.write(`${JSON.stringify(event)}\n`);
  const peer = (p: PeerInfo) => ({ peer: p.id, nick: p.nick, address: p.address, direction: p.direction });
  return {
    lines$: linesOf(rl),
    ready: ({ id, port, nick }) => emit({ event: 'ready', id, port, nick }),
    message: (m) => emit(messageEvent('message', m)),
    sent: (m) => emit({ event: 'sent', id: m.id, ts: m.ts, seq: m.seq }),
    peerUp: (p) => emit({ event: 'peer-up', ...peer(p) }),
    peerDown: (p, reason) => emit({ event: 'peer-down', ...peer(p), reason }),
    peers: (peers) => emit({ event: 'peers', peers: peers.map(peer) }),
    history(messages, atStart) {
      if (!atStart) emit({ event: 'history', messages: messages.map((m) => messageEvent(undefined, m)) });
    },
    notice: (text) => io.stderr.write(`${text}\n`),
    log: (line) => io.stderr.write(`${line}\n`),
    setPrompt() {},
    close: () => rl.close(),
  };
}
