// The database interface of the server: one contract, SQLite and PostgreSQL.

/** What a {@link StoreError} is about, stable for callers and the API. */
export type StoreErrorCode =
  | "not-found"
  | "schema-too-new"
  /** Tables of another program under the same names (Cuirass's). */
  | "foreign-schema"
  | "batch-misuse"
  | "batch-aborted"
  | "transaction-ended"
  /** Text holding a NUL character, which PostgreSQL cannot store. */
  | "invalid-text"
  | "evaluation-ended";

/**
 * A store operation refused: a row it needs is missing, the schema is too
 * new, a batch's store was used outside its rules, an optimistic batch
 * gave up at its first failing write, an earlier error (a full disk)
 * ended the transaction a write was to join, or builds came for an
 * evaluation that is no longer started.
 */
export class StoreError extends Error {
  constructor(
    message: string,
    readonly code: StoreErrorCode,
    /** The offending value, e.g. the unknown evaluation id. */
    readonly value: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "StoreError";
  }
}

/** Build status codes, as Cuirass and Hydra number them. */
export const BuildStatus = {
  submitted: -3,
  scheduled: -2,
  started: -1,
  succeeded: 0,
  failed: 1,
  failedDependency: 2,
  failedOther: 3,
  canceled: 4,
} as const;
export type BuildStatus = typeof BuildStatus[keyof typeof BuildStatus];

/** Evaluation status codes. */
export const EvaluationStatus = {
  started: -1,
  succeeded: 0,
  failed: 1,
  aborted: 2,
} as const;
export type EvaluationStatus =
  typeof EvaluationStatus[keyof typeof EvaluationStatus];

/** Build weather: how this result compares with the job's previous one. */
export const Weather = {
  unknown: -1,
  newSuccess: 0,
  newFailure: 1,
  stillSucceeding: 2,
  stillFailing: 3,
} as const;
export type Weather = typeof Weather[keyof typeof Weather];

/** The name of a status code, e.g. "failed-dependency". */
export function buildStatusName(status: number): string {
  switch (status) {
    case -3:
      return "submitted";
    case -2:
      return "scheduled";
    case -1:
      return "started";
    case 0:
      return "succeeded";
    case 1:
      return "failed";
    case 2:
      return "failed-dependency";
    case 3:
      return "failed-other";
    case 4:
      return "canceled";
    default:
      return `unknown(${status})`;
  }
}

export interface ChannelIntroduction {
  commit: string;
  signer: string;
}

export interface Channel {
  name: string;
  url: string;
  branch: string;
  /** A pinned commit, or null to follow the branch. */
  commit: string | null;
  introduction: ChannelIntroduction | null;
}

/** What a specification builds: a build type, optionally with arguments. */
export interface BuildSelector {
  /** One of all, core, guix, hello, images, system-tests, tarball, custom,
   * channels, packages, manifests. */
  type: string;
  /** Package specs, channel names, manifest files or modules. */
  params: string[];
}

export interface BuildOutputSpec {
  job: string;
  type: string;
  output: string;
  path: string;
}

export interface Specification {
  name: string;
  build: BuildSelector;
  channels: Channel[];
  buildOutputs: BuildOutputSpec[];
  /** Notification sinks, kept as opaque records until notifications land. */
  notifications: Record<string, string>[];
  /** Polling period in seconds; 0 means the server default. */
  period: number;
  /** 0 is most urgent, 9 least. */
  priority: number;
  systems: string[];
  isActive: boolean;
}

export interface Evaluation {
  id: number;
  specification: string;
  status: EvaluationStatus;
  /** When the evaluation was triggered. */
  timestamp: number;
  checkouttime: number;
  /** When it finished, 0 until then. */
  evaltime: number;
}

/** The server process running an evaluation, as its row records it. */
export interface EvaluationOwner {
  host: string;
  pid: number;
  /** When the process started (clock ticks since boot): pids are reused. */
  started: string;
}

