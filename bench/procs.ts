/**
 * Processes for the benchmark: free ports, spawning `bin/p2p` nodes, reading their `--json` stdout as
 * it arrives, `/proc` accounting (CPU, RSS, bytes and write calls), and killing every node by pid.
 *
 * Linux only (reads `/proc`). Every spawned pid is also written, with its start time, to a pid file,
 * so that nodes left behind by a benchmark that was SIGKILLed are killed by the next run (only when
 * both the pid and its start time still match).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Clock ticks per second of `/proc/PID/stat` (100 on every Linux in practice). */
const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

const T0 = process.hrtime.bigint();
/** Nanoseconds since the benchmark started (monotonic). */
export const nowNs = (): number => Number(process.hrtime.bigint() - T0);
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---- /proc -------------------------------------------------------------------------------------

interface Stat {
  readonly state: string;
  readonly ticks: number;
  readonly start: string;
}

function readStat(pid: number): Stat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state); utime 14, stime 15, cutime 16, cstime 17, starttime 22.
    const n = (i: number): number => Number(f[i] ?? 0);
    return { state: f[0] ?? '?', ticks: n(11) + n(12) + n(13) + n(14), start: f[19] ?? '' };
  } catch {
    return undefined;
  }
}

function readKb(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

/** What `/proc` says about one process at one moment. */
export interface Sample {
  readonly alive: boolean;
  /** utime + stime (+ children's), seconds. */
  readonly cpuS: number;
  /** Peak resident set (`VmHWM`), kB. */
  readonly hwmKb: number;
  /** Resident set now (`VmRSS`), kB. */
  readonly rssKb: number;
  /** Bytes given to write()/send() and friends (`wchar` of /proc/PID/io): sockets, stdout, stderr. */
  readonly wchar: number;
  /** Write system calls (`syscw`). */
  readonly syscw: number;
}

const DEAD: Sample = { alive: false, cpuS: 0, hwmKb: 0, rssKb: 0, wchar: 0, syscw: 0 };

export function sample(pid: number): Sample {
  const stat = readStat(pid);
  if (stat === undefined || stat.state === 'Z') return DEAD;
  let status = '';
  let io = '';
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
    io = readFileSync(`/proc/${pid}/io`, 'utf8');
  } catch {
    // gone between the reads
  }
  const ioField = (key: string): number => Number(new RegExp(`^${key}: (\\d+)`, 'm').exec(io)?.[1] ?? 0);
  return {
    alive: true,
    cpuS: stat.ticks / CLK_TCK,
    hwmKb: readKb(status, 'VmHWM'),
    rssKb: readKb(status, 'VmRSS'),
    wchar: ioField('wchar'),
    syscw: ioField('syscw'),
  };
}

/**
 * Bytes each established TCP socket of the given processes has sent (tcp_info `bytes_sent` less
 * `bytes_retrans`, from `ss`), by pid, then by `local remote` address pair. Sockets closed meanwhile
 * are missing: read it before and after a phase and subtract per socket.
 */
