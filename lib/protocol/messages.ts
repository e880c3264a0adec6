// The messages Cuirass's remote server and workers exchange over ZeroMQ,
// as typed values, with their exact s-expression encoding (cuirass.md 1.3).

import { type Datum, isSym, type Sym, sym } from "../sexp/datum.ts";
import { readSexp, SexpSyntaxError } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";

/** A worker as it describes itself in worker-ready and worker-ping. */
export interface WorkerInfo {
  name: string;
  address: string;
  machine: string;
  systems: string[];
  /** Always 0 on the wire; the server keeps its own clock. */
  lastSeen: number;
}

/**
 * A worker's proof that it holds a key the server knows: the key's id and
 * an HMAC-SHA256 of the server's nonce and the worker name (hex).
 */
export interface WorkerAuthProof {
  key: string;
  mac: string;
}

/**
 * Lorica extensions a peer announces in `lorica-hello`/`lorica-welcome`:
 * "request-id" (work requests and their replies carry `(request-id N)`),
 * "build-cancel" (the server may send `(build-cancel (drv D))`),
 * "holding" (worker-ready lists the builds the session still runs) and
 * "disk" (worker-ping says `(disk-low #t)` while the worker is too short of
 * disk space to take work) and "log-ack" (the log channel's header may ask
 * for `(log-stored)` once the log is in place; see log_header.ts) and
 * "store-dir" (lorica-welcome ends with `(store-dir "/gnu/store")`, the
 * store every derivation the server hands out lies in) and "result-ack"
 * (the server answers each build result, once what it made of it is
 * committed, with `(result-ack (drv D) (outcome O))`; see ResultOutcome)
 * and "worker-refused" (the server answers a `worker-ready` it refuses with
 * `(worker-refused (reason R))`: a worker whose key it does not accept
 * learns it, where Cuirass's protocol has no reply to a registration)
 * and "worker-accepted" (a server that requires worker keys answers a
 * `worker-ready` it accepts with `(worker-accepted)`: the worker knows at
 * once that its key was taken, where otherwise only the server's next
 * message on that connection, maybe a build's result-ack, would show it)
 * and "outputs-fetched" (once the fetch of a success it acknowledged as
 * "fetching" ends, fetched or given up, the server says
 * `(outputs-fetched (drv D))`: until then a worker that is stopping keeps
 * its publish server up, the fetch's only source).
 */
export const LORICA_FEATURES = [
  "request-id",
  "build-cancel",
  "holding",
  "disk",
  "log-ack",
  "store-dir",
  "result-ack",
  "worker-refused",
  "worker-accepted",
  "outputs-fetched",
];

/**
 * What a server made of a build result it acknowledges ("result-ack"), all
 * of it committed before the ack is sent: "recorded" (the build's outcome
 * is in the database: a failure, or an earlier report of the same result),
 * "fetching" (a success whose outputs the server fetches, the fetch saved
 * so that a restarted server resumes it) or "ignored" (the sender does not
 * hold the build: another worker's, canceled, requeued). Whichever it is,
 * the worker need not send that result again. A worker takes any string,
 * so that a later server may say more.
 */
export type ResultOutcome = "recorded" | "fetching" | "ignored";

/** Version of the Lorica extension handshake. */
export const LORICA_PROTOCOL_VERSION = 1;

/**
 * Seconds between a worker's pings: Cuirass's fixed pace, and Lorica's
 * default. The server's worker timeout must stay above it.
 */
export const PING_INTERVAL_SECONDS = 60;