/** A worker taken for gone, and how many of its builds went back to the queue. */
export interface ExpiredWorker {
  name: string;
  /** The timeout its row recorded (see {@link Worker.timeoutSeconds}). */
  timeoutSeconds: number | null;
  requeued: number;
}

/** How a worker sweep judges silence; see {@link Store.expireWorkers}. */
export interface WorkerSweep {
  /**
   * The sweeping server's own worker timeout, for the rows that record
   * none (written before timeouts were recorded).
   */
  timeoutSeconds: number;
  /**
   * Epoch seconds from which silence counts (default 0): every worker is
   * taken as heard then. After a sweep found the database failing, no
   * worker could be heard meanwhile.
   */
  silentFrom?: number;
}

/** An evaluation in status started, with who runs it. */
export interface RunningEvaluation {
  id: number;
  specification: string;
  /** Null for an evaluation added without one (before owners were kept). */
  owner: EvaluationOwner | null;
  /** When its owner last said it still runs it (seconds), or null. */
  heartbeat: number | null;
}

export interface Checkout {
  channel: string;
  revision: string;
  directory: string;
}

export interface BuildOutput {
  name: string;
  path: string;
}

export interface Build {
  id: number;
  derivation: string;
  /** The evaluation that created the build. */
  evaluation: number;
  specification: string;
  jobName: string;
  system: string;
  worker: string | null;
  nixName: string;
  /** Absolute path of the log, "" until the build started. */
  log: string;
  status: BuildStatus;
  lastStatus: number | null;
  weather: Weather;
  priority: number;
  maxSilent: number;
  timeout: number;
  /** Creation time (epoch seconds). */
  timestamp: number;
  starttime: number;
  stoptime: number;
  outputs: BuildOutput[];
  /**
   * Files of the outputs offered for download (cuirass.md 5.9); read by
   * the catalog queries, absent from what dispatch returns.
   */
  products?: BuildProduct[];
}

/** A file of a succeeded build's output, offered for download. */
export interface BuildProduct {
  id: number;
  /** The build it belongs to. */
  build: number;
  /** Free text from the specification's `build-outputs`. */
  type: string;
  fileSize: number;
  /** Never computed, as in Cuirass: "". */
  checksum: string;
  /** Absolute path in the store. */
  path: string;
}

/** A job as evaluation returns it, before it is registered. */
export interface NewJob {
  name: string;
  derivation: string;
  system: string;
  nixName: string;
  outputs: BuildOutput[];
  /** Derivation file names of the job's direct inputs. */
  inputs: string[];
  timeout: number;
  maxSilent: number;
}

export interface Worker {
  name: string;
  address: string;
  machine: string;
  systems: string[];
  /** Epoch seconds, server clock. */
  lastSeen: number;
  /**
   * Seconds of silence after which the worker is gone: the worker timeout
   * of the server that last heard it, written with each contact, so that
   * every server sharing the database judges the row alike. Null in a row
   * written before it was recorded: each server judges that one by its own
   * timeout.
   */
  timeoutSeconds: number | null;
}

export interface BuildFilter {
  /** The build with this id (Cuirass's `id` filter). */
  id?: number;
  specification?: string;
  job?: string;
  system?: string;
  evaluation?: number;
  /**
   * Only builds created by an evaluation older than this one (Cuirass's
   * `oldevaluation` filter: the builds before a given evaluation).
   */
  beforeEvaluation?: number;
  worker?: string;
  /** The derivation file name, e.g. /gnu/store/...-hello-2.12.1.drv. */
  derivation?: string;
  /** Only builds whose weather is one of these. */
  weathers?: readonly Weather[];
}

/** What a build search (Cuirass's /search) matches. */
export interface BuildSearch {
  specification?: string;
  system?: string;
  /** A status; a pending one (< 0) matches every pending build. */
  status?: BuildStatus;
  /**
   * A prefix of the build's name (nix name) or job name, in any case; ""
   * matches every build.
   */
  namePrefix: string;
  /** Only builds of a lower id (the page after one ending there). */
  beforeId?: number;
}

