import { closeSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Readable, Writable } from 'node:stream';
import { Subscription } from 'rxjs';
import { AddressError } from '../protocol/address.js';
import { MAX_NICK_LENGTH, MAX_TEXT_LENGTH } from '../protocol/frames.js';
import { levelLogger } from '../node/log.js';
import { createNode, LIMIT_DEFAULTS, type ConnectOutcome, type P2PNode } from '../node/node.js';
import { TokenBucket } from '../transport/token-bucket.js';
import { DataDirLockedError, defaultDataDir } from '../node/data-dir.js';
import { SecurityError } from '../security/errors.js';
import { createNetworkKeyFile, loadNetworkKey, networkFingerprint } from '../security/network-key.js';
import { parseArgs, UsageError, USAGE, type CliOptions } from './args.js';
import { jsonConsole, MAX_LINE_CHARS, plainConsole, ttyConsole, type ConsoleSink } from './console.js';

/** Standard streams and signals of a CLI run; tests and embedders can pass their own. */
export interface CliIo {
  readonly stdin: Readable & { isTTY?: boolean };
  readonly stdout: Writable & { isTTY?: boolean };
  readonly stderr: Writable;
  readonly env: NodeJS.ProcessEnv;
  /** Where SIGINT/SIGTERM/SIGHUP are listened for, and `'exit'` (to write out queued output). */
  readonly signals: NodeJS.EventEmitter;
}

const defaultIo = (): CliIo => ({
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signals: process,
});

/** Messages of history shown when a terminal chat starts. */
const START_HISTORY = 10;
/** Lines waiting to be sent (a paste faster than the sender rate) past which stdin is not read. */
const QUEUE_HIGH = 5_000;
/** ... and at or below which it is read again. */
const QUEUE_LOW = 1_000;
/** Lines a paced paste waits for at once, so they go out under one signature. */
const PACE_BATCH = 64;

/**
 * The signals that make the node leave cleanly (tell its peers, close its history, release its data
 * directory, exit 0): Ctrl+C, `kill`, and SIGHUP, which a terminal sends when it is closed (or an SSH
 * session drops), where the default action would kill the node with its lock and links left behind.
 */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** How long close() may take before the CLI gives up waiting for sockets. */
const CLOSE_GRACE_MS = 2000;

/**
 * How long `run` waits at exit for stdout to take what is still buffered in it (a pipe whose reader is
 * behind). As long as the close grace: a reader that is alive catches up within it, one that stopped
 * reading must not keep a finished node alive.
 */
const EXIT_FLUSH_MS = 2000;

export const HELP_TEXT = `commands:
  /help              this list
  /peers             the connected peers
  /history [N]       the last N messages (default 20)
  /nick NAME         change your display name
  /connect HOST:PORT dial a node (retried until it answers)
  /quit              leave (Ctrl+C and Ctrl+D too)
  //text             send a line that starts with /`;

/** The package's version, from package.json: two levels up from dist/cli/main.js, one from the bundle dist/p2p.mjs. */
export function version(): string {
  for (const path of ['../../package.json', '../package.json']) {
    let text: string;
    try {
      text = readFileSync(new URL(path, import.meta.url), 'utf8');
    } catch {
      continue;
    }
    const pkg = JSON.parse(text) as { name?: string; version: string };
    if (pkg.name === 'p2p') return pkg.version;
  }
  throw new Error('p2p: package.json not found next to the program');
}

/**
 * Runs the CLI and resolves with its exit code: 0 after a clean shutdown, 1 for a runtime failure
 * (port in use), 2 for a usage error. Never calls `process.exit`.
 */
