import { openSync, readSync } from 'node:fs';

/** The `code` of a file system error (ENOENT, EACCES, ...), or undefined for anything else. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A descriptor of `path` opened for reading, or undefined when there is no such file. */
export function openIfExists(path: string): number | undefined {
  try {
    return openSync(path, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Reads `length` bytes of `fd` at `position` into the start of `buffer`, as many calls as it takes;
 * fewer only at the end of the file. Returns how many were read.
 */
export function readAt(fd: number, buffer: Buffer, length: number, position: number): number {
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buffer, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}
