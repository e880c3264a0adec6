// Test fixture for the server's worker side: a SQLite store with builds, a
// real ROUTER and Dispatcher, a fake clock, and scripted DEALER workers.

import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import {
  BuildStatus,
  type NewJob,
  type Store,
} from "../../../lib/store/types.ts";
import { type RouterMessage, RouterSocket } from "../../../lib/zmtp/router.ts";
import { routingKey } from "../../../lib/server/worker_links.ts";
import { DealerSocket } from "../../../lib/zmtp/dealer.ts";
import {
  Dispatcher,
  routerMessageLimit,
} from "../../../lib/server/dispatcher.ts";
import { OutputFetcher } from "../../../lib/server/output_fetcher.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import type { Clock } from "../../../lib/clock.ts";
import { OneAtATime } from "../../../lib/server/one_at_a_time.ts";
import {
  decodeMessage,
  encodeMessage,
  LORICA_FEATURES,
  type Message,
  type WorkerInfo,
} from "../../../lib/protocol/messages.ts";

// Many tests take `within` from here, where it lived first.
export { within } from "../../_within.ts";

const ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";
export const STORE_DIR = "/gnu/store";
/** The fixture dispatcher's worker timeout, that of a default server. */
export const WORKER_TIMEOUT_SECONDS = 120;

/** A distinct 32-character store hash for `(tag, i)`. */
export function hashOf(tag: string, i: number): string {
  let n = i;
  let digits = "";
  for (let k = 0; k < 6; k++) {
    digits = ALPHABET[n % 32] + digits;
    n = Math.floor(n / 32);
  }
  const head = Array.from(tag, (c) => ALPHABET[c.charCodeAt(0) % 32]).join("");
  return (head + "0".repeat(32)).slice(0, 26) + digits;
}

/** A job building `name` for `system`, with unique drv and output. */
export function job(
  name: string,
  i: number,
  system = "x86_64-linux",
  inputs: string[] = [],
): NewJob {
  return {
    name,
    derivation: `${STORE_DIR}/${hashOf("drv", i)}-${name}.drv`,
    system,
    nixName: name,
    outputs: [{
      name: "out",
      path: `${STORE_DIR}/${hashOf("out", i)}-${name}`,
    }],
    inputs,
    timeout: 3600,
    maxSilent: 600,
  };
}

/**
 * A clock whose time moves only when told; sleeps wake as it passes.
 * `advance()` moves both readings, as time passing does; `step()` moves
 * only the wall clock, as NTP stepping it does (sleepers do not notice).
 */