/**
 * A saved set of job names of one specification, shown as a grid of an
 * evaluation's jobs (cuirass.md §6.1, the Dashboards table).
 */
export interface Dashboard {
  /** 16 random letters and digits. */
  id: string;
  specification: string;
  /**
   * Job names, none empty or holding a comma; saved sorted, each once
   * (dashboards saved before schema 10 kept the order given).
   */
  jobs: string[];
}

/** A dashboard as the store holds it. */
export interface SavedDashboard extends Dashboard {
  /** When it was last registered or shown, in seconds (0: before schema 10). */
  lastUsed: number;
}

export interface RegisterResult {
  /** Builds created by this call. */
  created: number;
  /** Jobs whose outputs were already known: no new build. */
  known: number;
  /**
   * New builds failed-dependency at once: one of their inputs had failed
   * already, in an earlier evaluation (case C05).
   */
  blocked: number;
}

export interface CompleteResult {
  /** False when nothing changed (unknown build, or not owned by the worker). */
  changed: boolean;
  /** Builds newly marked failed-dependency because of this failure. */
  dependentsFailed: number;
}

/** A worker and a build it is believed to hold. */
export interface Holding {
  worker: string;
  derivation: string;
}

/** A build a worker held (submitted to it, or started). */
export interface HeldBuild extends Holding {
  id: number;
}

/** What canceling or restarting an evaluation's builds changed. */
export interface EvaluationChange {
  /** Builds changed. */
  changed: number;
  /**
   * Those of them a worker held just before the change, with that worker,
   * so that the change can reach it.
   */
  held: HeldBuild[];
}

/** A work request: who asks, and for which systems. */
export interface PopRequest {
  worker: string;
  systems: readonly string[];
}

/** Conditions of a {@link Store.popBuilds}. */
export interface PopOptions {
  /**
   * Takes nothing unless the Workers row of the requests' worker (one
   * worker for all of them) has this address, checked in the pop's own
   * atomic step: a server in local mode takes no build under a holder name
   * that another server has taken over since it last looked
   * (lib/server/local_holder.ts), where nothing would build it.
   */
  holderAddress?: string;
  /**
   * The builds come without their outputs (an empty list): a remote
   * dispatcher hands out derivations, and reading each build's outputs was
   * a sixth of a SQLite dispatching server's time.
   */
  withoutOutputs?: boolean;
}

/**
 * The claim a write of a server in local mode is made under: the write
 * changes nothing unless the Workers row of its worker (which it must
 * name) still has `holderAddress`, checked in the write's own atomic step.
 * Whoever ended the claim put the builds held under it back in the queue,
 * and another server may hold them now under the same name; the old
 * claim's batch must neither record over nor requeue them.
 */
export interface HolderCheck {
  holderAddress?: string;
}

/** A worker's report that it started a build, and the build's log file. */
export interface StartReport {
  derivation: string;
  worker: string;
  log: string;
}

/** A worker's reported success whose outputs the server fetches. */
export interface OutputFetch {
  drv: string;
  worker: string;
  /** The worker's publish URL. */
  url: string;
}

/**
 * Everything the server stores. Times are epoch seconds passed in by the
 * caller, so that the clock stays injectable.
 */
export interface Store {
  upsertSpecification(spec: Specification): Promise<void>;
  getSpecification(name: string): Promise<Specification | null>;
  listSpecifications(): Promise<Specification[]>;

