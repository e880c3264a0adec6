// A web app over a real in-memory SQLite store holding builds in every status.

import { gzipSync } from "node:zlib";
import { createWebApp, type WebAppOptions } from "../../../lib/web/app.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import type { Clock } from "../../../lib/clock.ts";
import type {
  Build,
  NewJob,
  Specification,
  Store,
} from "../../../lib/store/types.ts";
import { C10_LOG } from "../../fixtures/c10_log.ts";

/** The epoch second the fake clock shows. */
export const NOW = 1_700_010_000;
export const T0 = 1_700_000_000;
export const STORE_DIR = "/gnu/store";
/** A spec and job name that must come out escaped everywhere. */
export const XSS = `<script>alert("x")</script>`;
export { C10_LOG };

export interface Fixture extends AsyncDisposable {
  app: (request: Request) => Promise<Response>;
  store: Store;
  logDir: string;
  /** Lines the app logged. */
  logLines: string[];
  /** Builds by role: succeeded, failed, failedOther, canceled, started,
   * submitted, broken (failed), dependent (failed-dependency), xss. */
  builds: Record<string, Build>;
  /** Ids of builds still scheduled. */
  scheduled: number[];
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** A derivation path whose hash part is `n` in digits (valid nix-base32). */
export function drvPath(n: number, name: string): string {
  return `${STORE_DIR}/${String(n).padStart(32, "0")}-${name}.drv`;
}

export function job(n: number, name: string, system = "x86_64-linux"): NewJob {
  return {
    name,
    derivation: drvPath(n, name),
    system,
    nixName: `${name}-1.${n}`,
    outputs: [
      {
        name: "out",
        path: `${STORE_DIR}/${String(n).padStart(31, "0")}a-${name}`,
      },
      {
        name: "doc",
        path: `${STORE_DIR}/${String(n).padStart(31, "0")}b-${name}-doc`,
      },
    ],
    inputs: [],
    timeout: 3600,
    maxSilent: 600,
  };
}

export function spec(name: string, isActive = true): Specification {
  return {
    name,
    build: { type: "packages", params: ["hello"] },
    channels: [
      {
        name: "guix",
        url: "https://git.example/guix.git",
        branch: "master",
        commit: null,
        introduction: null,
      },
    ],
    buildOutputs: [],
    notifications: [],
    period: 300,
    priority: 5,
    systems: ["x86_64-linux", "aarch64-linux"],
    isActive,
  };
}

/** Fills a fresh store and returns the app over it. */
export async function createFixture(
  options: {
    store?: Store;
    logger?: Logger;
    app?: Partial<WebAppOptions>;
  } = {},
): Promise<Fixture> {
  const store = options.store ?? openSqliteStore(":memory:");
  const logDir = await Deno.makeTempDir({ prefix: "lorica-web-" });
  const logLines: string[] = [];
  const logger = options.logger ??
    createLogger({ level: "debug", sink: (line) => logLines.push(line) });
  const clock: Clock = {
    now: () => NOW * 1000,
    monotonic: () => 0,
    sleep: () => Promise.resolve(),
  };

  await store.upsertSpecification(spec("hello"));
  await store.upsertSpecification(spec(XSS));
  await store.upsertSpecification(spec("old", false));
  await store.upsertWorker({
    name: "w1",
    address: "127.0.0.1",
    machine: "box-1",
    systems: ["x86_64-linux", "aarch64-linux"],
    lastSeen: NOW - 5,
    timeoutSeconds: 120,
  });
  await store.upsertWorker({
    name: "w2",
    address: "::1",
    machine: "box-2",
    systems: ["x86_64-linux"],
    lastSeen: NOW - 1000,
    timeoutSeconds: 120,
  });

  const eval1 = await store.addEvaluation("hello", [
    { channel: "guix", revision: "a".repeat(40), directory: "/tmp/guix" },
    { channel: "extra", revision: "b".repeat(40), directory: "/tmp/extra" },
  ], T0);
  // Priorities 0..9 in scrambled order, creation times not in id order.
  for (let i = 0; i < 10; i++) {
    await store.registerBuilds(eval1, [job(i + 1, `job-${i}`)], {
      priority: (i * 7) % 10,
      now: T0 + 100 + ((i * 3) % 10) * 10,
    });
  }
  await store.setEvaluationStatus(eval1, 0, T0 + 50);

  // Pop seven x86_64 builds in dispatch order and give each its status.
  const popped: Build[] = [];
  for (let i = 0; i < 7; i++) {
    popped.push((await store.popBuild("w1", ["x86_64-linux"], T0 + 200))!);
  }
  const roles = [
    "succeeded",
    "failed",
    "failedOther",
    "canceled",
    "started",
    "submitted",
    "startedEarlier",
  ];
  const finals: Record<string, number> = {
    succeeded: 0,
    failed: 1,
    failedOther: 3,
    canceled: 4,
  };
  for (const [index, role] of roles.entries()) {
    const build = popped[index];
    if (role === "submitted") continue;
    await store.markStarted(
      build.derivation,
      "w1",
      "",
      role === "startedEarlier" ? T0 + 210 : T0 + 220 + index,
    );
    if (role in finals) {
      await store.completeBuild(build.derivation, finals[role] as 0, {
        worker: "w1",
        now: T0 + 300 + index,
      });
    }
  }

  // A failure that propagates: dependent becomes failed-dependency.
  const broken = job(20, "broken", "aarch64-linux");
  const dependent = { ...job(21, "needs-broken", "aarch64-linux") };
  dependent.inputs = [broken.derivation];
  await store.registerBuilds(eval1, [broken, dependent], {
    priority: 0,
    now: T0 + 150,
  });
  const brokenBuild =
    (await store.popBuild("w1", ["aarch64-linux"], T0 + 400))!;
  await store.markStarted(brokenBuild.derivation, "w1", "", T0 + 401);
  await store.completeBuild(brokenBuild.derivation, 1, {
    worker: "w1",
    now: T0 + 402,
  });

  const eval2 = await store.addEvaluation(XSS, [], T0 + 500);
  await store.registerBuilds(eval2, [job(30, XSS.replace(/"/g, "'"))], {
    priority: 3,
    now: T0 + 510,
  });

  const builds: Record<string, Build> = {};
  for (const [index, role] of roles.entries()) {
    builds[role] = (await store.getBuild(popped[index].id))!;
  }
  builds.broken = (await store.getBuild(brokenBuild.id))!;
  builds.dependent = (await store.getBuildByDerivation(dependent.derivation))!;
  builds.xss =
    (await store.getBuildByDerivation(drvPath(30, XSS.replace(/"/g, "'"))))!;
  const scheduled = (await store.queue({}, 1000))
    .filter((build) => build.status === -2)
    .map((build) => build.id);

  // The succeeded build's log holds the C10 bytes.
  await writeLog(logDir, builds.succeeded.derivation, C10_LOG);

  const app = createWebApp({
    store,
    logCacheDir: logDir,
    storeDir: STORE_DIR,
    clock,
    logger,
    workerTimeoutSeconds: 120,
    ...options.app,
  });
  return {
    app,
    store,
    logDir,
    logLines,
    builds,
    scheduled,
    fetch: (path, init) => app(new Request(`http://x${path}`, init)),
    async [Symbol.asyncDispose]() {
      await store.close();
      await Deno.remove(logDir, { recursive: true });
    },
  };
}

/** Writes `<logDir>/<hash>.log.gz` for a derivation. */
export async function writeLog(
  logDir: string,
  derivation: string,
  bytes: Uint8Array,
): Promise<Uint8Array> {
  const hash = derivation.slice(STORE_DIR.length + 1, STORE_DIR.length + 33);
  const compressed = new Uint8Array(gzipSync(bytes));
  await Deno.writeFile(`${logDir}/${hash}.log.gz`, compressed);
  return compressed;
}

/**
 * Sends raw request bytes to a server on 127.0.0.1 and reads the whole
 * answer: the way to send a Host header of one's choosing, as `fetch` sets
 * its own.
 */
export async function rawExchange(
  port: number,
  request: string,
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    return await new Response(conn.readable).text();
  } catch (error) {
    conn.close();
    throw error;
  }
}

/**
 * Builds job `name` of specification "hello" twice, on a system no other
 * build of the fixture has: a success, then a failure, which is a new
 * failure, an item of the feed. Returns the failed build's id.
 */
export async function breakJob(store: Store, name: string): Promise<number> {
  let id = 0;
  for (const [n, status] of [[40, 0], [41, 1]] as const) {
    const evaluation = await store.addEvaluation("hello", [], T0 + n);
    await store.registerBuilds(evaluation, [job(n, name, "riscv64-linux")], {
      priority: 0,
      now: T0 + n,
    });
    const build = (await store.popBuild("w1", ["riscv64-linux"], T0 + n))!;
    await store.markStarted(build.derivation, "w1", "", T0 + n);
    await store.completeBuild(build.derivation, status, {
      worker: "w1",
      now: T0 + n,
    });
    id = build.id;
  }
  return id;
}
