import minimist from 'minimist';
import { AddressError, parseAddress, parsePort, type Address } from '../protocol/address.js';
import { MAX_NICK_LENGTH } from '../protocol/frames.js';
import { LOG_LEVELS, type LogLevel } from '../node/log.js';
import { MAX_HISTORY_MESSAGES, MIN_HISTORY_AGE_MS } from '../store/message-store.js';

/** What the command line asks for. */
export interface CliOptions {
  readonly port: number;
  readonly peers: readonly Address[];
  readonly host: string | undefined;
  readonly advertise: Address | undefined;
  readonly nick: string | undefined;
  readonly json: boolean;
  readonly maxPeers: number;
  /** `--data-dir`; undefined: the default for the port (none for port 0 or with `--ephemeral`). */
  readonly dataDir: string | undefined;
  readonly ephemeral: boolean;
  readonly historyMessages: number | undefined;
  readonly historyAgeMs: number | undefined;
  /** `--network-key FILE`: join only the private network of that key. */
  readonly networkKeyFile: string | undefined;
  /** Undefined when not given: the CLI picks `warn` in a terminal (joins are shown there anyway), else `info`. */
  readonly logLevel: LogLevel | undefined;
}

export type ParsedArgs =
  | { readonly kind: 'run'; readonly options: CliOptions }
  | { readonly kind: 'create-network-key'; readonly path: string }
  | { readonly kind: 'help' }
  | { readonly kind: 'version' };

/** A command line that cannot be run; the CLI prints the message and the usage and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `usage: p2p <port> [host:port ...] [options]
       p2p --create-network-key FILE

Starts a chat node that listens on <port> (0: any free port), dials the given
peers (host:port, [ipv6]:port), learns more peers from them, and sends each line
typed on stdin to every node of the network.

options:
  --host ADDR          listen on this interface only (default: all interfaces)
  --advertise H:P      address peers should dial for this node, instead of the
                       one they see (port forwarding, NAT)
  --nick NAME          display name, 1-${MAX_NICK_LENGTH} UTF-16 code units (${MAX_NICK_LENGTH} letters of
                       most scripts, fewer for emoji; default: $USER, or anon)
  --json               one JSON event per line on stdout (see README)
  --max-peers N        most connected peers (default 32)
  --data-dir DIR       where the node keeps its id and history (default:
                       ~/.local/state/p2p/node-PORT; $XDG_STATE_HOME if set)
  --ephemeral          keep nothing on disk: a new id, history in memory only
                       (also the default with port 0)
  --history N          messages of history to keep and offer (default 10000;
                       1..1000000)
  --history-age AGE    oldest message kept: 30m, 12h, 7d (default 7d; at least
                       10m, at most 36525d, 100 years)
  --network-key FILE   join the private network of this key: nodes without it
                       are refused during the handshake
  --create-network-key FILE
                       write a new random network key to FILE (mode 0600), exit
  --log-level LEVEL    error, warn, info or debug, on stderr (default: info;
                       warn in a terminal, where joins and leaves are shown)
  -h, --help           show this help and exit
  -v, --version        print the version and exit

The flags (--json, --ephemeral, -h, -v) take no value: --json=false, --json=1
and --json false are refused; leave the flag out instead.

commands (type them in the chat): /help /peers /history [N] /nick NAME
  /connect HOST:PORT /quit
`;

const STRINGS = [
  'host',
  'advertise',
  'nick',
  'max-peers',
  'log-level',
  'data-dir',
  'history',
  'history-age',
  'network-key',
  'create-network-key',
] as const;
const BOOLEANS = ['json', 'help', 'version', 'ephemeral'] as const;
/** The one-letter options; each stands for a flag of {@link BOOLEANS}. */
const SHORT: Readonly<Record<string, (typeof BOOLEANS)[number]>> = { h: 'help', v: 'version' };
const VALUE_OPTIONS: ReadonlySet<string> = new Set(STRINGS.map((name) => `--${name}`));

/**
 * `--nick -1` as `--nick=-1`: a value that starts with a dash and a digit, after an option that takes
 * a value, is that value (no option is named so). minimist would take it for a flag of its own and
 * leave the option empty; so `--nick -1` names the node "-1" and `--max-peers -1` is refused as a
 * count out of range, as with `=`. Not after `--`, where everything is a positional.
 */
