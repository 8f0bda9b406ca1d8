import { Buffer } from 'node:buffer';
import type { Interface } from 'node:readline';
import { StringDecoder } from 'node:string_decoder';
import type { Readable, Writable } from 'node:stream';
import { Observable } from 'rxjs';
import type { ChatMessage, PeerInfo } from '../node/node.js';
import type { WritingBuffer } from '../protocol/codec.js';
import { Multicast } from '../util/multicast.js';

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
  /** Stops (`true`) or resumes reading input: a long paste waits in the pipe meanwhile. */
  holdInput(held: boolean): void;
  /**
   * Writes what is still queued for stdout (see {@link lineBatch}) now, synchronously. For exit paths
   * that do not go through `close()`, such as `process.on('exit')`.
   */
  flush(): void;
  /** Flushes, and stops reading input. Lines given after it are written at once. */
  close(): void;
}

export interface ConsoleIo {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr: Writable;
}

/**
 * Control characters (ANSI escapes among them) from the network are shown, never obeyed; so are
 * the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), with which a
 * nick could turn the rest of a line around. Other format characters (the joiners of emoji
 * sequences) are left alone.
 */
export function sanitize(text: string): string {
  return text.replace(/[\p{Cc}\u202a-\u202e\u2066-\u2069]/gu, (c) => {
    if (c === '\t') return ' ';
    const code = c.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, '0')}`;
  });
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

// ---- --json message and sent events, written as bytes -----------------------------------------
//
// A burst shows a `message` event per message at every node (and a `sent` one at the sender):
// `JSON.stringify` of an event object, the turn's lines joined into one string, and that string
// encoded again for the write made ~1.2 KB of garbage per message and ~15 % of a random20 node's CPU.
// These write the same bytes that `JSON.stringify(messageEvent('message', m))` gives straight into
// the line batch's buffer, as one string in one write: each string as it is unless JSON must escape
// something in it (then as `JSON.stringify` escapes it), the numbers as digits. A property spec
// checks them against `JSON.stringify` for any strings.

/** Bytes of an event besides its strings: the fixed parts, and two numbers of up to 21 characters. */
const EVENT_BYTES = 150;

/**
 * What JSON escapes in a string: `"`, `\`, U+0000..U+001F, and surrogates (a lone one is escaped;
 * a string with a pair goes to `JSON.stringify` too, which writes the pair as it is).
 */
// eslint-disable-next-line no-control-regex -- the control characters are what JSON escapes
const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

/** Numbers that `JSON.stringify` writes as `String` does (it writes NaN and Infinity as null). */
function plainNumbers(m: Pick<ChatMessage, 'ts' | 'seq'>): boolean {
  return Number.isSafeInteger(m.ts) && Number.isSafeInteger(m.seq);
}

/**
 * A string's JSON text without its quotes: at most 6 bytes of UTF-8 per UTF-16 code unit escaped
 * (`\u001f`), 3 as it is.
 */
function jsonText(text: string): string {
  return JSON_ESCAPED.test(text) ? JSON.stringify(text).slice(1, -1) : text;
}

function messageEventBytes(m: ChatMessage): number {
  return EVENT_BYTES + 6 * (m.id.length + m.from.length + m.nick.length + m.text.length);
}

function fillMessageEvent(buf: WritingBuffer, at: number, m: ChatMessage): number {
  const line = `{"event":"message","id":"${jsonText(m.id)}","from":"${jsonText(m.from)}","nick":"${jsonText(m.nick)}","text":"${jsonText(m.text)}","ts":${m.ts},"seq":${m.seq}}`;
  return at + buf.utf8Write(line, at);
}

function sentEventBytes(m: ChatMessage): number {
  return EVENT_BYTES + 6 * m.id.length;
}

function fillSentEvent(buf: WritingBuffer, at: number, m: ChatMessage): number {
  return at + buf.utf8Write(`{"event":"sent","id":"${jsonText(m.id)}","ts":${m.ts},"seq":${m.seq}}`, at);
}