  /**
   * Creates an evaluation in status started, with its checkouts; with an
   * `owner`, that process runs it and its heartbeat is `now`.
   */
  addEvaluation(
    specification: string,
    checkouts: Checkout[],
    now: number,
    options?: { owner?: EvaluationOwner },
  ): Promise<number>;
  setEvaluationStatus(
    id: number,
    status: EvaluationStatus,
    now: number,
  ): Promise<void>;
  /**
   * Records how evaluation `id` ended, only if it is still started;
   * false when it ended already (another server aborted it).
   * @throws {StoreError} "not-found" without that evaluation.
   */
  finishEvaluation(
    id: number,
    status: EvaluationStatus,
    now: number,
  ): Promise<boolean>;
  /** Every evaluation in status started, oldest first. */
  listRunningEvaluations(): Promise<RunningEvaluation[]>;
  /**
   * The process that ran (or runs) evaluation `id`, whatever its status;
   * null when none was recorded or there is no such evaluation.
   */
  evaluationOwner(id: number): Promise<EvaluationOwner | null>;
  /**
   * Whether an administrator canceled evaluation `id` (cancelEvaluation),
   * and did not restart it since; false when there is no such evaluation.
   */
  evaluationCanceled(id: number): Promise<boolean>;
  /**
   * Sets the heartbeat of evaluation `id` to `now` while it is started;
   * false when it is not (it ended, or another server aborted it).
   */
  renewEvaluationHeartbeat(id: number, now: number): Promise<boolean>;
  /**
   * Aborts evaluation `id` if it is still started and its heartbeat is
   * still `seen.heartbeat` (its owner did not renew it since the caller
   * judged it stale); true if it did.
   */
  abortStaleEvaluation(
    id: number,
    seen: { heartbeat: number | null; now: number },
  ): Promise<boolean>;
  getEvaluation(id: number): Promise<Evaluation | null>;
  getEvaluationCheckouts(id: number): Promise<Checkout[]>;
  listEvaluations(
    options: { specification?: string; limit: number },
  ): Promise<Evaluation[]>;

  /**
   * Registers an evaluation's jobs: one build per new derivation (dedup by
   * output path), build dependencies from the jobs' inputs. Idempotent.
   */
  registerBuilds(
    evaluation: number,
    jobs: NewJob[],
    options: {
      priority: number;
      now: number;
      /**
       * Only while the evaluation is started, renewing its heartbeat in
       * the same transaction [false].
       * @throws {StoreError} "evaluation-ended" when it is not.
       */
      whileStarted?: boolean;
      /**
       * With `whileStarted`, the time (epoch seconds) of the heartbeat
       * renewed again as the registration ends, read then [none: only the
       * renewal at its start, to `now`].
       */
      heartbeatNow?: () => number;
    },
  ): Promise<RegisterResult>;

  getBuild(id: number): Promise<Build | null>;
  /** Records products of build `build`; a path already recorded is kept. */
  addBuildProducts(
    build: number,
    products: Pick<BuildProduct, "type" | "fileSize" | "path">[],
  ): Promise<void>;
  /** The build product `id`, or null. */
  getBuildProduct(id: number): Promise<BuildProduct | null>;
  getBuildByDerivation(derivation: string): Promise<Build | null>;
  /** Finished builds (status >= 0), newest evaluation first. */
  latestBuilds(filter: BuildFilter, limit: number): Promise<Build[]>;
  /** Pending builds in the order the dispatcher considers them. */
  queue(filter: BuildFilter, limit: number): Promise<Build[]>;
  /** Ids of the builds `id` depends on. */
  buildDependencies(id: number): Promise<number[]>;
  countBuildsByStatus(
    filter?: BuildFilter,
  ): Promise<Map<BuildStatus, number>>;
  /**
   * Builds matching `search`, newest id first, at most `limit`: every
   * build, not a recent window (a scan: at a million builds a rare name
   * reads them all, off the dispatcher's thread on SQLite).
   */
  searchBuilds(search: BuildSearch, limit: number): Promise<Build[]>;

