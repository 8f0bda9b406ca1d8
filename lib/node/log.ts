/** Severity of a log line; each level includes the ones before it. */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/**
 * Where a node writes what it does. Every method takes one finished line (no trailing newline). A
 * line can carry text a peer chose (its nick, the reason in its `bye`), control characters and all:
 * a logger that writes to a terminal escapes them (the CLI's sinks do, with `sanitize`).
 */
export interface Logger {
  error(line: string): void;
  warn(line: string): void;
  info(line: string): void;
  debug(line: string): void;
}

/** A logger that drops everything: the default of `createNode`, so a library user's stderr stays quiet. */
export const silentLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/** A logger that writes lines at `level` or more severe through `write`, prefixed with their level. */
export function levelLogger(level: LogLevel, write: (line: string) => void): Logger {
  const rank = LOG_LEVELS.indexOf(level);
  const at = (l: LogLevel) =>
    LOG_LEVELS.indexOf(l) <= rank ? (line: string) => write(`${l}: ${line}`) : () => {};
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}