function formatPeers(peers: readonly PeerInfo[]): string {
  if (peers.length === 0) return 'no peers connected';
  const rows = peers.map(
    (p) => `  ${shortId(p.id)}  ${sanitize(p.nick).padEnd(16)} ${sanitize(p.address)} (${p.direction})`,
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

/** Line ends as readline splits on them: `\r\n`, `\n`, or a lone `\r`. */
const LINE_END = /\r?\n|\r(?!\n)/g;

/**
 * Longest line of piped input kept whole: the rest of a longer one is dropped as it arrives (the line
 * is refused as too long anyway), so endless input without a line end (`< /dev/zero`) cannot grow a
 * string past what V8 allows and crash the node.
 */
export const MAX_LINE_CHARS = 64 * 1024;

/**
 * Lines of piped input, split as readline does with `crlfDelay: Infinity` (a `\r\n` split across
 * two reads is one line end; the last line needs no line end), without loading readline (~0.3 MB of
 * code a node at idle never runs). A line longer than {@link MAX_LINE_CHARS} comes out cut, to at
 * most that plus one read's worth of characters. Reading starts with the first subscription (lines
 * wait in the stream until then); `hold(true)` stops reading until `hold(false)`; `close()` stops
 * reading and completes the lines.
 */
export function pipeLines(input: Readable): {
  readonly lines$: Observable<string>;
  hold(held: boolean): void;
  close(): void;
} {
  // A Multicast, not an RxJS Subject: each line typed or piped is one `next` (see Multicast).
  const lines = new Multicast<string>();
  const decoder = new StringDecoder('utf8');
  let partial = '';
  let sawReturn = false;
  let closed = false;
  const onData = (chunk: Buffer | string): void => {
    let text = typeof chunk === 'string' ? chunk : decoder.write(chunk);
    if (sawReturn) {
      sawReturn = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    if (text.length === 0) return;
    text = partial + text;
    sawReturn = text.endsWith('\r');
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let m = LINE_END.exec(text); m !== null; m = LINE_END.exec(text)) {
      lines.next(text.slice(start, m.index));
      if (closed) return;
      start = LINE_END.lastIndex;
    }
    partial = text.slice(start, start + MAX_LINE_CHARS + 1);
  };
  const close = (): void => {
    if (closed) return;
    closed = true;
    input.off('data', onData).off('end', onEnd);
    input.pause();
    lines.complete();
  };
  const onEnd = (): void => {
    if (partial.length > 0) lines.next(partial);
    partial = '';
    close();
  };
  let started = false;
  const lines$ = new Observable<string>((subscriber) => {
    const subscription = lines.subscribe(subscriber);
    if (!started && !closed) {
      started = true;
      input.on('data', onData).on('end', onEnd);
      input.resume();
    }
    return subscription;
  });
  const hold = (held: boolean): void => {
    if (closed || !started) return;
    if (held) input.pause();
    else input.resume();
  };
  return { lines$, hold, close };
}

/**
 * Lines for one stream, written together: every line queued during one turn of the event loop goes
 * out in a single `write`, at the end of that turn. One write per line cost a stream write (and often
 * a syscall) per chat message in a burst. The flush runs on `setImmediate`, right after the loop's
 * I/O phase, so the lines of every socket read in that phase share one write, and a line waits only
 * for the rest of the turn it was made in (microseconds, unless that turn is busy anyway). A
 * microtask would flush after each socket's read instead: more writes, no latency worth having saved.
 *
 * The lines are kept as UTF-8 bytes, each written into one buffer as it is queued: the write is that
 * buffer (a small batch, a copy of its bytes), with no joined string to make and encode again. {@link LineBatch.pushBytes} writes a line
 * there without making a string of it at all (the `--json` message events, one per message).
 *
 * Backpressure: while the stream wants a `'drain'` (a pipe whose reader is slower than the chat),
 * lines wait here and go out in one write when it drains, rather than piling up in the stream's own
 * buffer one chunk per line. Nothing is dropped, so this queue is unbounded, as that buffer was.
 *
 * @param stream where the lines go; watched for `'drain'`.
 * @param writeOut writes one batch (lines with their newlines, as UTF-8) to `stream`; the terminal's
 *   console passes one that redraws its prompt after the batch.
 */
export function lineBatch(
  stream: Writable,
  writeOut: (bytes: Buffer) => void = (bytes) => void stream.write(bytes),
): LineBatch {
  // The turn's bytes: buf[0, at). A batch that fills most of the buffer is written as a view of it
  // (the stream may keep it until it is written), and the next line makes a new one; a smaller one is
  // copied out, and the buffer kept: a chunk the stream holds keeps at most twice its bytes alive.
  let buf: WritingBuffer = EMPTY;
  let at = 0;
  let lines = 0;
  let turnEnd: NodeJS.Immediate | undefined;
  let awaitingDrain = false;
  let closed = false;
  /** Makes room for `bytes` more bytes after `at`. */
  const room = (bytes: number): void => {
    if (at + bytes <= buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(MIN_BATCH_BYTES, 2 * buf.length, at + bytes)) as WritingBuffer;
    buf.copy(next, 0, 0, at);
    buf = next;
  };
  const flush = (): void => {
    if (turnEnd !== undefined) {
      clearImmediate(turnEnd);
      turnEnd = undefined;
    }
    if (lines === 0) return;
    let bytes: Buffer;
    if (2 * at >= buf.length) {
      bytes = buf.subarray(0, at);
      buf = EMPTY;
    } else bytes = Buffer.from(buf.subarray(0, at)); // a copy (small ones share Node's 8 KiB pool)
    at = 0;
    lines = 0;
    writeOut(bytes);
  };
  const schedule = (): void => {
    if (turnEnd === undefined && !awaitingDrain && lines > 0) turnEnd = setImmediate(atTurnEnd);
  };
  // 'close' too: a destroyed stream never drains, and must not make the queue grow for ever.
  const onWritable = (): void => {
    stream.off('drain', onWritable).off('close', onWritable);
    awaitingDrain = false;
    schedule();
  };
  const atTurnEnd = (): void => {
    turnEnd = undefined;
    if (stream.writableNeedDrain && !stream.destroyed) {
      awaitingDrain = true;
      stream.on('drain', onWritable).on('close', onWritable);
      return;
    }
    flush();
  };
  /** The line just written into `buf` (up to `at`, newline added here) is queued, or written at once after close(). */
  const queued = (): void => {
    buf[at++] = NEWLINE;
    lines++;
    if (closed) flush();
    else schedule();
  };
  return {
    push(line) {
      // A UTF-16 code unit is at most 3 bytes of UTF-8; a long line is measured instead.
      room((line.length > 4096 ? Buffer.byteLength(line) : 3 * line.length) + 1);
      at += buf.utf8Write(line, at);
      queued();
    },
    pushBytes(maxBytes, fill, value) {
      room(maxBytes + 1);
      const end = fill(buf, at, value);
      if (!(end >= at && end <= at + maxBytes))
        throw new RangeError(`lineBatch: a line's fill ended at ${end}, outside ${at}..${at + maxBytes}`);
      at = end;
      queued();
    },
    flush,
    get queued() {
      return lines;
    },
    close() {
      flush();
      closed = true;
      if (awaitingDrain) onWritable();
    },
  };
}

const EMPTY = Buffer.alloc(0) as WritingBuffer;
const NEWLINE = 0x0a;
/** The first buffer of a turn: a burst's turn holds ~60 message events of ~300 bytes. */
const MIN_BATCH_BYTES = 16 * 1024;

/** A queue of lines for one stream; see {@link lineBatch}. */
export interface LineBatch {
  /** Queues one line (without its newline) for the end of this turn; after `close()`, writes it at once. */
  push(line: string): void;
  /**
   * Queues one line written straight into the batch's buffer, as {@link push} does with a string:
   * `fill(buf, at, value)` writes the line's UTF-8 (without its newline) into `buf` from `at`, at most
   * `maxBytes` of it, and returns where it ended. `value` is handed on, so that `fill` can be one
   * function rather than a closure made per line.
   * @throws {RangeError} when `fill` ends before `at` or past `at + maxBytes` (a bug in `fill`).
   */
  pushBytes<T>(maxBytes: number, fill: (buf: WritingBuffer, at: number, value: T) => number, value: T): void;
  /**
   * Writes every queued line now, in one write, even while the stream wants a drain (it then buffers
   * them, as it would have anyway). For exit paths, and before a write to another stream, so the two
   * keep the order in which their lines were given.
   */
  flush(): void;
  /** Lines queued and not yet written. */
  readonly queued: number;
  /** Flushes; from then on each line is written at once. */
  close(): void;
}

/**
 * readline's own record of the row, counted from the prompt's first, that it left the cursor on when
 * it last drew the prompt and line: its redraw (`prompt()`, and the edits that draw the line again)
 * first moves up by it. A private field (no API gives it): absent until readline first draws, which
 * readline takes as 0, as this does.
 */
type DrawnRows = { prevRows?: unknown };

/**
 * An error of a system call (a read, `setRawMode`): an errno number, the call's name, and a code that
 * is the errno's name (`EIO`). Node's own errors have a string code too (`ERR_INVALID_ARG_TYPE`,
 * `ERR_STREAM_DESTROYED`, often a TypeError or RangeError): those are bugs, not a terminal gone.
 */
function isSystemError(err: NodeJS.ErrnoException): boolean {
  return (
    typeof err.errno === 'number' &&
    typeof err.syscall === 'string' &&
    typeof err.code === 'string' &&
    /^E[A-Z0-9]+$/.test(err.code)
  );
}

/**
 * For a terminal: a prompt that stays intact while messages and logs arrive (each is written above
 * it, then the prompt and the half-typed line are drawn again, the cursor where it was in the line),
 * even when the prompt and line wrap over several rows of the terminal.
 */
export function ttyConsole(
  io: ConsoleIo,
  onInterrupt: () => void,
  options: {
    /**
     * A terminal that knows no escape sequences (`TERM=dumb`: an editor's shell buffer, a serial
     * console): nothing is written but text, `\r` and `\n`. readline sees this for itself (in
     * `process.env`) and then echoes what is typed with no line editing.
     */
    readonly dumb?: boolean;
  } = {},
): ConsoleSink {
  const out = io.stdout;
  const dumb = options.dumb === true;
  // Loaded here: only a terminal needs readline (its code is ~0.3 MB a piped node would carry idle).
  const { clearScreenDown, createInterface, cursorTo, moveCursor } =
    process.getBuiltinModule('node:readline');
  const resizeListeners = out.listeners('resize');
  const rl = createInterface({ input: io.stdin, output: out, terminal: true, historySize: 100 });
  // readline draws the prompt and line again when the terminal is resized, with escapes whatever
  // TERM says (`\x1b[1G\x1b[0J`): in dumb mode its listener goes. What is on screen stays as it is,
  // and the next line above the prompt is measured at the new width.
  if (dumb)
    for (const listener of out.listeners('resize'))
      if (!resizeListeners.includes(listener)) out.off('resize', listener as () => void);
  rl.on('SIGINT', onInterrupt);
  // The terminal went away (closed, an SSH session dropped): reading it, or taking it out of raw mode
  // as readline closes, fails with a system error (EIO: `setRawMode EIO`, errno -5). The node leaves
  // as on Ctrl+C, rather than dying on an unhandled 'error' (with its lock and links left behind).
  rl.on('error', (err: NodeJS.ErrnoException) => {
    if (!isSystemError(err)) throw err;
    onInterrupt();
  });
  // Whether the prompt is on screen: not before the first is drawn, nor after Enter (readline goes to
  // a new row and draws no prompt) until one is drawn again.
  let promptShown = false;
  // readline closes by itself at the end of its input (the terminal gone): it draws nothing more,
  // and Node 24's throws ERR_USE_AFTER_CLOSE for a prompt then. What comes is written as it is.
  let rlClosed = false;
  rl.on('close', () => (rlClosed = true));
  const prompt = (preserveCursor: boolean): void => {
    if (rlClosed) return;
    // A dumb terminal's cursor is always at the end of the line (readline only appends there).
    if (dumb) out.write(preserveCursor ? rl.getPrompt() + rl.line : rl.getPrompt());
    else rl.prompt(preserveCursor);
    promptShown = true;
  };
  // Registered before the lines are handed on (linesOf): a blank line sends nothing and gets no
  // answer, so it gets its prompt here, as a shell's does; any other line's answer draws it.
  rl.on('line', (line: string) => {
    promptShown = false;
    if (line.trim() === '') prompt(false);
  });
  /**
   * The rows of the prompt and line above the cursor's. While the prompt is shown, worked out from
   * the prompt and the line: readline's own record of it (see {@link DrawnRows}) stays 0 after a paste
   * that wraps (it writes a paste's characters without counting rows). While the prompt is not shown,
   * that record: what the cursor has above it is only what was typed since Enter, if anything.
   */
  const rowsAbove = (): number => {
    if (promptShown) return rl.getCursorPos().rows;
    const drawn = (rl as DrawnRows).prevRows;
    return typeof drawn === 'number' ? drawn : 0;
  };
  /**
   * In dumb mode, where the cursor is: after the prompt, if shown, and the line (readline only
   * appends there). Measured by readline, in columns of the terminal (a CJK character takes two, a
   * combining accent none), as it measures the prompt and line together only: without the prompt
   * when it is not on screen.
   */
  const dumbCursor = (): { rows: number; cols: number } => {
    if (promptShown) return rl.getCursorPos();
    const shown = rl.getPrompt();
    rl.setPrompt('');
    try {
      return rl.getCursorPos();
    } finally {
      rl.setPrompt(shown);
    }
  };
  let closed = false;
  const above = (stream: Writable, text: string | Uint8Array): void => {
    if (closed || rlClosed) {
      stream.write(text);
      return;
    }
    if (dumb) {
      // No cursor moves: blank the row the prompt and line are on with spaces, from its start, or,
      // when they take more than that row, go on below them. Then the text, and the prompt again.
      const { rows, cols } = dumbCursor();
      if (rows > 0) out.write('\n');
      else if (cols > 0) out.write(`\r${' '.repeat(cols)}\r`);
      stream.write(text);
      prompt(true);
      return;
    }
    // Clear from the first row of the prompt down (the rows of a line that wraps, not just the
    // cursor's), write, and draw the prompt and line again below.
    moveCursor(out, 0, -rowsAbove());
    cursorTo(out, 0);
    clearScreenDown(out);
    stream.write(text);
    // The prompt starts on the cursor's row now: readline's redraw must not move up first (it would
    // clear the last rows of the text). Not a number yet (readline has not drawn), it counts as 0.
    const drawn = rl as DrawnRows;
    if (typeof drawn.prevRows === 'number') drawn.prevRows = 0;
    prompt(true);
  };
  // A burst of messages is drawn once per turn: one clear, the lines, one prompt.
  const batch = lineBatch(out, (text) => above(out, text));
  const show = (text: string): void => batch.push(text);
  return {
    lines$: linesOf(rl),
    ready({ id, port, nick }) {
      rl.setPrompt(`${sanitize(nick)}> `);
      show(`p2p: node ${shortId(id)} (${id}) listening on port ${port}. Type a message, or /help.`);
    },
    message: (m) => show(formatMessage(m)),
    sent() {
      prompt(false);
    },
    peerUp: (p) => show(`* ${sanitize(p.nick)} (${shortId(p.id)}) joined from ${sanitize(p.address)}`),
    peerDown: (p, reason) => show(`* ${sanitize(p.nick)} (${shortId(p.id)}) left: ${sanitize(reason)}`),
    peers: (peers) => show(formatPeers(peers)),
    history(messages, atStart) {
      if (messages.length === 0) {
        if (!atStart) show('no history yet');
        return;
      }
      show(formatHistory(messages));
    },
    notice: (text) => show(text),
    log(line) {
      batch.flush();
      above(io.stderr, `${sanitize(line)}\n`);
    },
    setPrompt(nick) {
      rl.setPrompt(`${sanitize(nick)}> `);
    },
    // A terminal is never held: a paste there is finite, and Ctrl+C arrives as input.
    holdInput() {},
    flush: () => batch.flush(),
    close() {
      if (closed) return;
      batch.close();
      closed = true;
      rl.close();
      out.write('\n');
    },
  };
}

/** What the two pipe sinks share: stdin as lines, batched stdout, stderr after what is queued. */
function pipeSink(io: ConsoleIo): {
  readonly push: (line: string) => void;
  readonly batch: LineBatch;
  readonly toStderr: (text: string) => void;
  readonly common: Pick<ConsoleSink, 'lines$' | 'log' | 'setPrompt' | 'holdInput' | 'flush' | 'close'>;
} {
  const input = pipeLines(io.stdin);
  const batch = lineBatch(io.stdout);
  const toStderr = (text: string): void => {
    batch.flush(); // what came before it reaches stdout first, as when every line was written at once
    io.stderr.write(`${text}\n`);
  };
  return {
    push: (line) => batch.push(line),
    batch,
    toStderr,
    common: {
      lines$: input.lines$,
      // A log line can carry what peers sent (a nick in a peer's label, a bye's reason).
      log: (line) => toStderr(sanitize(line)),
      setPrompt() {},
      holdInput: (held) => input.hold(held),
      flush: () => batch.flush(),
      close() {
        batch.close();
        input.close();
      },
    },
  };
}

/** For pipes without --json: each received message as one plain line on stdout. */
export function plainConsole(io: ConsoleIo): ConsoleSink {
  const { push: write, toStderr, common } = pipeSink(io);
  return {
    ...common,
    ready: ({ id, port }) => toStderr(`p2p: node ${id} listening on port ${port}`),
    message: (m) => write(formatMessage(m)),
    sent() {},
    peerUp() {},
    peerDown() {},
    peers: (peers) => write(formatPeers(peers)),
    history(messages, atStart) {
      if (!atStart) write(messages.length === 0 ? 'no history yet' : formatHistory(messages));
    },
    notice: (text) => write(text),
  };
}

/** `--json`: one JSON event per line on stdout, for programs. The events are documented in README. */
export function jsonConsole(io: ConsoleIo): ConsoleSink {
  const { push, batch, toStderr, common } = pipeSink(io);
  const emit = (event: Record<string, unknown>): void => push(JSON.stringify(event));
  const peer = (p: PeerInfo) => ({ peer: p.id, nick: p.nick, address: p.address, direction: p.direction });
  return {
    ...common,
    ready: ({ id, port, nick }) => emit({ event: 'ready', id, port, nick }),
    message(m) {
      if (plainNumbers(m)) batch.pushBytes(messageEventBytes(m), fillMessageEvent, m);
      else emit(messageEvent('message', m));
    },
    sent(m) {
      if (plainNumbers(m)) batch.pushBytes(sentEventBytes(m), fillSentEvent, m);
      else emit({ event: 'sent', id: m.id, ts: m.ts, seq: m.seq });
    },
    peerUp: (p) => emit({ event: 'peer-up', ...peer(p) }),
    peerDown: (p, reason) => emit({ event: 'peer-down', ...peer(p), reason }),
    peers: (peers) => emit({ event: 'peers', peers: peers.map(peer) }),
    history(messages, atStart) {
      if (!atStart) emit({ event: 'history', messages: messages.map((m) => messageEvent(undefined, m)) });
    },
    notice: toStderr,
  };
}