/** One message of the remote build protocol. */
export type Message =
  | { type: "worker-request-info" }
  | {
    type: "server-info";
    workerAddress: string;
    logPort: number;
    /** Null when the server does not publish (written #f). */
    publishPort: number | null;
  }
  | {
    type: "worker-ready";
    worker: WorkerInfo;
    /** Lorica only: derivations this session is still building. */
    holding?: string[];
    /** Lorica only: the authentication proof. */
    auth?: WorkerAuthProof;
  }
  | {
    type: "worker-ping";
    worker: WorkerInfo;
    /** Lorica only: true while the worker asks for no work, short of disk. */
    diskLow?: boolean;
  }
  | {
    type: "worker-request-work";
    name: string;
    /** Lorica only: echoed in the reply, so that stale replies are seen. */
    requestId?: number;
  }
  | { type: "no-build"; requestId?: number }
  | {
    type: "build";
    drv: string;
    priority: number;
    timeout: number;
    maxSilent: number;
    /** Cuirass always sends #f (null). */
    timestamp: number | null;
    system: string;
    requestId?: number;
  }
  | { type: "build-started"; drv: string; worker: string }
  | { type: "build-succeeded"; drv: string; url: string; log: string | null }
  | { type: "build-failed"; drv: string; url: string; log: string | null }
  // Lorica extensions, sent only to peers that announced them.
  | { type: "lorica-hello"; version: number; features: string[] }
  | {
    type: "lorica-welcome";
    version: number;
    features: string[];
    /** Random per connection; the worker's auth proof covers it. */
    nonce: string;
    /**
     * Lorica only ("store-dir"): the server's store directory. A worker of
     * another store could build none of its derivations.
     */
    storeDir?: string;
    /**
     * Set, instead of `storeDir`, when the welcome's store-dir could not be
     * read: the error, which quotes the value. Never encoded.
     */
    storeDirError?: string;
  }
  | { type: "build-cancel"; drv: string }
  | {
    type: "result-ack";
    drv: string;
    /** A {@link ResultOutcome} from this server; any string from another. */
    outcome: string;
  }
  | {
    type: "worker-refused";
    /** Why, for the worker's log: no proof, or a proof not accepted. */
    reason: string;
  }
  /** The registration just sent was accepted (see "worker-accepted"). */
  | { type: "worker-accepted" }
  | {
    type: "outputs-fetched";
    /**
     * The derivation whose outputs the server no longer fetches from the
     * worker: in its store, or given up (see "outputs-fetched").
     */
    drv: string;
  };

/** Options of `decodeMessage`. */
export interface DecodeMessageOptions {
  /** Largest payload accepted; default {@link DEFAULT_MAX_PAYLOAD_BYTES}. */
  maxBytes?: number;
}

/**
 * A payload that is not a well-formed protocol message. For a work reply
 * (`build` or `no-build`) it keeps what could still be read of it: a worker
 * refuses a build whose derivation it can name, where dropped it would stay
 * submitted to that worker for good (cuirass.md §2.5), and a request id
 * tells it whether the reply answers the request it waits on.
 */
export class ProtocolError extends Error {
  /** The message tag, when the payload got that far. */
  tag?: string;
  /** The offending field, when one is to blame. */
  field?: string;
  /** The derivation of a `build` whose other fields failed. */
  drv?: string;
  /** The request id of a work reply, when it could be read. */
  requestId?: number;

  constructor(
    message: string,
    details: {
      tag?: string;
      field?: string;
      drv?: string;
      requestId?: number;
    } = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ProtocolError";
    this.tag = details.tag;
    this.field = details.field;
    this.drv = details.drv;
    this.requestId = details.requestId;
  }
}

/**
 * The largest payload `decodeMessage` accepts unless told otherwise. The
 * largest message a worker may send (a worker-ready at every bound below,
 * with eight held builds and its proof) is under 5 KiB; a hostile payload
 * is decoded on the dispatcher's thread, and 1 MiB of one held it for
 * 100-250 ms.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024;
// Real messages nest four lists deep; a little room, no more.
const MAX_DEPTH = 8;
const MAX_QUOTED = 60;

// What a worker says of itself is stored and shown on the workers page, so
// it is bounded, well above what real workers send (cuirass.md 1.3): a name
// of 8 random characters, gethostname() as machine, an IP address, and the
// few systems of --systems (names such as "powerpc64le-linux").

/** Longest worker name taken. */
export const MAX_WORKER_NAME_LENGTH = 64;
/** Longest machine name and address taken (a DNS name is at most 253). */
export const MAX_HOST_LENGTH = 255;
/** Most systems one worker may declare. */
export const MAX_WORKER_SYSTEMS = 32;
/** Longest system name taken. */
export const MAX_SYSTEM_LENGTH = 64;