export async function main(argv: readonly string[], io: CliIo = defaultIo()): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`p2p: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.kind === 'help') {
    io.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'version') {
    io.stdout.write(`p2p ${version()}\n`);
    return 0;
  }
  if (parsed.kind === 'create-network-key') {
    try {
      const key = createNetworkKeyFile(parsed.path);
      io.stdout.write(
        `created network key ${parsed.path} (fingerprint ${networkFingerprint(key)})\n` +
          `copy it to every node of the network by a channel you trust, and start each with --network-key FILE\n`,
      );
      return 0;
    } catch (err) {
      if (!(err instanceof SecurityError)) throw err;
      io.stderr.write(`p2p: ${err.message}\n`);
      return 1;
    }
  }
  return runNode(parsed.options, io);
}

async function runNode(options: CliOptions, io: CliIo): Promise<number> {
  let quit: () => void = () => {};
  let quitRequested = false;
  const quitting = new Promise<void>((resolve) => {
    quit = () => {
      quitRequested = true;
      resolve();
    };
  });
  const mode = options.json ? 'json' : io.stdin.isTTY === true && io.stdout.isTTY === true ? 'tty' : 'plain';
  const sink: ConsoleSink =
    mode === 'json'
      ? jsonConsole(io)
      : mode === 'tty'
        ? ttyConsole(io, () => quit(), { dumb: io.env['TERM'] === 'dumb' })
        : plainConsole(io);
  // A reader of our output went away (`bin/p2p ... | head -1`, or `2>&1 | head -1`): leave as on a
  // signal, instead of dying on an unhandled EPIPE with the peers seeing a dropped link. Nothing is
  // written about it (the other stream may be the broken one); kept to the end, as later writes fail too.
  const onOutputError = (): void => quit();
  io.stdout.on('error', onOutputError);
  io.stderr.on('error', onOutputError);
  const log = levelLogger(options.logLevel ?? (mode === 'tty' ? 'warn' : 'info'), (line) => sink.log(line));

  let networkKey: Buffer | undefined;
  if (options.networkKeyFile !== undefined) {
    try {
      networkKey = loadNetworkKey(options.networkKeyFile);
    } catch (err) {
      if (!(err instanceof SecurityError)) throw err;
      io.stderr.write(`p2p: --network-key: ${err.message}\n`);
      return 1;
    }
  }
  let node: P2PNode;
  const dataDir =
    options.ephemeral || (options.dataDir === undefined && options.port === 0)
      ? undefined
      : (options.dataDir ?? defaultDataDir(options.port, io.env));
  // From here on a stop signal is never lost, even one that arrives while the node is starting
  // (registered before createNode's first await: no signal can be handled before that). Left in
  // place until the node has closed: a second signal (a closed terminal sends SIGHUP more than once)
  // must not kill it half way through its shutdown.
  const onSignal = (): void => quit();
  // Exits that skip the return path below (an uncaught exception) still write the queued lines.
  const onExit = (): void => sink.flush();
  for (const signal of STOP_SIGNALS) io.signals.on(signal, onSignal);
  io.signals.on('exit', onExit);
  const unlisten = (): void => {
    for (const signal of STOP_SIGNALS) io.signals.off(signal, onSignal);
    io.signals.off('exit', onExit);
  };
  try {
    node = await createNode({
      port: options.port,
      ...(dataDir !== undefined ? { dataDir } : {}),
      ...(networkKey !== undefined ? { networkKey } : {}),
      history: {
        ...(options.historyMessages !== undefined ? { maxMessages: options.historyMessages } : {}),
        ...(options.historyAgeMs !== undefined ? { maxAgeMs: options.historyAgeMs } : {}),
      },
      peers: options.peers,
      nick: options.nick ?? defaultNick(io.env),
      maxPeers: options.maxPeers,
      log,
      ...(options.host !== undefined ? { host: options.host } : {}),
      ...(options.advertise !== undefined ? { advertise: options.advertise } : {}),
    });
  } catch (err) {
    unlisten();
    sink.close();
    io.stderr.write(`p2p: ${startFailure(err, options, dataDir)}\n`);
    return 1;
  }

  const subscription = new Subscription();
  subscription.add(node.messages$.subscribe((m) => sink.message(m)));
  subscription.add(
    node.events$.subscribe((e) =>
      e.type === 'peer-up' ? sink.peerUp(e.peer) : sink.peerDown(e.peer, e.reason),
    ),
  );
  // Stopped while starting: no ready line for a node that is leaving at once.
  if (!quitRequested) {
    sink.ready({ id: node.id, port: node.port, nick: node.nick });
    sink.history(node.history(START_HISTORY), true);
  }

  // The text lines of one turn of the event loop (one read of stdin: a paste, a piped file) go out
  // together, in order: one signature and one log write for all of them. A command sends the lines
  // before it first, so /nick and the like take effect exactly between the lines around them.
  // Lines go out no faster than peers take one sender's messages (the node's sender rate): past it
  // they would drop the excess and fetch it again later, at a multiple of the cost. A longer paste
  // waits here, in order, with stdin no longer read while more than QUEUE_HIGH lines wait.
  // 90 % of it: peers start counting when the first line arrives (after this node signed and sent
  // the whole first burst), and later lines may reach them faster than the first did.
  const { perSecond, burst } = LIMIT_DEFAULTS.senderMessages;
  const pace = new TokenBucket({ perSecond: perSecond * 0.9, burst: Math.floor(burst * 0.9) });
  const queue: (string | { readonly command: string })[] = [];
  let head = 0;
  let held = false;
  let timer: NodeJS.Timeout | undefined;
  let scheduled = false;
  const send = (texts: string[]): void => {
    if (texts.length > 0) for (const message of node.sendAll(texts)) sink.sent(message);
  };
  const drain = (): void => {
    timer = undefined;
    scheduled = false;
    let texts: string[] = [];
    while (head < queue.length && !quitRequested) {
      const entry = queue[head]!;
      if (typeof entry === 'string') {
        if (!pace.tryTake()) break;
        texts.push(entry);
        head++;
        continue;
      }
      send(texts);
      texts = [];
      head++;
      runCommand(entry.command, node, sink, quit);
    }
    send(texts);
    // Lines after a /quit are dropped: the node is closing.
    if (quitRequested) return;
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    } else {
      // A long piped file never empties the queue: drop what has gone, or it would all stay held.
      if (head >= 1024 && head * 2 >= queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      // Wait for tokens for a few lines at once: one signature for them, not one per line.
      timer = setTimeout(drain, pace.msUntil(Math.min(queue.length - head, PACE_BATCH)));
    }
    if (held && queue.length - head <= QUEUE_LOW) {
      held = false;
      sink.holdInput(false);
    }
  };
  subscription.add(() => clearTimeout(timer));
  subscription.add(
    sink.lines$.subscribe({
      next: (line) => {
        const text = textOf(line, sink);
        if (text === undefined) return;
        queue.push(text);
        if (!held && queue.length - head > QUEUE_HIGH) {
          held = true;
          sink.holdInput(true);
        }
        if (timer !== undefined) return; // paced: it goes when the lines before it have gone
        if (typeof text !== 'string')
          drain(); // a command takes effect now, after the lines before it
        else if (!scheduled) {
          scheduled = true;
          queueMicrotask(() => scheduled && drain());
        }
      },
      // At the end of piped input the node stays up, relaying, until a signal; a terminal's Ctrl+D
      // quits, whatever stdout is (`bin/p2p 8001 | tee chat.log` is typed at too).
      complete: () => {
        if (io.stdin.isTTY === true) quit();
      },
    }),
  );

  await quitting;
  const unsent = queue.length - head;
  if (unsent > 0) sink.notice(`${unsent} typed line(s) not sent: the node is closing`);
  subscription.unsubscribe();
  sink.close();
  await Promise.race([node.close(), new Promise((resolve) => setTimeout(resolve, CLOSE_GRACE_MS).unref())]);
  unlisten();
  return 0;
}

/** What a typed line is: a chat text, a command, or nothing to send (blank, too long: noticed). */
function textOf(raw: string, sink: ConsoleSink): string | { readonly command: string } | undefined {
  const line = raw.replace(/\r$/, '');
  if (line.trim().length === 0) return undefined;
  if (line.startsWith('/') && !line.startsWith('//')) return { command: line };
  const text = line.startsWith('//') ? line.slice(1) : line;
  if (text.length > MAX_TEXT_LENGTH) {
    // A line past MAX_LINE_CHARS reached here cut (see pipeLines): its length is not known.
    const length = line.length > MAX_LINE_CHARS ? `more than ${MAX_LINE_CHARS}` : `${text.length}`;
    sink.notice(`message not sent: ${length} characters, the limit is ${MAX_TEXT_LENGTH}`);
    return undefined;
  }
  return text;
}

function runCommand(line: string, node: P2PNode, sink: ConsoleSink, quit: () => void): void {
  // The argument is the rest of the line as typed (trimmed): a nick keeps its inner spaces.
  const [, command = '', arg = ''] = /^(\S*)\s*(.*)$/su.exec(line.trim()) ?? [];
  switch (command) {
    case '/help':
      sink.notice(HELP_TEXT);
      return;
    case '/peers':
      sink.peers(node.peers());
      return;
    case '/history': {
      const n = arg === '' ? 20 : Number(arg);
      if (!Number.isInteger(n) || n < 1) {
        sink.notice('/history: expected a number of messages, e.g. /history 50');
        return;
      }
      sink.history(node.history(n), false);
      return;
    }
    case '/nick':
      try {
        node.setNick(arg);
        sink.setPrompt(node.nick);
        sink.notice(`you are now ${node.nick}`);
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        sink.notice(`/nick: ${err.message}`);
      }
      return;
    case '/connect':
      try {
        sink.notice(connectNotice(arg, node.connect(arg)));
      } catch (err) {
        if (!(err instanceof AddressError)) throw err;
        sink.notice(`/connect: ${err.message}`);
      }
      return;
    case '/quit':
    case '/exit':
      quit();
      return;
    default:
      sink.notice(`unknown command ${command}; /help lists them (start a message with // to send a /)`);
  }
}