  /**
   * Atomically takes the next dispatchable build for one of `systems`:
   * scheduled, every dependency succeeded, by priority then age across all
   * systems. Marks it submitted to `worker` at `now`.
   */
  popBuild(
    worker: string,
    systems: readonly string[],
    now: number,
  ): Promise<Build | null>;
  /**
   * {@link popBuild} for several requests at once (a dispatcher turn's):
   * entry i of the result is request i's build, or null. Requests for the
   * same systems share one walk of the queue (on PostgreSQL one statement),
   * the earlier requests getting the earlier builds.
   */
  popBuilds(
    requests: readonly PopRequest[],
    now: number,
    options?: PopOptions,
  ): Promise<(Build | null)[]>;
  /** Marks a submitted build started; false if `worker` does not own it. */
  markStarted(
    derivation: string,
    worker: string,
    log: string,
    now: number,
    options?: HolderCheck,
  ): Promise<boolean>;
  /**
   * {@link markStarted} for several builds at once (on PostgreSQL one
   * statement): entry i of the result says whether start i was recorded.
   */
  markStartedMany(
    starts: readonly StartReport[],
    now: number,
  ): Promise<boolean[]>;
  /**
   * Records a final status (succeeded, failed, failed-other, canceled).
   * When `worker` is given, only a build that worker owns changes. A failure
   * marks every scheduled build depending on it, transitively,
   * failed-dependency, unless `propagate` is false: a build that failed
   * for want of a builder (case C06) leaves its dependents waiting. A
   * build it changes has the fetches owed for it forgotten (see
   * {@link saveOwedFetches}): resumed, they would find it finished.
   */
  completeBuild(
    derivation: string,
    status: BuildStatus,
    options: {
      worker?: string;
      now: number;
      propagate?: boolean;
    } & HolderCheck,
  ): Promise<CompleteResult>;
  /**
   * Puts a submitted or started build back to scheduled, with no log until
   * it starts again. When `worker` is given, only a build that worker
   * holds changes.
   */
  requeueBuild(
    derivation: string,
    now: number,
    options?: { worker?: string } & HolderCheck,
  ): Promise<boolean>;
  /** Requeues every submitted or started build of `worker`; returns count. */
  requeueWorkerBuilds(worker: string, now: number): Promise<number>;

  /**
   * Inserts or refreshes a worker (address, machine, systems, last seen,
   * timeout).
   */
  upsertWorker(worker: Worker): Promise<void>;
  /**
   * Records a contact of worker `name` at `now`, heard by a server whose
   * worker timeout is `timeoutSeconds`; false when there is no such worker.
   */
  touchWorker(
    name: string,
    now: number,
    timeoutSeconds: number,
  ): Promise<boolean>;
  /**
   * Saves `worker` only if its row is as `expected` says: absent when
   * null, else with `expected.address` and, when given, last seen at
   * `expected.lastSeen`; returns whether it was saved. One server in
   * local mode takes its holder name this way, over a dead holder's row
   * (lib/server/local_holder.ts); builds are left alone.
   */
  claimWorker(
    worker: Worker,
    expected: { address: string; lastSeen?: number } | null,
  ): Promise<boolean>;
  /**
   * Deletes worker `name` if its row still has `address`, then requeues
   * its submitted and started builds; returns how many, or null when the
   * row was gone or had another address (left alone).
   */
  releaseWorker(name: string, address: string): Promise<number | null>;
  getWorker(name: string): Promise<Worker | null>;
  listWorkers(): Promise<Worker[]>;
  /** Deletes worker `name` and requeues its builds. */
  removeWorker(name: string, now: number): Promise<void>;
  /**
   * Deletes, by name, the workers silent at `now` for longer than their
   * own timeout (that of the server that last heard them; the sweep's
   * `timeoutSeconds` for a row recording none), silence counted from
   * `silentFrom` at the earliest, and requeues their submitted and started
   * builds. Whichever server sweeps, a row thus goes at the same time.
   */
  expireWorkers(now: number, sweep: WorkerSweep): Promise<ExpiredWorker[]>;
  /**
   * The shortest worker timeout the workers' rows record (each that of the
   * server that last heard the worker); null when none records one.
   */
  shortestWorkerTimeout(): Promise<number | null>;
  /** Records a clean dispatcher stop; see {@link resumeWorkerClock}. */
  stopWorkerClock(now: number): Promise<void>;
  /**
   * Adds the time since the last clean dispatcher stop to every worker's
   * last contact (silence counts only while a dispatcher runs); returns the
   * seconds added, 0 when the last stop was not clean.
   */
  resumeWorkerClock(now: number): Promise<number>;
  /**
   * Adds `seconds` to the last contact of the workers last seen at or
   * before `before` (a forward step of the wall clock is not silence);
   * returns how many workers.
   */
  creditWorkers(seconds: number, before: number): Promise<number>;
  /**
   * Saves output fetches owed (a success reported, its outputs not fetched
   * yet) until {@link forgetOwedFetch}, for a later start to resume (see
   * {@link owedFetches}); a worker's result of a derivation saved again
   * replaces its earlier record.
   */
  saveOwedFetches(fetches: readonly OutputFetch[]): Promise<void>;
  /** The output fetches saved and not forgotten, which stay saved. */
  owedFetches(): Promise<OutputFetch[]>;
  /** Forgets the saved fetch of `worker`'s result of `drv`: it ended. */
  forgetOwedFetch(fetch: Pick<OutputFetch, "drv" | "worker">): Promise<void>;