/**
 * Encodes `message` as Guile `write` prints it, in UTF-8, with no newline.
 *
 * @throws {RangeError} when a numeric field is not an integer.
 */
export function encodeMessage(message: Message): Uint8Array {
  return new TextEncoder().encode(writeSexp(toDatum(message)));
}

/**
 * Decodes one payload frame. Fields must come in Cuirass's order with the
 * right types; fields after the known ones are ignored, so that a later
 * Lorica peer may append some without breaking older ones.
 *
 * @throws {ProtocolError} for an unreadable, unknown or malformed message
 * (an unreadable one has the SexpSyntaxError as `cause`); never anything
 * else.
 */
export function decodeMessage(
  payload: Uint8Array,
  options: DecodeMessageOptions = {},
): Message {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (payload.length === 0) {
    throw new ProtocolError("Cannot decode message: payload is empty");
  }
  if (payload.length > maxBytes) {
    throw new ProtocolError(
      `Cannot decode message: payload of ${payload.length} bytes exceeds maxBytes ${maxBytes}`,
    );
  }

  let datum: Datum;
  try {
    datum = readSexp(payload, { maxLength: maxBytes, maxDepth: MAX_DEPTH });
  } catch (error) {
    const what = error instanceof SexpSyntaxError
      ? error.message
      : String(error);
    throw new ProtocolError(`Cannot decode message: ${what}`, {}, {
      cause: error,
    });
  }

  try {
    return fromDatum(datum);
  } catch (error) {
    if (error instanceof ProtocolError) throw error;
    // Not expected; keeps the promise that only ProtocolError escapes.
    throw new ProtocolError(`Cannot decode message: ${String(error)}`, {}, {
      cause: error,
    });
  }
}

function toDatum(message: Message): Datum {
  const tag = sym(message.type);
  switch (message.type) {
    case "worker-request-info":
    case "worker-accepted":
      return [tag];
    case "no-build":
      return [tag, ...requestIdField(message.requestId)];
    case "server-info":
      return [
        tag,
        field("worker-address", message.workerAddress),
        field("log-port", message.logPort),
        field("publish-port", message.publishPort ?? false),
      ];
    case "worker-ready":
      return [
        tag,
        workerToDatum(message.worker),
        ...(message.holding === undefined
          ? []
          : [field("holding", message.holding)]),
        ...(message.auth === undefined ? [] : [[
          sym("auth"),
          field("key", message.auth.key),
          field("mac", message.auth.mac),
        ]]),
      ];
    case "worker-ping":
      return [
        tag,
        workerToDatum(message.worker),
        ...(message.diskLow === undefined
          ? []
          : [field("disk-low", message.diskLow)]),
      ];
    case "worker-request-work":
      return [tag, message.name, ...requestIdField(message.requestId)];
    case "build":
      return [
        tag,
        field("drv", message.drv),
        field("priority", message.priority),
        field("timeout", message.timeout),
        field("max-silent", message.maxSilent),
        field("timestamp", message.timestamp ?? false),
        field("system", message.system),
        ...requestIdField(message.requestId),
      ];
    case "build-started":
      return [tag, field("drv", message.drv), field("worker", message.worker)];
    case "build-succeeded":
    case "build-failed":
      return [
        tag,
        field("drv", message.drv),
        field("url", message.url),
        field("log", message.log ?? false),
      ];
    case "lorica-hello":
      return [
        tag,
        field("version", message.version),
        field("features", message.features),
      ];
    case "lorica-welcome":
      return [
        tag,
        field("version", message.version),
        field("features", message.features),
        field("nonce", message.nonce),
        ...(message.storeDir === undefined
          ? []
          : [field("store-dir", message.storeDir)]),
      ];
    case "build-cancel":
      return [tag, field("drv", message.drv)];
    case "result-ack":
      return [
        tag,
        field("drv", message.drv),
        field("outcome", message.outcome),
      ];
    case "worker-refused":
      return [tag, field("reason", message.reason)];
    case "outputs-fetched":
      return [tag, field("drv", message.drv)];
  }
}

