/**
 * Real `bin/p2p` processes for the CLI specs: spawn them, read their `--json` events and their stderr,
 * type into their stdin, wait (always with a bound) for what they print, and kill them by pid at the end.
 *
 * Every process is spawned through a {@link Procs} registry whose `stopAll()` runs in `t.after` (or a
 * suite's `after`), so a failing test still leaves no process behind. As a last resort, any child still
 * alive when the test process exits is sent SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type AddressInfo, type Server } from 'node:net';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isAlive } from './pids.js';

/** The repository root: every process runs there, as `bin/p2p`. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = 'bin/p2p';

/** Default bound of a wait. Generous for a loaded CI machine, short next to the suite's budget. */
export const WAIT_MS = 8_000;
/** How long a process has to exit after SIGTERM before it gets SIGKILL. The CLI's own grace is 2 s. */
export const TERM_GRACE_MS = 3_500;

export interface ReadyEvent {
  readonly event: 'ready';
  readonly id: string;
  readonly port: number;
  readonly nick: string;
}
export interface MessageEvent {
  readonly event: 'message';
  readonly id: string;
  readonly from: string;
  readonly nick: string;
  readonly text: string;
  readonly ts: number;
}
export interface SentEvent {
  readonly event: 'sent';
  readonly id: string;
  readonly ts: number;
}
export interface PeerFields {
  readonly peer: string;
  readonly nick: string;
  readonly address: string;
  readonly direction: 'in' | 'out';
}
export interface PeerUpEvent extends PeerFields {
  readonly event: 'peer-up';
}
export interface PeerDownEvent extends PeerFields {
  readonly event: 'peer-down';
  readonly reason: string;
}
export interface PeersEvent {
  readonly event: 'peers';
  readonly peers: readonly PeerFields[];
}
/** One line of `--json` stdout. */
export type CliEvent = ReadyEvent | MessageEvent | SentEvent | PeerUpEvent | PeerDownEvent | PeersEvent;

export const isMessage = (e: CliEvent): e is MessageEvent => e.event === 'message';
export const isPeerUp = (e: CliEvent): e is PeerUpEvent => e.event === 'peer-up';
export const isPeerDown = (e: CliEvent): e is PeerDownEvent => e.event === 'peer-down';

/** How a process ended. */
export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Program to run instead of `bin/p2p` (e.g. `script` for a pseudo-terminal). */
  readonly command?: string;
  /** Parse stdout as one JSON event per line. Default: true when the arguments contain `--json`. */
  readonly json?: boolean;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
}

/** Children still running, killed with SIGKILL if the test process exits before they do. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) {
    try {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The pids of a process's descendants (Linux /proc), deepest last. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    let text: string;
    try {
      text = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8');
    } catch {
      return; // gone, or not Linux
    }
    for (const child of text.split(/\s+/).filter(Boolean).map(Number)) {
      out.push(child);
      visit(child);
    }
  };
  visit(pid);
  return out;
}

/** Where the spawned nodes keep their data directories: one fresh folder per test file run. */
export const STATE_HOME = mkdtempSync(join(tmpdir(), 'p2p-spec-state-'));
process.once('exit', () => rmSync(STATE_HOME, { recursive: true, force: true }));