  // --- Added for issues #4, #6, #7 (admin actions, polling, local mode) ---

  /** Deletes a specification with its evaluations and builds. */
  deleteSpecification(name: string): Promise<boolean>;
  /**
   * The newest recorded revision of each channel of `specification`, over
   * all its evaluations (what channel polling compares against).
   */
  latestCheckouts(specification: string): Promise<Checkout[]>;
  /** Jobs of an evaluation, ordered by name (the `/api/jobs` rows). */
  listJobs(
    evaluation: number,
    options?: { names?: string[]; system?: string },
  ): Promise<{ name: string; build: number; status: BuildStatus }[]>;
  /**
   * Cancels a pending build: status canceled, its scheduled dependents
   * failed-dependency. Returns the worker it was submitted or started on,
   * so that the cancellation can reach it; null otherwise.
   */
  cancelBuild(
    id: number,
    now: number,
  ): Promise<{ changed: boolean; worker: string | null }>;
  /**
   * Schedules a build again (status scheduled, times 0, weather unknown,
   * no log until it starts) and its failed-dependency dependents that no
   * longer have a failed dependency. Returns the worker it was running on,
   * if any.
   */
  restartBuild(
    id: number,
    now: number,
  ): Promise<{ changed: boolean; worker: string | null }>;
  /**
   * Cancels every pending build created by an evaluation, as
   * {@link cancelBuild} does one.
   */
  cancelEvaluation(id: number, now: number): Promise<EvaluationChange>;
  /**
   * Restarts every build created by an evaluation, as {@link restartBuild}
   * does one.
   */
  restartEvaluation(id: number, now: number): Promise<EvaluationChange>;
  /**
   * Which of `holdings` still hold: entry i is true when build
   * `holdings[i].derivation` is submitted to or started by
   * `holdings[i].worker` (one query for them all).
   */
  stillHeld(holdings: readonly Holding[]): Promise<boolean[]>;
  /** Scheduled builds per system (for metrics and the queue page). */
  queueLengthBySystem(): Promise<Map<string, number>>;
  /** Dependencies of `id` that have not succeeded, with their status. */
  pendingDependencies(
    id: number,
  ): Promise<{ id: number; status: BuildStatus; system: string }[]>;

  /**
   * Takes up to `limit` queued notifications, oldest first: they stay in
   * the queue, claimed at `now` (seconds), until finishNotifications; a
   * claim older than an hour (its sender died) is taken again. completeBuild
   * queues one per notification sink of the build's specification when its
   * weather becomes new-success or new-failure.
   */
  popNotifications(limit: number, now: number): Promise<QueuedNotification[]>;
  /**
   * Gives notifications taken by popNotifications and not delivered back to
   * the queue under their own ids (which keep Mastodon's idempotency key);
   * skips those whose build is gone or that were given back already.
   * Returns how many went back.
   */
  returnNotifications(items: QueuedNotification[]): Promise<number>;
  /** Removes notifications sent (or given up) from the queue. */
  finishNotifications(ids: number[]): Promise<void>;