function valuesJoined(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (VALUE_OPTIONS.has(arg) && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** The arguments before `--`, where minimist reads options; after it, everything is a positional. */
function beforeDashes(argv: readonly string[]): readonly string[] {
  const end = argv.indexOf('--');
  return end === -1 ? argv : argv.slice(0, end);
}

/**
 * What is wrong with the first flag (an option of {@link BOOLEANS}, or `-h`, `-v`) given a value, or
 * undefined. A flag takes none, not even `true` or `false`: minimist reads `--json=no` and
 * `--ephemeral=0` as set, `--json=false` and `--json false` as not set, and `-h=1` or `-hx=1` as
 * neither (no help, and the node runs). Refused, all of them: what runs is what `--json` alone, or no
 * `--json`, says.
 */
function flagValueError(argv: readonly string[]): string | undefined {
  const args = beforeDashes(argv);
  const isFlag = (name: string): boolean => (BOOLEANS as readonly string[]).includes(name);
  const refusal = (flag: string, given: string): string =>
    `${flag} takes no value, got ${JSON.stringify(given)}: give it alone, or leave it out`;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    const long = /^--([^=]+)(=?)/.exec(arg);
    if (long !== null) {
      if (!isFlag(long[1]!)) continue;
      if (long[2] === '=') return refusal(`--${long[1]}`, arg);
      // minimist takes a `true` or `false` after a flag as its value.
      if (next === 'true' || next === 'false') return refusal(arg, `${arg} ${next}`);
      continue;
    }
    // A group of one-letter flags (`-hv`): minimist makes anything after its letters the value of a
    // letter in it, one it may not know (`-hx=1` sets -h to "x=1").
    const short = /^-([a-zA-Z]+)(.*)$/s.exec(arg);
    if (short === null) continue;
    const [, letters = '', rest] = short;
    const last = `-${letters.slice(-1)}`;
    if (rest !== '') {
      if ([...letters].some((letter) => !(letter in SHORT)))
        return `unknown option ${arg.replace(/=.*/s, '')}`;
      return refusal(last, arg);
    }
    if ((next === 'true' || next === 'false') && letters.slice(-1) in SHORT)
      return refusal(last, `${arg} ${next}`);
  }
  return undefined;
}

/**
 * Parses the command line (without `node` and the script).
 * @throws {UsageError} naming the first thing that is wrong.
 */
export function parseArgs(given: readonly string[]): ParsedArgs {
  const argv = valuesJoined(given);
  // `_` holds the positionals (see minimist's options below): as an option it would pass as known.
  const underscore = argv.find((arg) => /^--_(=|$)/.test(arg));
  if (underscore !== undefined) throw new UsageError(`unknown option ${underscore.replace(/=.*/, '')}`);
  // minimist reads any `--no-X` as `--X=false`: `--no-json` as no --json, `--no-nick` as the name
  // "false". No option here is spelt so: refused as unknown, not read as something not asked for.
  const negated = beforeDashes(argv).find((arg) => arg.startsWith('--no-'));
  if (negated !== undefined) throw new UsageError(`unknown option ${negated.replace(/=.*/, '')}`);
  const flagValue = flagValueError(argv);
  if (flagValue !== undefined) throw new UsageError(flagValue);
  const negative = argv.find((arg) => /^-\d/.test(arg));
  if (negative !== undefined)
    throw new UsageError(`${negative}: expected a port or count, not a negative number`);
  const unknown: string[] = [];
  const args = minimist([...argv], {
    // The positionals too: minimist makes numbers of number-like ones (0x1f41, 1e3, 8001.0), which
    // parsePort must see as typed to refuse.
    string: [...STRINGS, '_'],
    boolean: [...BOOLEANS],
    alias: { ...SHORT },
    unknown: (arg) => {
      if (/^-[^\d]/.test(arg) || arg.startsWith('--')) {
        unknown.push(arg);
        return false;
      }
      return true;
    },
  });
  if (unknown.length > 0) throw new UsageError(`unknown option ${unknown[0]!.replace(/=.*/, '')}`);
  if (args['help'] === true) return { kind: 'help' };
  if (args['version'] === true) return { kind: 'version' };
  const createKey = single(args, 'create-network-key');
  if (createKey !== undefined) {
    if (createKey === '') throw new UsageError('--create-network-key: expected a file name');
    return { kind: 'create-network-key', path: createKey };
  }

  const positional = args._.map(String);
  const [portText, ...peerTexts] = positional;
  if (portText === undefined) throw new UsageError('missing <port>');
  const port = wrap(() => parsePort(portText, true), 'port');
  const peers = peerTexts.map((text) => wrap(() => parseAddress(text), 'peer'));

  const advertiseText = single(args, 'advertise');
  const advertise =
    advertiseText === undefined ? undefined : wrap(() => parseAddress(advertiseText), '--advertise');
  if (advertise !== undefined && (advertise.host === '0.0.0.0' || advertise.host === '::')) {
    throw new UsageError(
      '--advertise: 0.0.0.0 and :: mean "any interface" and cannot be dialled; give a real address',
    );
  }
  const nick = single(args, 'nick');
  // Measured as the wire's limit is, in UTF-16 code units: an emoji is two.
  if (nick !== undefined && (nick.length === 0 || nick.length > MAX_NICK_LENGTH)) {
    throw new UsageError(
      `--nick: 1-${MAX_NICK_LENGTH} UTF-16 code units (${MAX_NICK_LENGTH} letters of most scripts, fewer for emoji), got ${nick.length}`,
    );
  }
  // createNode refuses a lone surrogate too (UTF-8 cannot carry one), with a RangeError: main's
  // rejection, a stack trace and exit 70, where this is a usage error.
  if (nick !== undefined && (/\p{Cc}/u.test(nick) || !nick.isWellFormed())) {
    throw new UsageError('--nick: a name without control characters or lone surrogates');
  }
  const maxPeersText = single(args, 'max-peers');
  let maxPeers = 32;
  if (maxPeersText !== undefined) {
    if (!/^\d+$/.test(maxPeersText) || Number(maxPeersText) < 1 || Number(maxPeersText) > 1024) {
      throw new UsageError(`--max-peers: expected a number in 1..1024, got ${JSON.stringify(maxPeersText)}`);
    }
    maxPeers = Number(maxPeersText);
  }
  const levelText = single(args, 'log-level');
  if (levelText !== undefined && !(LOG_LEVELS as readonly string[]).includes(levelText)) {
    throw new UsageError(
      `--log-level: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(levelText)}`,
    );
  }
  const dataDir = single(args, 'data-dir');
  if (dataDir === '') throw new UsageError('--data-dir: expected a directory');
  const ephemeral = args['ephemeral'] === true;
  if (ephemeral && dataDir !== undefined)
    throw new UsageError('--ephemeral and --data-dir exclude each other');
  const historyText = single(args, 'history');
  let historyMessages: number | undefined;
  if (historyText !== undefined) {
    if (!/^\d+$/.test(historyText) || Number(historyText) < 1 || Number(historyText) > MAX_HISTORY_MESSAGES) {
      throw new UsageError(
        `--history: expected a number of messages in 1..${MAX_HISTORY_MESSAGES}, got ${JSON.stringify(historyText)}`,
      );
    }
    historyMessages = Number(historyText);
  }
  const ageText = single(args, 'history-age');
  const historyAgeMs = ageText === undefined ? undefined : parseDuration(ageText, '--history-age');
  if (historyAgeMs !== undefined && historyAgeMs > MAX_HISTORY_AGE_MS) {
    throw new UsageError(`--history-age: at most 36525d (100 years), got ${JSON.stringify(ageText)}`);
  }
  if (historyAgeMs !== undefined && historyAgeMs < MIN_HISTORY_AGE_MS) {
    throw new UsageError(
      `--history-age: at least 10m, got ${JSON.stringify(ageText)} (no older message is taken in, so a shorter age drops messages of peers whose clocks lag; to keep fewer messages, use --history N)`,
    );
  }
  const networkKeyFile = single(args, 'network-key');
  if (networkKeyFile === '') throw new UsageError('--network-key: expected a file name');
  const host = single(args, 'host');
  if (host === '') throw new UsageError('--host: expected an address');
  return {
    kind: 'run',
    options: {
      port,
      peers,
      host,
      advertise,
      nick,
      json: args['json'] === true,
      maxPeers,
      dataDir,
      ephemeral,
      historyMessages,
      historyAgeMs,
      networkKeyFile,
      logLevel: levelText as LogLevel | undefined,
    },
  };
}

const UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Longest `--history-age`: 100 years. A message's timestamp counts from 1970, so until 2070 none is
 * older: a longer age keeps nothing more. Up to 999999d (8.6e16 ms) was taken, past the safe
 * integers and the range of a Date (8.64e15 ms either side of 1970).
 */
const MAX_HISTORY_AGE_MS = 36_525 * 86_400_000;

/** Parses `90s`, `30m`, `12h`, `7d` into milliseconds. */
export function parseDuration(text: string, what: string): number {
  const match = /^(\d{1,6})([smhd])$/.exec(text);
  if (match === null || Number(match[1]) === 0) {
    throw new UsageError(`${what}: expected a duration such as 30m, 12h or 7d, got ${JSON.stringify(text)}`);
  }
  return Number(match[1]) * UNITS[match[2]!]!;
}

function single(args: minimist.ParsedArgs, name: string): string | undefined {
  const value: unknown = args[name];
  if (value === undefined) return undefined;
  if (Array.isArray(value)) throw new UsageError(`--${name} given more than once`);
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function wrap<T>(parse: () => T, what: string): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof AddressError) throw new UsageError(`${what}: ${err.message}`);
    throw err;
  }
}