export class FakeClock implements Clock {
  #now = 1_700_000_000_000;
  #monotonic = 5_000_000;
  #sleepers: { at: number; resolve: () => void }[] = [];
  now(): number {
    return this.#now;
  }
  monotonic(): number {
    return this.#monotonic;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const sleeper = { at: this.#monotonic + ms, resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  }
  /** Moves time forward, waking the sleepers that are due. */
  async advance(ms: number): Promise<void> {
    this.#now += ms;
    this.#monotonic += ms;
    const due = this.#sleepers.filter((s) => s.at <= this.#monotonic);
    this.#sleepers = this.#sleepers.filter((s) => s.at > this.#monotonic);
    for (const sleeper of due) sleeper.resolve();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  /** How many sleepers wake once `ms` more has passed. */
  sleepersDueWithin(ms: number): number {
    return this.#sleepers.filter((s) => s.at <= this.#monotonic + ms).length;
  }
  /** Steps the wall clock by `ms` (negative: back); no time passes. */
  async step(ms: number): Promise<void> {
    this.#now += ms;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/**
 * The dispatcher's queue of turns, telling when a task was asked for while
 * another had not settled: the queue then holds it until that one has.
 */
export class WatchedTurns extends OneAtATime {
  #unsettled = 0;
  #queued = 0;
  #waiting: { count: number; resolve: () => void }[] = [];

  override run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#unsettled > 0) {
      this.#queued++;
      for (const waiter of this.#waiting) {
        if (waiter.count <= this.#queued) waiter.resolve();
      }
    }
    this.#unsettled++;
    const result = super.run(task);
    result.then(() => this.#unsettled--, () => this.#unsettled--);
    return result;
  }

  /** Resolves once `count` tasks in all had to wait for another. */
  queued(count = 1): Promise<void> {
    if (this.#queued >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push({ count, resolve }));
  }
}

/** A spawner whose `guix build` succeeds at once (or as `behave` says). */
export function fakeSpawner(
  behave: (
    argv: string[],
  ) => { code: number; stderr?: string; signal?: string } = () => ({
    code: 0,
  }),
  calls: string[][] = [],
): Spawner {
  return (argv) => {
    calls.push(argv);
    const { code, stderr = "", signal = null } = behave(argv);
    const child: Child = {
      pid: 1,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr: ReadableStream.from([new TextEncoder().encode(stderr)]),
      stdin: null,
      status: Promise.resolve({ code, signal }),
      kill() {},
    };
    return child;
  };
}

export interface Fixture {
  root: string;
  database: string;
  store: Store;
  router: RouterSocket;
  dispatcher: Dispatcher;
  fetcher: OutputFetcher;
  clock: FakeClock;
  logger: Logger;
  lines: string[];
  evaluation: number;
  port: number;
  /** Registers jobs in the fixture's evaluation; returns their drvs. */
  addJobs(jobs: NewJob[], priority?: number): Promise<string[]>;
  status(drv: string): Promise<number | undefined>;
  /** Stops everything; `keepFiles` keeps the database for a restart. */
  close(keepFiles?: boolean): Promise<void>;
}

/** Starts a dispatcher on a fresh store; `close()` undoes everything. */
export async function startFixture(options: {
  /** Reuse this database file (a restarted server). */
  database?: string;
  /**
   * A fresh store of the test's own instead of a SQLite file (one on
   * PostgreSQL); closed with the fixture.
   */
  store?: Store;
  workerKeys?: Map<string, string>;
  spawner?: Spawner;
  fetch?: typeof fetch;
  logPort?: number;
  /** Bind this backend port (a restarted server); default a free one. */
  port?: number;
  /** What the dispatcher sees of the store (to inject faults). */
  storeSeenByDispatcher?: (store: Store) => Store;
  /** What the dispatcher sees of its ROUTER (to watch what comes in). */
  routerSeenByDispatcher?: (router: RouterSocket) => RouterSocket;
  /**
   * Peer addresses the dispatcher sees instead of 127.0.0.1, by routing id
   * (routingKey of the FakeWorker's identity): all test traffic stays on
   * 127.0.0.1 while the server believes in other hosts.
   */
  peerAddresses?: Map<string, string>;
  /** Whether a derivation is in the store; default: never looked for. */
  inStore?: (path: string) => Promise<boolean>;
  /** The dispatcher's queue of turns (a {@link WatchedTurns}, say). */
  turns?: OneAtATime;
  /**
   * The server's store directory, which it tells Lorica workers; default
   * {@link STORE_DIR}, that of {@link job}'s derivations.
   */
  storeDir?: string;
  /**
   * The dispatcher's worker timeout, recorded with each contact; default
   * {@link WORKER_TIMEOUT_SECONDS}.
   */
  workerTimeoutSeconds?: number;
} = {}): Promise<Fixture> {
  const storeDir = options.storeDir ?? STORE_DIR;
  const root = await Deno.makeTempDir({ prefix: "lorica-dispatch-" });
  const store = options.store ??
    openSqliteStore(options.database ?? `${root}/db.sqlite`);
  const clock = new FakeClock();
  const lines: string[] = [];
  const logger = createLogger({
    level: "debug",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const late: { dispatcher?: Dispatcher } = {};
  const router = await RouterSocket.bind({
    hostname: "127.0.0.1",
    port: options.port ?? 0,
    // As the server's (remote_builder.ts).
    maxMessageBytes: routerMessageLimit(),
    logger: logger.with({ part: "zmtp" }),
    onDisconnect: (peer) => late.dispatcher?.peerDisconnected(peer.routingId),
  });
  const guix = new Guix({
    logger,
    spawn: options.spawner ?? fakeSpawner(),
  });
  const fetcher = new OutputFetcher({
    store,
    guix,
    clock,
    logger,
    retryDelayMs: 1000,
    deadlineMs: 10_000,
    fetch: options.fetch ?? (() => Promise.resolve(new Response("ok"))),
    inStore: options.inStore,
    storeDir,
  });
  const seenRouter = options.peerAddresses === undefined
    ? router
    : routerSeenFrom(router, options.peerAddresses);
  const dispatcher = new Dispatcher({
    store: options.storeSeenByDispatcher?.(store) ?? store,
    router: options.routerSeenByDispatcher?.(seenRouter) ?? seenRouter,
    fetcher,
    clock,
    logger,
    logPort: options.logPort ?? 9,
    publishPort: 5557,
    logCacheDir: `${root}/logs`,
    storeDir,
    workerTimeoutSeconds: options.workerTimeoutSeconds ??
      WORKER_TIMEOUT_SECONDS,
    workerKeys: options.workerKeys,
    inStore: options.inStore,
    turns: options.turns,
  });
  late.dispatcher = dispatcher;
  // As a server's start does (remote_builder.ts): before the first turn.
  await fetcher.resumeOwed();
  const abort = new AbortController();
  const running = dispatcher.run(abort.signal);
  const fresh = options.database === undefined;
  if (fresh) {
    await store.upsertSpecification({
      name: "spec",
      build: { type: "packages", params: [] },
      channels: [],
      buildOutputs: [],
      notifications: [],
      period: 0,
      priority: 5,
      systems: ["x86_64-linux", "i686-linux"],
      isActive: true,
    });
  }
  const evaluation = fresh
    ? await store.addEvaluation("spec", [], Math.floor(clock.now() / 1000))
    : 1;
  return {
    root,
    database: options.database ?? `${root}/db.sqlite`,
    store,
    router,
    dispatcher,
    fetcher,
    clock,
    logger,
    lines,
    evaluation,
    port: router.port,
    async addJobs(jobs, priority = 5) {
      await store.registerBuilds(evaluation, jobs, {
        priority,
        now: Math.floor(clock.now() / 1000),
      });
      return jobs.map((j) => j.derivation);
    },
    async status(drv) {
      return (await store.getBuildByDerivation(drv))?.status;
    },
    async close(keepFiles = false) {
      abort.abort();
      await fetcher.close();
      await router.close();
      await running.catch(() => {});
      await store.close();
      if (!keepFiles) await Deno.remove(root, { recursive: true });
    },
  };
}

/** `router` with the peer address of some connections replaced. */
function routerSeenFrom(
  router: RouterSocket,
  addresses: Map<string, string>,
): RouterSocket {
  const rewrite = (message: RouterMessage): RouterMessage => {
    const address = addresses.get(routingKey(message.routingId));
    return address === undefined
      ? message
      : { ...message, peerAddress: address };
  };
  const seen: RouterSocket = Object.create(router);
  seen.receive = async (signal) => rewrite(await router.receive(signal));
  seen.tryReceive = () => {
    const message = router.tryReceive();
    return message === undefined ? undefined : rewrite(message);
  };
  seen.send = (routingId, frames) => router.send(routingId, frames);
  seen.isConnected = (routingId) => router.isConnected(routingId);
  return seen;
}

/**
 * `router` calling `watch` with each message the dispatcher takes from it,
 * before the dispatcher handles it.
 */
export function routerWatched(
  router: RouterSocket,
  watch: (message: RouterMessage) => void,
): RouterSocket {
  const seen: RouterSocket = Object.create(router);
  seen.receive = async (signal) => {
    const message = await router.receive(signal);
    watch(message);
    return message;
  };
  seen.tryReceive = () => {
    const message = router.tryReceive();
    if (message !== undefined) watch(message);
    return message;
  };
  seen.send = (routingId, frames) => router.send(routingId, frames);
  seen.isConnected = (routingId) => router.isConnected(routingId);
  return seen;
}

const EMPTY = new Uint8Array(0);

/** A scripted worker connection speaking the protocol by hand. */
export class FakeWorker {
  readonly dealer: DealerSocket;
  readonly name: string;
  readonly systems: string[];

  private constructor(dealer: DealerSocket, name: string, systems: string[]) {
    this.dealer = dealer;
    this.name = name;
    this.systems = systems;
  }

  /** Connects and waits for the server's probe. */
  static async connect(
    port: number,
    options: { name?: string; identity?: Uint8Array; systems?: string[] } = {},
  ): Promise<FakeWorker> {
    const dealer = DealerSocket.connect({
      hostname: "127.0.0.1",
      port,
      identity: options.identity,
    });
    const probe = await receiveWithin(dealer, 5000);
    assert.ok(probe.length === 1 && probe[0].length === 0, "probe first");
    return new FakeWorker(
      dealer,
      options.name ?? crypto.randomUUID().slice(0, 8),
      options.systems ?? ["x86_64-linux"],
    );
  }

  get info(): WorkerInfo {
    return {
      name: this.name,
      address: "127.0.0.1",
      machine: "test",
      systems: this.systems,
      lastSeen: 0,
    };
  }

  send(message: Message | string): Promise<void> {
    const payload = typeof message === "string"
      ? new TextEncoder().encode(message)
      : encodeMessage(message);
    return this.dealer.send([EMPTY, payload]);
  }

  sendFrames(frames: Uint8Array[]): Promise<void> {
    return this.dealer.send(frames);
  }

  /** The next reply's raw payload text. */
  async nextText(timeoutMs = 5000): Promise<string> {
    const frames = await receiveWithin(this.dealer, timeoutMs);
    return new TextDecoder().decode(frames[frames.length - 1]);
  }

  async next(timeoutMs = 5000): Promise<Message> {
    const frames = await receiveWithin(this.dealer, timeoutMs);
    return decodeMessage(frames[frames.length - 1]);
  }

  /** Sends worker-ready (plain, as Cuirass) and nothing else. */
  ready(extra: Partial<Extract<Message, { type: "worker-ready" }>> = {}) {
    return this.send({ type: "worker-ready", worker: this.info, ...extra });
  }

  async requestWork(requestId?: number): Promise<Message> {
    await this.send({
      type: "worker-request-work",
      name: this.name,
      ...(requestId === undefined ? {} : { requestId }),
    });
    return await this.next();
  }

  close(): Promise<void> {
    return this.dealer.close();
  }
}

async function receiveWithin(
  dealer: DealerSocket,
  timeoutMs: number,
): Promise<Uint8Array[]> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    return await dealer.receive(signal);
  } catch (error) {
    if (signal.aborted) {
      throw new Error(`no message within ${timeoutMs} ms`);
    }
    throw error;
  }
}

/** Whether `promise` settles within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (bounded) until `check` resolves true. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  what = "condition",
): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`${what} never held`);
}

/** A registered Lorica worker (every feature) named `name`. */
export async function loricaWorker(
  port: number,
  name: string,
): Promise<FakeWorker> {
  const worker = await FakeWorker.connect(port, { name });
  await worker.send({
    type: "lorica-hello",
    version: 1,
    features: LORICA_FEATURES,
  });
  assert.equal((await worker.next()).type, "lorica-welcome");
  await worker.ready({ holding: [] });
  return worker;
}

/** Asks for work and starts the build it gets; returns its derivation. */
export async function startWork(
  worker: FakeWorker,
  f: Fixture,
): Promise<string> {
  const reply = await worker.requestWork(1);
  assert.equal(reply.type, "build");
  const drv = (reply as Extract<Message, { type: "build" }>).drv;
  await worker.send({ type: "build-started", drv, worker: worker.name });
  await eventually(async () => (await f.status(drv)) === BuildStatus.started);
  return drv;
}
