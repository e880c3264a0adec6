/**
 * Shared set-up for tests that evaluate and build with the fake `guix`
 * (tests/fake-guix): a specification, a SQLite store, runner options and a
 * LocalBuilder, all below one temporary root.
 */
import { systemClock } from "../../../lib/clock.ts";
import { silentLogger } from "../../../lib/log.ts";
import { guixSpawner } from "../../../lib/guix/build_events.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Spawner } from "../../../lib/process.ts";
import type { EvaluationRunnerOptions } from "../../../lib/server/evaluation_runner.ts";
import {
  LocalBuilder,
  type LocalBuilderOptions,
} from "../../../lib/server/local_builder.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import type { Specification, Store } from "../../../lib/store/types.ts";
import {
  type DaemonEnv,
  GUIX,
  makeDaemon,
  makeRoot,
  writeScenario,
} from "../../fake-guix/test_env.ts";

/** A specification `name` on the one `guix` channel, with `changes` applied. */
export function testSpecification(
  name: string,
  changes: Partial<Specification> = {},
): Specification {
  return {
    name,
    build: { type: "all", params: [] },
    channels: [{
      name: "guix",
      url: "https://git.example.org/guix.git",
      branch: "master",
      commit: "0123456789abcdef0123456789abcdef01234567",
      introduction: null,
    }],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 9,
    systems: ["x86_64-linux"],
    isActive: true,
    ...changes,
  };
}

/** A `guix` command that runs the fake launcher against `daemon`. */
export function fakeGuix(daemon: DaemonEnv, spawn?: Spawner): Guix {
  return new Guix({
    command: GUIX,
    env: daemon.env,
    logger: silentLogger,
    spawn,
  });
}

/** Options for runEvaluation() with `guix`, logging below `<root>/state`. */
export function evaluationOptions(
  root: string,
  store: Store,
  guix: Guix,
): EvaluationRunnerOptions {
  return {
    store,
    guix,
    clock: systemClock,
    logger: silentLogger,
    stateDir: `${root}/state`,
  };
}

/** A LocalBuilder for x86_64-linux on `daemon`, logs below `<root>/logs`. */
export function fakeLocalBuilder(
  root: string,
  store: Store,
  daemon: DaemonEnv,
  changes: Partial<LocalBuilderOptions> = {},
): LocalBuilder {
  return new LocalBuilder({
    store,
    spawnGuix: guixSpawner({ command: GUIX, env: daemon.env }),
    clock: systemClock,
    logger: silentLogger,
    logCacheDir: `${root}/logs`,
    storeDir: daemon.storeDir,
    systems: ["x86_64-linux"],
    ...changes,
  });
}

/** Where fakeGuixFarm() puts things, and how to clean up after it. */
export interface FakeGuixFarm {
  root: string;
  daemon: DaemonEnv;
  store: Store;
  /** Options for runEvaluation() against `daemon`. */
  options: EvaluationRunnerOptions;
  /** Removes the root after closing the store. */
  close(): Promise<void>;
}

/**
 * Makes a root with a fake daemon `daemonName` playing `scenario` and a
 * SQLite store that knows `spec`.
 */
export async function fakeGuixFarm(
  spec: Specification,
  scenario: unknown,
  { daemonName = "local", spawn }: { daemonName?: string; spawn?: Spawner } =
    {},
): Promise<FakeGuixFarm> {
  const root = await makeRoot();
  const daemon = await makeDaemon(root, daemonName, {
    FAKE_GUIX_SCENARIO: await writeScenario(root, scenario),
  });
  const store = openSqliteStore(`${root}/lorica.db`);
  await store.upsertSpecification(spec);
  return {
    root,
    daemon,
    store,
    options: evaluationOptions(root, store, fakeGuix(daemon, spawn)),
    async close() {
      await store.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Reads the gzip-compressed text file at `path` (a build log). */
export async function gunzip(path: string): Promise<string> {
  const file = await Deno.open(path);
  return await new Response(
    file.readable.pipeThrough(new DecompressionStream("gzip")),
  ).text();
}