/** One spawned process, its output as it arrives, and bounded waits on it. */
export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly args: readonly string[];
  /** The program run (`bin/p2p` unless a test chose another). */
  readonly command: string;
  /** `--json` events, in order. */
  readonly events: CliEvent[] = [];
  /** Lines of stdout that were not JSON objects (in `--json` mode there must be none). */
  readonly nonJsonLines: string[] = [];
  /** How it ended, once it has (set on `close`: its stdio is fully read by then). */
  exit: Exit | undefined;
  /** Resolves when the process has exited and its stdio is closed. */
  readonly exited: Promise<Exit>;

  private stdoutBuf = '';
  private stderrBuf = '';
  private stdoutPartial = '';
  private readonly json: boolean;
  private readonly listeners = new Set<() => void>();

  constructor(args: readonly string[], options: SpawnOptions = {}) {
    this.args = args;
    this.command = options.command ?? BIN;
    this.json = options.json ?? args.includes('--json');
    // Default data directories (per port) go under a state home of this test run, never the user's.
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['NODE_TEST_CONTEXT']; // the child is a program under test, not a test file
    delete env['NODE_OPTIONS']; // tsx's, of this test process (a test may give its own)
    Object.assign(env, { XDG_STATE_HOME: STATE_HOME }, options.env);
    this.child = spawn(this.command, [...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env,
    });
    if (this.child.pid === undefined) throw new Error(`could not spawn ${this.command}`);
    this.pid = this.child.pid;
    live.add(this.child);
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => this.onStdout(chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrBuf += chunk;
      this.notify();
    });
    this.child.stdin!.on('error', () => {}); // EPIPE once the process is gone
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once('close', (code, signal) => {
        live.delete(this.child);
        this.exit = { code, signal };
        this.notify();
        resolve(this.exit);
      });
    });
  }

  /** Everything written to stdout so far. */
  get stdout(): string {
    return this.stdoutBuf;
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.stderrBuf;
  }

  /** Complete lines of stderr so far. */
  get stderrLines(): string[] {
    return this.stderrBuf.split('\n').filter((line) => line.length > 0);
  }

  /** The `ready` event, once it came. */
  get ready(): ReadyEvent | undefined {
    return this.events.find((e): e is ReadyEvent => e.event === 'ready');
  }

  /** Types one line (a newline is added). */
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Writes raw text to stdin (for a terminal: `\r` is Enter). */
  write(text: string): void {
    this.child.stdin!.write(text);
  }

  /** Closes stdin (end of input). */
  endStdin(): void {
    this.child.stdin!.end();
  }

  /**
   * Resolves with the first non-undefined value of `check`, evaluated now and after every bit of
   * output. Rejects after `timeoutMs`, or when the process exits while `check` still fails.
   */
  waitUntil<T>(check: () => T | undefined, timeoutMs = WAIT_MS, what = 'a condition'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const evaluate = (): void => {
        let value: T | undefined;
        try {
          value = check();
        } catch (err) {
          finish();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (value !== undefined) {
          finish();
          resolve(value);
        } else if (this.exit !== undefined) {
          finish();
          reject(new Error(`${this.describe()} exited (${JSON.stringify(this.exit)}) before ${what}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.describe()}`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.listeners.delete(evaluate);
      };
      this.listeners.add(evaluate);
      evaluate();
    });
  }

  /** The first event (already seen or still to come) that matches. */
  waitForEvent<E extends CliEvent>(
    pred: ((e: CliEvent) => e is E) | ((e: CliEvent) => boolean),
    timeoutMs = WAIT_MS,
    what = 'an event',
  ): Promise<E> {
    return this.waitUntil(() => this.events.find(pred) as E | undefined, timeoutMs, what);
  }

  /** Waits until `count` events (seen or to come) match; resolves with all that match. */
  waitForEvents<E extends CliEvent>(
    pred: ((e: CliEvent) => e is E) | ((e: CliEvent) => boolean),
    count: number,
    timeoutMs = WAIT_MS,
    what = `${count} events`,
  ): Promise<E[]> {
    return this.waitUntil(
      () => {
        const found = this.events.filter(pred) as E[];
        return found.length >= count ? found : undefined;
      },
      timeoutMs,
      what,
    );
  }

  /** Waits for a message event with this text. */
  waitForMessage(text: string, timeoutMs = WAIT_MS): Promise<MessageEvent> {
    return this.waitForEvent(
      (e): e is MessageEvent => isMessage(e) && e.text === text,
      timeoutMs,
      `message ${JSON.stringify(text)}`,
    );
  }

  /** Waits for a peer-up event for the node with this id. */
  waitForPeerUp(id: string, timeoutMs = WAIT_MS): Promise<PeerUpEvent> {
    return this.waitForEvent(
      (e): e is PeerUpEvent => isPeerUp(e) && e.peer === id,
      timeoutMs,
      `peer-up of ${id}`,
    );
  }

  /** Waits for a peer-down event for the node with this id. */
  waitForPeerDown(id: string, timeoutMs = WAIT_MS): Promise<PeerDownEvent> {
    return this.waitForEvent(
      (e): e is PeerDownEvent => isPeerDown(e) && e.peer === id,
      timeoutMs,
      `peer-down of ${id}`,
    );
  }

  /** Waits until `n` distinct peers came up (seen or to come); resolves with their ids. */
  waitForPeerCount(n: number, timeoutMs = WAIT_MS): Promise<string[]> {
    return this.waitUntil(
      () => {
        const ids = new Set(this.events.filter(isPeerUp).map((e) => e.peer));
        return ids.size >= n ? [...ids] : undefined;
      },
      timeoutMs,
      `${n} peers up`,
    );
  }

  /** Waits for a stderr line that matches. */
  waitForStderr(pred: RegExp | ((line: string) => boolean), timeoutMs = WAIT_MS): Promise<string> {
    const test = typeof pred === 'function' ? pred : (line: string) => pred.test(line);
    return this.waitUntil(
      () => this.stderrLines.find(test),
      timeoutMs,
      `a stderr line matching ${String(pred)}`,
    );
  }

  /** Waits until stdout (raw text) matches; resolves with the match. */
  waitForStdout(pattern: RegExp, timeoutMs = WAIT_MS): Promise<RegExpMatchArray> {
    return this.waitUntil(
      () => this.stdoutBuf.match(pattern) ?? undefined,
      timeoutMs,
      `stdout matching ${String(pattern)}`,
    );
  }

  /** Waits for the process to end on its own. */
  waitForExit(timeoutMs = WAIT_MS): Promise<Exit> {
    return this.waitUntil(() => this.exit, timeoutMs, 'exit');
  }

  /** Sends a signal to the process (by pid). */
  signal(signal: NodeJS.Signals): void {
    if (this.exit === undefined) process.kill(this.pid, signal);
  }

  /**
   * Stops the process: `signal` (SIGTERM), then SIGKILL if it is still running after `graceMs`.
   * Its descendants (a pty's child) are killed by pid as well. Resolves with how it ended.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = TERM_GRACE_MS): Promise<Exit> {
    const children = descendants(this.pid);
    if (this.exit === undefined) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // exited between the check and the kill
      }
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>(
        (resolve) => (timer = setTimeout(() => resolve('timeout'), graceMs)),
      );
      const first = await Promise.race([this.exited, timedOut]);
      clearTimeout(timer);
      if (first === 'timeout') {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          // gone
        }
        await Promise.race([this.exited, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
      }
    }
    for (const pid of children) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    return this.exit ?? { code: null, signal: 'SIGKILL' };
  }

  /** A short description for error messages: the command line and the tail of stderr. */
  describe(): string {
    const tail = this.stderrLines.slice(-8).join('\n    ');
    return `${this.command} ${this.args.join(' ')} (pid ${this.pid})${tail ? `\n  stderr:\n    ${tail}` : ''}`;
  }

  private onStdout(chunk: string): void {
    this.stdoutBuf += chunk;
    if (this.json) {
      const lines = (this.stdoutPartial + chunk).split('\n');
      this.stdoutPartial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.length === 0) continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          this.nonJsonLines.push(line);
          continue;
        }
        if (typeof parsed === 'object' && parsed !== null && 'event' in parsed)
          this.events.push(parsed as CliEvent);
        else this.nonJsonLines.push(line);
      }
    }
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** The processes of one test (or one suite); `stopAll()` kills every one of them. */
export class Procs {
  private readonly all = new Set<Proc>();