/** The line `/connect` shows: what the node does with the address now. */
function connectNotice(addr: string, outcome: ConnectOutcome): string {
  switch (outcome) {
    case 'dialling':
      return `dialling ${addr}`;
    case 'already-dialling':
      return `already dialling ${addr}`;
    case 'connected':
      return `already connected to ${addr} (redialled if the link breaks)`;
    case 'full':
      return `not dialling ${addr} now: already at --max-peers; it is dialled once a peer leaves`;
    case 'self':
      return `${addr} is this node: not dialling it`;
    case 'closed':
      return `not dialling ${addr}: the node is closing`;
  }
}

function defaultNick(env: NodeJS.ProcessEnv): string {
  const user = (env['USER'] ?? env['USERNAME'] ?? '').replace(/[\p{Cc}\p{Surrogate}]/gu, '');
  // At most MAX_NICK_LENGTH UTF-16 units, cut between characters (an emoji is two).
  let nick = '';
  for (const char of user) {
    if (nick.length + char.length > MAX_NICK_LENGTH) break;
    nick += char;
  }
  return nick.length > 0 ? nick : 'anon';
}

/** The system calls of listening: an error from any other comes from the data directory. */
const LISTEN_CALLS: ReadonlySet<string> = new Set(['listen', 'bind', 'getaddrinfo']);

