/**
 * Preloaded into a node by `npm run bench -- --allocations DIR` (`node --import
 * bench/heap-sampling.mjs bin/p2p ...`, with P2P_HEAP_SAMPLING_DIR=DIR): samples every allocation
 * of the process, the objects garbage collection freed included (V8's sampling heap profiler, one
 * sample per 1 KiB on average), from start-up until SIGTERM or exit, and writes the profile to
 * DIR/<pid>.heapprofile (summed by bench/allocations.ts; its own work is left out there). Without the
 * variable it does nothing.
 * Plain JavaScript: bin/p2p runs under plain node.
 */
import { mkdirSync, writeFileSync, writeSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import process from 'node:process';

const dir = process.env['P2P_HEAP_SAMPLING_DIR'];
if (dir !== undefined && dir !== '') {
  const session = new Session();
  session.connect();
  let sampling = false;
  session.post(
    'HeapProfiler.startSampling',
    {
      samplingInterval: 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    },
    (err) => {
      if (err) writeSync(2, `heap-sampling: not sampling: ${String(err)}\n`);
      else sampling = true;
    },
  );
  // Written when the node is told to stop, before its own SIGTERM handler runs (the benchmark kills
  // a node that takes longer than its grace to exit), or at exit otherwise.
  const stop = () => {
    if (!sampling) return;
    sampling = false;
    // The inspector turns a throw in its callbacks into a warning, which at exit is never shown:
    // a profile that could not be written is said so on stderr.
    session.post('HeapProfiler.stopSampling', (err, result) => {
      try {
        if (err) throw err;
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, `${process.pid}.heapprofile`), JSON.stringify(result.profile));
      } catch (failure) {
        writeSync(2, `heap-sampling: no profile written to ${dir}: ${String(failure)}\n`);
      }
    });
  };
  const onTerm = () => {
    stop();
    // The only listener (the node has not set its own yet): SIGTERM ends the process, as without us.
    if (process.listenerCount('SIGTERM') === 1) {
      process.off('SIGTERM', onTerm);
      process.kill(process.pid, 'SIGTERM');
    }
  };
  process.prependListener('SIGTERM', onTerm);
  process.on('exit', stop);
}
