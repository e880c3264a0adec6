// A Web Worker playing one build worker against a shared SQLite file (C17).

import { openSqliteStore } from "../../../lib/store/sqlite.ts";

/** What the test thread sends: the database and this worker's name. */
export interface ConcurrencyJob {
  path: string;
  worker: string;
}

/** What the worker answers: the build ids it took, or the error it hit. */
export interface ConcurrencyReport {
  worker: string;
  ids: number[];
  changes: number;
  error: string | null;
}

// The worker global scope, typed by hand: this file is type-checked with the
// window lib, as the test that starts it imports its types.
const scope = self as unknown as {
  onmessage: (event: MessageEvent<ConcurrencyJob>) => void;
  postMessage(message: ConcurrencyReport): void;
};

scope.onmessage = async (event) => {
  const { path, worker } = event.data;
  const report: ConcurrencyReport = {
    worker,
    ids: [],
    changes: 0,
    error: null,
  };
  const store = openSqliteStore(path);
  try {
    for (let now = 1;; now++) {
      const build = await store.popBuild(worker, ["x86_64-linux"], now);
      if (build === null) break;
      report.ids.push(build.id);
      const started = await store.markStarted(
        build.derivation,
        worker,
        `/logs/${build.id}`,
        now,
      );
      const done = await store.completeBuild(build.derivation, 0, {
        worker,
        now,
      });
      if (!started || !done.changed) {
        throw new Error(`lost update on build ${build.id}`);
      }
      report.changes += 3;
    }
  } catch (error) {
    report.error = String(error);
  } finally {
    await store.close();
  }
  scope.postMessage(report);
};
