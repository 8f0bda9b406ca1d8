import { openSync } from 'node:fs';

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
