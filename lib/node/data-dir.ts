/**
 * The node's data directory: where it is by default, and the lock that keeps a second process out
 * of it (two writers would interleave records in the history log and race on the identity key).
 *
 * The lock is a file, `lock`, taken and handed over with atomic file system operations only (Node
 * offers no advisory locks), so the directory must be on a file system with hard links:
 * - It is written in full to a file of our own, then hard-linked as `lock`: `link` fails with EEXIST
 *   when a lock is there, and a reader never sees a lock half written.
 * - A lock whose process is gone is stale. Of the processes that find one stale at once, at most one
 *   takes it over: each first creates (links) a claim file named after that lock (its inode and
 *   bytes); the one that creates it checks that `lock` is still that file, removes it, and takes the
 *   lock as above; the others find the claim, or a new lock, held by a live process and are refused.
 *   A claim left by a process that died meanwhile is stale in turn, and removed the same way.
 * - The release removes `lock` only while it is still ours (it names a random token of ours).
 */
import {
  closeSync,
  fstatSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { Buffer } from 'node:buffer';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { randomBytes, sha256 } from '../security/bytes.js';
import { errnoCode, openIfExists } from '../util/fs.js';

/**
 * The default data directory of the node listening on `port`: one per port, so several nodes on one
 * host never share one. `$XDG_STATE_HOME/p2p/node-PORT`, else `~/.local/state/p2p/node-PORT`. A
 * relative `$XDG_STATE_HOME` is ignored, as the XDG Base Directory spec says: the node's identity
 * and history would follow the working directory it was started in.
 */
export function defaultDataDir(port: number, env: NodeJS.ProcessEnv = process.env): string {
  const state = env['XDG_STATE_HOME'];
  const base = state !== undefined && isAbsolute(state) ? state : join(homedir(), '.local', 'state');
  return join(base, 'p2p', `node-${port}`);
}

/** Another live process (or this one) holds the data directory. */
export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
  readonly code = 'ERR_DATA_DIR_LOCKED';
  /**
   * @param dir the data directory.
   * @param pid the process holding it; undefined when the lock does not say (yet).
   */
  constructor(
    readonly dir: string,
    readonly pid: number | undefined,
  ) {
    const by = pid === process.pid ? 'this process' : 'another process';
    super(`data directory ${dir} is in use by ${by}${pid === undefined ? '' : ` (pid ${pid})`}`);
  }
}

const LOCK = 'lock';
/**
 * An empty lock younger than this may be one that p2p 0.1.0 is writing (it created the file, then
 * wrote its pid): in use. Older, or not a lock at all, it is stale. This version never leaves one
 * empty or partial (it links a file written in full).
 */
const EMPTY_GRACE_MS = 2_000;
/** Bounds of a pathological run of stale locks and claims appearing as fast as they are removed. */
const MAX_ATTEMPTS = 8;
const MAX_CLAIM_DEPTH = 4;
/** A lock file is a few dozen bytes: more than this is not one. */
const MAX_LOCK_BYTES = 1024;

/** Who wrote a lock (or a claim): `pid`, its start (see {@link processStart}) and the lock's token. */
interface Holder {
  readonly pid: number;
  readonly start: string | undefined;
  readonly token: string | undefined;
}

/** One lock file as read: its inode, size, age and bytes, read through one descriptor. */
interface Snapshot {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly bytes: Buffer;
}

/** The tokens of the locks this process holds (a second lock on one directory is refused). */
const held = new Set<string>();

/**
 * What `/proc/PID/stat` tells of a process: its state (field 3: `Z` for a zombie, one that exited
 * and was not reaped yet) and what identifies it across pid reuse, Linux's boot id and its start
 * time (field 22, clock ticks since boot). Undefined where there is no `/proc` (macOS, Windows) or
 * the process is gone: a pid's liveness is all that is known there.
 */
function procStat(pid: number): { state: string; start: string | undefined } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 2, the command name, is in parentheses and may hold spaces and parentheses itself.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const startTime = fields[22 - 3];
    const start = startTime !== undefined && /^\d+$/.test(startTime) ? `${bootId()}:${startTime}` : undefined;
    return { state: fields[0] ?? '', start };
  } catch {
    return undefined;
  }
}

/** The start of process `pid` (see {@link procStat}), undefined where unknown. */
function processStart(pid: number): string | undefined {
  return procStat(pid)?.start;
}

let cachedBootId: string | undefined;
function bootId(): string {
  cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
  return cachedBootId;
}

let cachedOwnStart: string | null | undefined;
function ownStart(): string | undefined {
  if (cachedOwnStart === undefined) cachedOwnStart = processStart(process.pid) ?? null;
  return cachedOwnStart ?? undefined;
}

/** Line 1: the pid; line 2: its start, `-` when unknown; line 3: a token of this lock. */
function lockBytes(token: string): Buffer {
  return Buffer.from(`${process.pid}\n${ownStart() ?? '-'}\n${token}\n`);
}

/** The writer of a lock, or undefined when it is not one; a bare `PID\n` is p2p 0.1.0's lock. */
function parseHolder(bytes: Buffer): Holder | undefined {
  const lines = bytes.toString('latin1').split('\n');
  const [pidLine = '', start = '-', token = ''] = lines;
  if (!/^[1-9]\d{0,9}$/.test(pidLine)) return undefined;
  const pid = Number(pidLine);
  if (!Number.isSafeInteger(pid)) return undefined;
  return {
    pid,
    start: start === '-' || start === '' ? undefined : start,
    token: token === '' ? undefined : token,
  };
}