function requestIdField(requestId: number | undefined): Datum[] {
  return requestId === undefined ? [] : [field("request-id", requestId)];
}

function field(name: string, value: Datum): Datum {
  return [sym(name), value];
}

function workerToDatum(worker: WorkerInfo): Datum {
  return [
    sym("worker"),
    field("name", worker.name),
    field("address", worker.address),
    field("machine", worker.machine),
    field("systems", worker.systems),
    field("last-seen", worker.lastSeen),
  ];
}

function fromDatum(datum: Datum): Message {
  if (!Array.isArray(datum) || datum.length === 0 || !isSym(datum[0])) {
    throw new ProtocolError(
      `Cannot decode message: expected a list starting with a symbol, found ${
        quote(datum)
      }`,
    );
  }
  const type = (datum[0] as Sym).name;
  try {
    return fromFields(type, new Fields(type, datum));
  } catch (error) {
    if (
      error instanceof ProtocolError &&
      (type === "build" || type === "no-build")
    ) {
      error.requestId = readableRequestId(datum);
      if (type === "build") error.drv = readableDrv(datum);
    }
    throw error;
  }
}

function fromFields(type: string, fields: Fields): Message {
  switch (type) {
    case "worker-request-info":
    case "worker-accepted":
      return { type };
    case "no-build":
      return { type, ...fields.requestId() };
    case "server-info":
      return {
        type,
        workerAddress: fields.string("worker-address"),
        logPort: fields.port("log-port"),
        publishPort: fields.orFalse(
          "publish-port",
          () => fields.port("publish-port"),
        ),
      };
    case "worker-ready": {
      const worker = fields.worker();
      const holding = fields.optional("holding");
      const auth = fields.optional("auth", true);
      return {
        type,
        worker,
        ...(holding === undefined
          ? {}
          : { holding: fields.stringList("holding", holding) }),
        ...(auth === undefined ? {} : { auth: fields.auth(auth) }),
      };
    }
    case "worker-ping": {
      const worker = fields.worker();
      const diskLow = fields.optional("disk-low");
      if (diskLow !== undefined && typeof diskLow !== "boolean") {
        fields.fail("disk-low", "is not a boolean");
      }
      return {
        type,
        worker,
        ...(diskLow === undefined ? {} : { diskLow: diskLow as boolean }),
      };
    }
    case "worker-request-work":
      return {
        type,
        name: fields.workerName("name", fields.bareString("name")),
        ...fields.requestId(),
      };
    case "build":
      return {
        type,
        drv: fields.string("drv"),
        priority: fields.integer("priority"),
        timeout: fields.integer("timeout"),
        maxSilent: fields.integer("max-silent"),
        timestamp: fields.orFalse(
          "timestamp",
          () => fields.integer("timestamp"),
        ),
        system: fields.string("system"),
        ...fields.requestId(),
      };
    case "build-started":
      return {
        type,
        drv: fields.string("drv"),
        worker: fields.workerName("worker", fields.string("worker")),
      };
    case "build-succeeded":
    case "build-failed":
      return {
        type,
        drv: fields.string("drv"),
        url: fields.string("url"),
        log: fields.orFalse("log", () => fields.string("log")),
      };
    case "lorica-hello":
      return {
        type,
        version: fields.integer("version"),
        features: fields.stringList("features", fields.take("features")),
      };
    case "lorica-welcome": {
      const welcome = {
        type,
        version: fields.integer("version"),
        features: fields.stringList("features", fields.take("features")),
        nonce: fields.string("nonce"),
      };
      // A store-dir that cannot be read spoils no more than itself: the
      // welcome dropped whole took its nonce with it, and the worker went
      // on as with a Cuirass server, with no proof and no extensions.
      try {
        const storeDir = fields.optional("store-dir");
        return storeDir === undefined
          ? welcome
          : { ...welcome, storeDir: fields.directory("store-dir", storeDir) };
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        return { ...welcome, storeDirError: error.message };
      }
    }
    case "build-cancel":
      return { type, drv: fields.string("drv") };
    case "result-ack":
      return {
        type,
        drv: fields.string("drv"),
        outcome: fields.string("outcome"),
      };
    case "worker-refused":
      return { type, reason: fields.string("reason") };
    case "outputs-fetched":
      return { type, drv: fields.string("drv") };
    default:
      throw new ProtocolError(
        `Cannot decode message: unknown tag ${JSON.stringify(clip(type))}`,
        { tag: clip(type) },
      );
  }
}