  /**
   * Saves a dashboard's names sorted and each once, and returns the id
   * they are saved under: its own, or that of the specification's
   * dashboard holding the same names (whose use at `now` is recorded);
   * null, changing nothing, when its id is taken by other names. Beyond
   * `keep` dashboards (default 10,000) the least recently used go.
   * @throws {StoreError} "not-found" for an unknown specification.
   * @throws {TypeError} for no job, or a job name empty or with a comma.
   */
  addDashboard(
    dashboard: Dashboard,
    options: { now: number; keep?: number },
  ): Promise<string | null>;
  /** The dashboard `id`, or null. */
  getDashboard(id: string): Promise<SavedDashboard | null>;
  /**
   * The dashboard `id`, or null, its use at `now` recorded (a write at
   * most once a minute per dashboard, as pages show it).
   */
  useDashboard(id: string, now: number): Promise<SavedDashboard | null>;

  // --- Added for issue #8 (several processes on one database) ---

  /**
   * Calls `onChange` whenever builds may have become dispatchable through
   * another process (PostgreSQL LISTEN/NOTIFY, listening again after a lost
   * connection, plus polling as a safety net), until `signal` aborts.
   * Absent when this process alone writes the database (SQLite).
   */
  watchQueue?(onChange: () => void, signal: AbortSignal): void;

  /**
   * Calls `onChange` whenever a build may have been taken from the worker
   * holding it by another process (a cancel or a restart by a web front
   * end, a worker sweep expiring its worker, a server claiming its holder
   * name: PostgreSQL LISTEN/NOTIFY, without a poll of its own), until
   * `signal` aborts. Absent where no other process writes (SQLite).
   */
  watchHoldings?(onChange: () => void, signal: AbortSignal): void;

  /**
   * Group commit: calls `work` with a store whose writes share one
   * transaction, committed once when `work` resolves (rolled back if it
   * throws), so that many small writes cost one commit. Each write is
   * still all or nothing (a savepoint): one that fails throws to its
   * caller and leaves the others. Reads through that store see the
   * batch's writes. Meanwhile, writes through this store wait for the
   * commit (SQLite, one writer) or run beside the batch (PostgreSQL), and
   * on SQLite, whose one connection holds the batch's transaction, reads
   * through this store see the batch's writes before they are committed.
   * Only one batch runs at a time; a batch cannot be nested, and `work`
   * must not wait for a write through this store (on SQLite that write
   * waits for the batch).
   */
  batch<T>(work: (tx: Store) => Promise<T>, options?: BatchOptions): Promise<T>;

  /**
   * How many batches were begun through this store since it opened: a
   * long write compares two readings to learn whether batches (dispatcher
   * turns) came while it ran, and then leaves them the database a while
   * (chunked_registration.ts). Absent: unknown, taken as always.
   */
  batchesBegun?(): number;

  close(): Promise<void>;
}

/** Options of {@link Store.batch}. */
export interface BatchOptions {
  /**
   * Writes without savepoints, which costs a statement less per write (on
   * PostgreSQL, two round trips less); but then a write that fails spoils
   * the whole batch: it and every later call reject with a
   * {@link StoreError} of code "batch-aborted" (the write's error as its
   * cause), and the batch rejects with it and records nothing. For callers
   * that can run the same work again without the option, which then tells
   * the failing write from the others.
   */
  optimistic?: boolean;
}

/** A notification waiting to be sent. */
export interface QueuedNotification {
  id: number;
  /** The sink, as in Specification.notifications (e.g. type "email"). */
  sink: Record<string, string>;
  build: Build;
}