function startFailure(err: unknown, options: CliOptions, dataDir: string | undefined): string {
  if (err instanceof SecurityError) return `cannot start: ${err.message}`;
  if (err instanceof DataDirLockedError) {
    // The default directory is the port's own: the node holding it was started on this port, as when
    // one command is run twice, and the port is what to change (its own --data-dir would only make
    // this one fail next on the port in use).
    if (options.dataDir === undefined) {
      const pid = err.pid === undefined ? '' : ` (pid ${err.pid})`;
      return `cannot start: another node${pid} runs on port ${options.port} (its data directory ${err.dir} is in use); pick another port`;
    }
    return `${err.message}: another node runs with it; give this one its own --data-dir (or --ephemeral)`;
  }
  const { code, syscall } = (err ?? {}) as NodeJS.ErrnoException;
  // A file system call that failed (or a write the disk cut short): the data directory, not the port.
  if (
    err instanceof Error &&
    (code === 'ERR_SHORT_WRITE' || (syscall !== undefined && !LISTEN_CALLS.has(syscall)))
  ) {
    const what = dataDir === undefined ? 'cannot start' : `cannot use the data directory ${dataDir}`;
    return `${what}: ${err.message}; give it another --data-dir, or --ephemeral`;
  }
  const where = options.host === undefined ? `port ${options.port}` : `${options.host} port ${options.port}`;
  switch (code) {
    case 'EADDRINUSE':
      return `cannot listen on ${where}: it is already in use (another node running?); pick another port`;
    case 'EACCES':
      return `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${where}: ${options.host ?? 'that address'} is not an address of this host`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot listen on ${where}: cannot resolve ${options.host ?? 'the host'}`;
    default:
      if (err instanceof Error && code !== undefined) return `cannot listen on ${where}: ${err.message}`;
      throw err;
  }
}

/**
 * Entry point of `bin/p2p`: runs {@link main} and exits with its code, once stdout has written what
 * it holds (see {@link exitWhenWritten}).
 * @param early stop signals (of {@link STOP_SIGNALS}) that `bin/p2p` caught while this code was loading,
 *   in order: handed to `main` as soon as it listens for them, so that one sent right at start-up
 *   stops the node cleanly instead of being lost.
 */
export function run(argv: readonly string[], early: readonly NodeJS.Signals[] = []): void {
  // The streams' isTTY, not node:tty's isatty: the streams are made anyway, and node:tty (~0.15 MB
  // of an idle node) is loaded by them only where one is a terminal.
  const streams = [process.stdin, process.stdout, process.stderr];
  terminalsAtStart = [0, 1, 2].filter((fd) => streams[fd]!.isTTY === true);
  // A copy: bin/p2p's own listener, still there until run returns, adds each one emitted here again.
  const caught = [...early];
  const exitCode = main(argv);
  // main listens for the signals from before its first await (see runNode), so by now; a run that
  // starts no node (--help, a usage error) has no listener, and exits on its own anyway.
  for (const signal of caught) process.emit(signal, signal);
  exitCode.then(
    (code) => exitWhenWritten(code),
    (err: unknown) => {
      // A bug, not a user or network error: show it whole.
      console.error(err);
      exitWhenWritten(70);
    },
  );
}

/**
 * `process.exit(code)`, after stdout has written what is buffered in it, or after EXIT_FLUSH_MS. A
 * pipe is asynchronous on POSIX: data it could not take yet sits in the stream, and `process.exit`
 * would drop it. The empty write's callback runs once everything written before it is out.
 */
function exitWhenWritten(code: number): void {
  const out = process.stdout;
  // Last of the 'exit' listeners: after the console has written out what it still held.
  process.once('exit', closeLostTerminals);
  if (out.writableLength === 0 || out.destroyed) process.exit(code);
  const exit = (): never => process.exit(code);
  setTimeout(exit, EXIT_FLUSH_MS);
  out.once('error', exit);
  out.write('', exit);
}

/** The standard streams (fds 0-2) that were a terminal when {@link run} started. */
let terminalsAtStart: readonly number[] = [];

/**
 * Closes each standard stream that was a terminal at start and is none now: the terminal was closed
 * (hung up; `isatty` then fails with EIO). At exit, Node 20 puts the modes each such terminal had at
 * start back, and aborts (SIGABRT and a core dump, after a clean shutdown) when that fails, as it does
 * on a terminal that has gone (nodejs/node#51519, fixed by nodejs/node#58200 in later versions). It
 * skips a descriptor that is closed.
 */
function closeLostTerminals(): void {
  if (terminalsAtStart.length === 0) return;
  // Loaded already: by the terminal's stream.
  const { isatty } = createRequire(import.meta.url)('node:tty') as typeof import('node:tty');
  for (const fd of terminalsAtStart) {
    if (isatty(fd)) continue;
    try {
      closeSync(fd);
    } catch (err) {
      // Closed already (EBADF): nothing for Node to restore either.
      if (typeof (err as NodeJS.ErrnoException).code !== 'string') throw err;
    }
  }
}
