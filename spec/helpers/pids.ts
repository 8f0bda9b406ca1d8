/** Process probes shared by the process helpers (spec/helpers/procs.ts) and the lab (spec/lab/lab.ts). */

/** True while a process with this pid exists (signal 0 probes without signalling). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