export function socketBytesSent(pids: ReadonlySet<number>): Map<number, Map<string, number>> {
  const out = new Map<number, Map<string, number>>();
  let text: string;
  try {
    text = execFileSync('ss', ['-tinpH', 'state', 'established'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch {
    return out; // no ss: the wire columns stay empty
  }
  const lines = text.split('\n');
  for (let i = 0; i < lines.length - 1; i++) {
    const head = lines[i]!;
    const pid = /pid=(\d+)/.exec(head);
    if (pid === null || !pids.has(Number(pid[1]))) continue;
    const cols = head.trim().split(/\s+/);
    const info = lines[i + 1]!;
    const num = (key: string): number => Number(new RegExp(`\\b${key}:(\\d+)`).exec(info)?.[1] ?? 0);
    const key = `${cols[2]} ${cols[3]}`;
    const bytes = num('bytes_sent') - num('bytes_retrans');
    const byPid = out.get(Number(pid[1])) ?? new Map<string, number>();
    byPid.set(key, bytes);
    out.set(Number(pid[1]), byPid);
    i++;
  }
  return out;
}

/** CPU seconds all processes of the machine have used since boot (`/proc/stat`, every core, not idle). */
export function machineBusyS(): number {
  try {
    const first = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal ...
    const f = first.trim().split(/\s+/).slice(1).map(Number);
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / CLK_TCK;
  } catch {
    return 0;
  }
}

// ---- ports -------------------------------------------------------------------------------------

function portIsFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) =>
      // A host without IPv6 cannot be in the way on '::'.
      resolve(err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL'),
    );
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * Hands out ports from a range, each checked free on 0.0.0.0 and :: just before use, moving on at
 * every call so that no run reuses a port still in TIME_WAIT from the previous one.
 */
export class PortRange {
  private cursor: number;

  constructor(
    readonly first: number,
    readonly last: number,
  ) {
    if (
      !Number.isInteger(first) ||
      !Number.isInteger(last) ||
      first < 1024 ||
      last > 65535 ||
      last - first < 200
    )
      throw new RangeError(`port range ${first}-${last}: want 1024 <= first, last <= 65535, 200+ ports`);
    // Start somewhere depending on the pid, so two benchmarks at once rarely race for a port.
    this.cursor = first + (process.pid % (last - first - 150));
  }

  async take(n: number): Promise<number[]> {
    const ports: number[] = [];
    const span = this.last - this.first + 1;
    for (let tries = 0; ports.length < n; tries++) {
      if (tries > span) throw new Error(`no ${n} free ports in ${this.first}-${this.last}`);
      if (this.cursor > this.last) this.cursor = this.first;
      const port = this.cursor++;
      if ((await portIsFree(port, '0.0.0.0')) && (await portIsFree(port, '::'))) ports.push(port);
    }
    return ports;
  }
}

// ---- pid file ----------------------------------------------------------------------------------

interface PidEntry {
  readonly pid: number;
  readonly start: string;
  readonly owner: number;
  readonly ownerStart: string;
}

const PIDFILE = join(tmpdir(), `p2p-own-bench-${process.getuid?.() ?? 'u'}.pids.json`);
const selfStart = readStat(process.pid)?.start ?? '';

function pidfileLoad(): PidEntry[] {
  try {
    return JSON.parse(readFileSync(PIDFILE, 'utf8')) as PidEntry[];
  } catch {
    return [];
  }
}

function pidfileSave(entries: readonly PidEntry[]): void {
  try {
    writeFileSync(PIDFILE, JSON.stringify(entries));
  } catch {
    // best effort: the exit handler still kills what this run started
  }
}

/** Kills nodes left by an earlier benchmark that died without cleaning up (pid and start time must match). */
export function reapStale(): number {
  let killed = 0;
  const keep: PidEntry[] = [];
  for (const e of pidfileLoad()) {
    const owner = readStat(e.owner);
    if (owner !== undefined && owner.start === e.ownerStart && owner.state !== 'Z') {
      keep.push(e); // its benchmark is still running
      continue;
    }
    if (readStat(e.pid)?.start === e.start) {
      try {
        process.kill(e.pid, 'SIGKILL');
        killed++;
      } catch {
        // gone
      }
    }
  }
  pidfileSave(keep);
  return killed;
}

// ---- nodes -------------------------------------------------------------------------------------

/** Nodes whose process has not exited yet; SIGKILLed if the benchmark exits first. */
const live = new Set<NodeProc>();

export function killAllNow(): void {
  for (const node of live) node.kill('SIGKILL');
}

process.once('exit', killAllNow);

/** A `--json` event of `bin/p2p`, as far as the benchmark reads it. */
export interface JsonEvent {
  readonly event: string;
  readonly id?: string;
  readonly peer?: string;
  readonly text?: string;
  readonly port?: number;
  readonly reason?: string;
}

export interface NodeSpawn {
  /** The program and its leading arguments, e.g. `['bin/p2p']` or `[node, --cpu-prof, bin/p2p]`. */
  readonly command: readonly string[];
  readonly args: readonly string[];
  readonly cwd: string;
  /** Called for every stdout line that is a JSON object, with the arrival time (`nowNs`). */
  readonly onEvent: (node: NodeProc, event: JsonEvent, atNs: number) => void;
  /** Where to copy the node's stderr, if anywhere. */
  readonly logFile?: string;
  /** Environment variables added to the benchmark's own. */
  readonly env?: Readonly<Record<string, string>>;
}

/** One `bin/p2p` process. */
export class NodeProc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Set when `ready` came: the time and the event. */
  readyAtNs: number | undefined;
  readonly startedAtNs = nowNs();
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;
  /** Bytes read from its stdout and stderr so far, and lines. */
  stdoutBytes = 0;
  stderrBytes = 0;
  stdoutLines = 0;
  stderrLines = 0;
  /** The last 4 KB of stderr. */
  stderrTail = '';
  badLines = 0;
  private readonly log: WriteStream | undefined;

  constructor(
    readonly index: number,
    readonly port: number,
    spec: NodeSpawn,
  ) {
    const [program, ...lead] = spec.command;
    if (program === undefined) throw new RangeError('NodeProc: empty command');
    const env = { ...process.env, ...spec.env };
    delete env['NODE_OPTIONS'];
    this.child = spawn(program, [...lead, ...spec.args], {
      cwd: spec.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      env,
    });
    if (this.child.pid === undefined) throw new Error(`cannot spawn ${spec.command.join(' ')}`);
    this.pid = this.child.pid;
    live.add(this);
    const stat = readStat(this.pid);
    if (stat !== undefined) {
      pidfileSave([
        ...pidfileLoad(),
        { pid: this.pid, start: stat.start, owner: process.pid, ownerStart: selfStart },
      ]);
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        live.delete(this);
        pidfileSave(pidfileLoad().filter((e) => !(e.pid === this.pid && e.owner === process.pid)));
        resolve();
      });
    });
    this.child.stdin!.on('error', () => {}); // EPIPE once the node is gone
    this.log = spec.logFile === undefined ? undefined : createWriteStream(spec.logFile);
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const at = nowNs();
      this.stdoutBytes += Buffer.byteLength(chunk);
      let start = 0;
      let nl: number;
      const text = partial + chunk;
      while ((nl = text.indexOf('\n', start)) >= 0) {
        const line = text.slice(start, nl);
        start = nl + 1;
        this.stdoutLines++;
        if (line.charCodeAt(0) !== 123 /* { */) {
          this.badLines++;
          continue;
        }
        let event: JsonEvent;
        try {
          event = JSON.parse(line) as JsonEvent;
        } catch {
          this.badLines++;
          continue;
        }
        if (event.event === 'ready' && this.readyAtNs === undefined) this.readyAtNs = at;
        spec.onEvent(this, event, at);
      }
      partial = text.slice(start);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrBytes += Buffer.byteLength(chunk);
      for (let i = chunk.indexOf('\n'); i >= 0; i = chunk.indexOf('\n', i + 1)) this.stderrLines++;
      this.stderrTail = (this.stderrTail + chunk).slice(-4000);
      this.log?.write(chunk);
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** Writes to stdin; false when the pipe is full (wait for `drained()`). */
  write(text: string): boolean {
    return this.child.stdin!.write(text);
  }

  /** Resolves at the stdin pipe's next 'drain', or when the node exits. */
  drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.child.stdin!.off('drain', done);
        resolve();
      };
      this.child.stdin!.once('drain', done);
      void this.exited.then(done);
    });
  }

  sample(): Sample {
    return this.alive ? sample(this.pid) : DEAD;
  }

  kill(signal: NodeJS.Signals): void {
    if (!this.alive) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // exited meanwhile
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited (or after a last bound). */
  async stop(graceMs = 3000): Promise<void> {
    this.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), graceMs)));
    if ((await Promise.race([this.exited, late])) === 'late') {
      this.kill('SIGKILL');
      await Promise.race([this.exited, sleep(3000)]);
    }
    clearTimeout(timer);
    this.log?.end();
  }

  describe(): string {
    const how = this.exit === undefined ? 'running' : `exited ${JSON.stringify(this.exit)}`;
    return `node ${this.index} (port ${this.port}, pid ${this.pid}, ${how}); stderr tail: ${JSON.stringify(this.stderrTail.slice(-600))}`;
  }
}

/** Stops every node: SIGTERM to all at once, SIGKILL to those still up after the grace. */
export async function stopAll(nodes: readonly NodeProc[], graceMs = 3000): Promise<void> {
  await Promise.all(nodes.map((node) => node.stop(graceMs)));
}