/**
 * The derivation of a `build` list whose drv field is well formed, the
 * other fields aside: it can then be refused by name.
 */
function readableDrv(items: Datum[]): string | undefined {
  const item = items[1];
  if (!Array.isArray(item) || item.length !== 2 || !isSym(item[0], "drv")) {
    return undefined;
  }
  const drv = item[1];
  return typeof drv === "string" && !hasControlCharacter(drv) ? drv : undefined;
}

/** The first well-formed `(request-id N)` among a work reply's fields. */
function readableRequestId(items: Datum[]): number | undefined {
  for (const item of items.slice(1)) {
    if (
      Array.isArray(item) && item.length === 2 &&
      isSym(item[0], "request-id") && Number.isSafeInteger(item[1]) &&
      (item[1] as number) >= 0
    ) return item[1] as number;
  }
  return undefined;
}

// Walks the elements of a tagged list in order, checking each against the
// field the protocol puts there.
class Fields {
  #tag: string;
  #items: Datum[];
  #next = 1;

  constructor(tag: string, items: Datum[]) {
    this.#tag = tag;
    this.#items = items;
  }

  /** The value of the next element, which must be `(name value)`. */
  take(name: string): Datum {
    const item = this.#items[this.#next++];
    if (item === undefined) this.fail(name, "is missing");
    if (
      !Array.isArray(item) || item.length !== 2 || !isSym(item[0], name)
    ) {
      this.fail(name, `is expected here, found ${quote(item)}`);
    }
    return item[1];
  }

  string(name: string): string {
    return this.plain(name, this.take(name));
  }

  /** The next element itself, which must be a string. */
  bareString(name: string): string {
    const value = this.#items[this.#next++];
    if (value === undefined) this.fail(name, "is missing");
    return this.plain(name, value);
  }

  /**
   * `value` if it is a string without control characters: every string of
   * the protocol names something (a worker, a derivation, a URL), and a NUL
   * would fail every write of it to PostgreSQL.
   */
  plain(name: string, value: Datum): string {
    if (typeof value !== "string") {
      this.fail(name, `is not a string: ${quote(value)}`);
    }
    if (hasControlCharacter(value)) {
      this.fail(name, `has a control character: ${quote(value)}`);
    }
    return value;
  }

  integer(name: string): number {
    const value = this.take(name);
    if (typeof value !== "number") {
      this.fail(name, `is not an integer in range: ${quote(value)}`);
    }
    return value;
  }

  port(name: string): number {
    const value = this.integer(name);
    // 0 is no port one can connect to: the upload would fail later,
    // without naming the server that gave it.
    if (value < 1 || value > 65535) {
      this.fail(name, `is not a port number: ${value}`);
    }
    return value;
  }

  /** Null for #f, else what `decode` makes of the value. */
  orFalse<T>(name: string, decode: () => T): T | null {
    const at = this.#next;
    if (this.take(name) === false) return null;
    this.#next = at;
    return decode();
  }

