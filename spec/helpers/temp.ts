import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A fresh private directory (`p2p-NAME-XXXXXX` in the system's temporary directory), removed by
 * `scope`'s `after`: a test's context (`t`), or `node:test` itself for a whole file. A test's `after`
 * hooks run in the order they were added, so take the directory after starting what writes into it
 * (nodes, stores): those are stopped first.
 */
export function tempDir(scope: { after: (fn: () => void) => void }, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `p2p-${name}-`));
  scope.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