/** True when the process exists (EPERM: it does, as another user's). */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True while the writer of a lock or claim may still run: when in doubt, true. */
function alive(holder: Holder): boolean {
  if (holder.pid === process.pid) {
    if (holder.token !== undefined && held.has(holder.token)) return true;
    // Not one of ours: this process in another thread or module copy (the same start), or an earlier
    // process that had our pid (a container's pid 1 after a restart). Without our start (no /proc)
    // the two cannot be told apart: in doubt, in use.
    const mine = ownStart();
    return mine === undefined || holder.start === mine;
  }
  if (!exists(holder.pid)) return false;
  const stat = procStat(holder.pid);
  // A zombie has exited: it only waits for its parent to collect its status.
  if (stat?.state === 'Z') return false;
  if (holder.start === undefined) return true;
  // A different start: the pid was reused.
  return stat?.start === undefined || stat.start === holder.start;
}

/** The file at `path`, or undefined when there is none. */
function snapshot(path: string): Snapshot | undefined {
  const fd = openIfExists(path);
  if (fd === undefined) return undefined;
  try {
    const { ino, size, mtimeMs } = fstatSync(fd);
    const bytes = Buffer.alloc(Math.min(size, MAX_LOCK_BYTES));
    const read = readSync(fd, bytes, 0, bytes.length, 0);
    return { ino, size, mtimeMs, bytes: bytes.subarray(0, read) };
  } finally {
    closeSync(fd);
  }
}

const sameFile = (a: Snapshot, b: Snapshot): boolean =>
  a.ino === b.ino && a.size === b.size && a.bytes.equals(b.bytes);

/**
 * Whether the file `seen` is in use: by its writer while that runs, or (pid unknown) while it may be
 * an older version's lock being written. Returns the holder's pid (undefined when unknown) when it is.
 */
function inUse(seen: Snapshot): { pid: number | undefined } | undefined {
  const holder = parseHolder(seen.bytes);
  if (holder !== undefined) return alive(holder) ? { pid: holder.pid } : undefined;
  return seen.size === 0 && Date.now() - seen.mtimeMs < EMPTY_GRACE_MS ? { pid: undefined } : undefined;
}

/**
 * Removes the stale file `name` in `dir`, seen as `seen`, if it is still that file; of several
 * processes doing so at once, one does, and no one removes a file that replaced it. Returns when it
 * is gone (removed here or by another) or replaced; the caller looks again.
 * @param mine a file of ours holding our lock bytes, linked as the claim.
 * @throws {DataDirLockedError} when a live process is taking it over.
 */
function removeStale(dir: string, name: string, seen: Snapshot, mine: string, depth: number): void {
  const id = sha256(`${name}\0${seen.ino}\0${seen.size}\0`, seen.bytes).toString('hex').slice(0, 24);
  const claimName = `${LOCK}.claim-${id}`;
  const claim = join(dir, claimName);
  try {
    linkSync(mine, claim);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const other = snapshot(claim);
    if (other === undefined) return; // its claimer is done
    const claimer = inUse(other);
    if (claimer !== undefined) throw new DataDirLockedError(dir, claimer.pid);
    // Its claimer died before it was done.
    if (depth >= MAX_CLAIM_DEPTH) throw new DataDirLockedError(dir, undefined);
    removeStale(dir, claimName, other, mine, depth + 1);
    return;
  }
  try {
    // Only a process holding this claim removes this file, and the claim is ours.
    const now = snapshot(join(dir, name));
    if (now !== undefined && sameFile(now, seen)) unlinkSync(join(dir, name));
  } finally {
    // Another process may claim the same name now: it will find the file gone or replaced.
    rmSync(claim, { force: true });
  }
}

/**
 * Takes the data directory `dir` for this process (creating it, mode 0700) and returns the release
 * function. A lock left by a process that is gone (its pid not running, or on Linux running but
 * started later: reused) is taken over, as is a `lock` file that is not a lock; a second lock on one
 * directory within one process is refused like any other.
 *
 * The release removes the lock if it is still ours, and does nothing the second time.
 * @throws {DataDirLockedError} when a live process holds `dir`, or is taking it over.
 * @throws the file system's error (ENOTDIR, EACCES, ...) when `dir` cannot be used.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, LOCK);
  const token = randomBytes(16).toString('hex');
  const bytes = lockBytes(token);
  const mine = join(dir, `${LOCK}.${token}.tmp`);
  try {
    writeFileSync(mine, bytes, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    // Created, then not written in full (a full disk, a file size limit): not left behind. One that
    // was there already (EEXIST) is not ours.
    if (errnoCode(err) !== 'EEXIST') rmQuietly(mine);
    throw err;
  }
  try {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        linkSync(mine, path);
        held.add(token);
        return releaser(path, token, bytes);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const seen = snapshot(path);
      if (seen === undefined) continue; // released meanwhile
      const holder = inUse(seen);
      if (holder !== undefined) throw new DataDirLockedError(dir, holder.pid);
      removeStale(dir, LOCK, seen, mine, 0);
    }
    throw new DataDirLockedError(dir, undefined);
  } finally {
    rmSync(mine, { force: true });
  }
}

function releaser(path: string, token: string, bytes: Buffer): () => void {
  let released = false;
  return () => {
    if (released) return;
    released = true;
    held.delete(token);
    // No one else removes a live process's lock: if it still names our token here, it is ours.
    const now = snapshot(path);
    if (now !== undefined && now.bytes.equals(bytes)) rmSync(path, { force: true });
  };
}

/** Removes `path` if it is there, keeping the error being reported the one that is. */
function rmQuietly(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // the first error is the one to report
  }
}