  worker(): WorkerInfo {
    const item = this.#items[this.#next++];
    if (item === undefined) this.fail("worker", "is missing");
    if (!Array.isArray(item) || !isSym(item[0], "worker")) {
      this.fail("worker", `is expected here, found ${quote(item)}`);
    }
    const fields = new Fields(this.#tag, item);
    return {
      name: fields.workerName("name", fields.string("name")),
      address: fields.bounded(
        "address",
        fields.string("address"),
        MAX_HOST_LENGTH,
      ),
      machine: fields.bounded(
        "machine",
        fields.string("machine"),
        MAX_HOST_LENGTH,
      ),
      systems: fields.systems(),
      lastSeen: fields.integer("last-seen"),
    };
  }

  /** `value` if it can name a worker: not empty, not too long. */
  workerName(name: string, value: string): string {
    if (value.length === 0) this.fail(name, "is empty");
    return this.bounded(name, value, MAX_WORKER_NAME_LENGTH);
  }

  /** `value` if it has at most `max` characters. */
  bounded(name: string, value: string, max: number): string {
    if (value.length > max) {
      // Only the start is quoted (and clipped): no need to write it all.
      this.fail(
        name,
        `has ${value.length} characters, more than ${max}: ${
          quote(value.slice(0, MAX_QUOTED + 1))
        }`,
      );
    }
    return value;
  }

  systems(): string[] {
    const value = this.take("systems");
    if (Array.isArray(value) && value.length > MAX_WORKER_SYSTEMS) {
      this.fail(
        "systems",
        `has ${value.length} entries, more than ${MAX_WORKER_SYSTEMS}: ${
          quote(value.slice(0, MAX_QUOTED))
        }`,
      );
    }
    const systems = this.stringList("systems", value);
    for (const system of systems) {
      if (system.length === 0) this.fail("systems", "has an empty system");
      this.bounded("systems", system, MAX_SYSTEM_LENGTH);
    }
    return systems;
  }

  stringList(name: string, value: Datum): string[] {
    if (
      !Array.isArray(value) || !value.every((s) => typeof s === "string")
    ) this.fail(name, "is not a list of strings");
    return value.map((item) => this.plain(name, item));
  }

  /**
   * The value of an optional trailing `(name value)` element, looked for
   * among the elements after the known ones; with `whole`, the element
   * itself (for fields holding several values).
   */
  optional(name: string, whole = false): Datum | undefined {
    for (let i = this.#next; i < this.#items.length; i++) {
      const item = this.#items[i];
      if (Array.isArray(item) && item.length >= 2 && isSym(item[0], name)) {
        if (whole) return item;
        if (item.length !== 2) this.fail(name, "has more than one value");
        return item[1];
      }
    }
    return undefined;
  }

  /**
   * `value` if it names a directory the way a store directory is written:
   * absolute, with no trailing slash (what `NIX_STORE_DIR` gives once
   * storeDirFromEnv trimmed it), for it is compared as a string.
   */
  directory(name: string, value: Datum): string {
    const path = this.plain(name, value);
    if (!/^\/.*[^/]$/.test(path)) {
      this.fail(name, `is not an absolute directory: ${quote(path)}`);
    }
    return path;
  }

  /** `{ requestId }` when a trailing `(request-id N)` is present. */
  requestId(): { requestId?: number } {
    const value = this.optional("request-id");
    if (value === undefined) return {};
    if (typeof value !== "number" || value < 0) {
      this.fail(
        "request-id",
        `is not a non-negative integer: ${quote(value)}`,
      );
    }
    return { requestId: value };
  }

  auth(item: Datum): WorkerAuthProof {
    const fields = new Fields(this.#tag, item as Datum[]);
    return { key: fields.string("key"), mac: fields.string("mac") };
  }

  fail(name: string, what: string): never {
    throw new ProtocolError(
      `Cannot decode message ${JSON.stringify(this.#tag)}: field ${
        JSON.stringify(name)
      } ${what}`,
      { tag: this.#tag, field: name },
    );
  }
}

function hasControlCharacter(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return /[\x00-\x1f\x7f]/.test(text);
}

function quote(datum: Datum): string {
  return JSON.stringify(clip(writeSexp(datum)));
}

function clip(text: string): string {
  return text.length > MAX_QUOTED ? text.slice(0, MAX_QUOTED) + "..." : text;
}