  /** Spawns `bin/p2p args` (or `options.command args`). */
  spawn(args: readonly string[], options: SpawnOptions = {}): Proc {
    const proc = new Proc(args, options);
    this.all.add(proc);
    return proc;
  }

  /**
   * Starts `bin/p2p <port> [peers...] --json [--nick nick] [extra...]` and waits for its `ready`
   * event; `port` defaults to 0.
   */
  async node(
    options: {
      readonly port?: number;
      readonly peers?: readonly string[];
      readonly nick?: string;
      /** Listen on this interface only. Default 127.0.0.1 (loopback only). */
      readonly host?: string | null;
      readonly extra?: readonly string[];
    } = {},
  ): Promise<Proc & { readonly ready: ReadyEvent }> {
    const host = options.host === undefined ? '127.0.0.1' : options.host;
    const args = [
      String(options.port ?? 0),
      ...(options.peers ?? []),
      '--json',
      ...(options.nick !== undefined ? ['--nick', options.nick] : []),
      ...(host !== null ? ['--host', host] : []),
      ...(options.extra ?? []),
    ];
    const proc = this.spawn(args);
    await proc.waitForEvent((e) => e.event === 'ready', WAIT_MS, 'the ready event');
    return proc as Proc & { readonly ready: ReadyEvent };
  }

  /** Stops every process still running (SIGTERM, then SIGKILL after a bound), all in parallel. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.all].map((proc) => proc.stop()));
  }
}

/** A registry whose processes are all stopped when test `t` ends, pass or fail. */
export function procsFor(t: TestContext): Procs {
  const procs = new Procs();
  t.after(() => procs.stopAll());
  return procs;
}

/** What a short-lived run printed and how it ended. */
export interface RunResult extends Exit {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `bin/p2p args` with stdin closed and resolves once it exits by itself; kills it (and rejects)
 * if it is still running after `timeoutMs`.
 */
export async function runCli(args: readonly string[], timeoutMs = WAIT_MS): Promise<RunResult> {
  const proc = new Proc(args, { json: false });
  proc.endStdin();
  try {
    const exit = await proc.waitForExit(timeoutMs);
    return { ...exit, stdout: proc.stdout, stderr: proc.stderr };
  } finally {
    await proc.stop('SIGKILL', 1_000);
  }
}

/**
 * `n` distinct TCP ports that were free on 127.0.0.1 a moment ago: each taken by listening on port 0,
 * all held at once (so they differ), then released.
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}
