import {
  closeSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { errnoCode } from '../util/fs.js';
import { randomBytes } from './bytes.js';
import { SecurityError, type SecurityErrorCode } from './errors.js';

/** Key files are a few hundred bytes; anything bigger is not ours and is not read into memory. */
const MAX_KEY_FILE_BYTES = 4096;

/** Mode bits are meaningless on Windows; everywhere else they are the only protection of a key file. */
const CHECK_MODES = process.platform !== 'win32';

/**
 * Creates `dir` (and its parents) with mode 0700 when missing. An existing directory is kept as it is,
 * unless others may write into it: then they could swap the key file, so it is refused. The message
 * names the fix: `chmod 700` for a directory of the user's own, a new directory for a shared one
 * (sticky, as /tmp is, or another user's), where `chmod 700` would lock the others out or fail.
 * @throws {SecurityError} with `code` when the directory is writable by group or others.
 */
export function ensurePrivateDir(dir: string, code: SecurityErrorCode): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!CHECK_MODES) return;
  const stats = statSync(dir);
  const mode = stats.mode & 0o7777;
  if ((mode & 0o022) !== 0) {
    const shared = (mode & STICKY) !== 0 || stats.uid !== process.getuid?.();
    const fix = shared ? 'name a new directory (it is created with mode 0700)' : `chmod 700 ${dir}`;
    throw new SecurityError(
      code,
      `directory ${dir} is writable by other users (mode ${mode.toString(8)}): ${fix}`,
    );
  }
}

/** The sticky bit: in a directory, only a file's owner may remove or rename it (/tmp). */
const STICKY = 0o1000;

/**
 * Writes `content` to `path` with mode 0600, atomically and only if `path` does not exist: the bytes
 * go to a temporary file in the same directory, which is flushed to disk and then hard-linked to
 * `path` (a link never replaces an existing file, unlike rename). A crash leaves either no file or
 * the whole file, never half of one.
 * @returns true when this call created the file, false when it existed already (it is left as it is).
 */
export function writeFileOnce(path: string, content: string): boolean {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, 'wx', 0o600);
  try {
    fchmodSync(fd, 0o600); // the umask may have removed bits, never added: make it exactly 0600
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  let created = true;
  try {
    linkSync(temp, path);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
    created = false; // another process created it first: keep theirs
  } finally {
    unlinkSync(temp);
  }
  if (created) syncDir(dir);
  return created;
}

/** Flushes a directory entry to disk, where the platform allows it (not on Windows). */
function syncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a key file after checking that it is a small regular file that only its owner can read.
 * @returns the content, or undefined when the file does not exist.
 * @throws {SecurityError} with `code` for a file readable by others, not a regular file, or too large.
 */
export function readPrivateFile(path: string, code: SecurityErrorCode): string | undefined {
  let stats;
  try {
    stats = statSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new SecurityError(code, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!stats.isFile()) throw new SecurityError(code, `${path} is not a regular file`);
  if (stats.size > MAX_KEY_FILE_BYTES) {
    throw new SecurityError(code, `${path} is ${stats.size} bytes, not a key file`);
  }
  const mode = stats.mode & 0o777;
  if (CHECK_MODES && (mode & 0o077) !== 0) {
    throw new SecurityError(
      code,
      `${path} is accessible by other users (mode ${mode.toString(8)}): chmod 600 ${path}`,
    );
  }
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new SecurityError(code, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}
