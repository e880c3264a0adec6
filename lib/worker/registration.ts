// A session's registration with its server: the hello and the question
// "who am I" (asked again on the server's new life at each restart), the
// proof of this worker's key, the worker-ready that says the builds held,
// and what the log says of it, which a server requiring worker keys may
// refuse after the fact ("worker-refused") or say accepted
// ("worker-accepted"). Apart from the session (session.ts), which decides
// when to register: this makes the registration and keeps what it said,
// and whether it still stands (a probe since, or a connection other than
// the one it went on, means the server does not know it).

import {
  LORICA_FEATURES,
  LORICA_PROTOCOL_VERSION,
  type Message,
  type WorkerAuthProof,
  type WorkerInfo,
} from "../protocol/messages.ts";
import type { SessionOptions } from "./session.ts";
import { makeAuthProof } from "../protocol/worker_auth.ts";
import type { Logger } from "../log.ts";
import {
  isRefusable,
  type RefusableBuild,
  type UnreadableReply,
} from "./unreadable_reply.ts";
import {
  type ServerConnection,
  ServerSilentError,
} from "./server_connection.ts";
import type { ResultDelivery } from "./result_delivery.ts";

/**
 * The server's store directory is not this worker's: none of its
 * derivations could be built here, so the worker must not serve it.
 */
export class StoreDirMismatchError extends Error {
  constructor(
    readonly server: string,
    readonly serverStoreDir: string,
    readonly storeDir: string,
  ) {
    super(
      `Cannot build for the server at ${server}: its store directory is ${
        JSON.stringify(serverStoreDir)
      }, this worker's (NIX_STORE_DIR) is ${JSON.stringify(storeDir)}`,
    );
    this.name = "StoreDirMismatchError";
  }
}

/** Formats an address for a URL, bracketing IPv6. */
export function urlHost(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/** A registration made: what the server said, and what was sent. */
export interface Registration {
  info: Extract<Message, { type: "server-info" }>;
  lorica: boolean;
  features: Set<string>;
  worker: WorkerInfo;
  publishUrl: string;
  substituteUrls: string[];
  logServer: { hostname: string; port: number; acknowledges: boolean };
  /** The `worker-ready` sent, to say again holding nothing. */
  ready: Extract<Message, { type: "worker-ready" }>;
}

/** The server's address as logs and errors name it: `host:port`. */
export function serverAddress(
  server: { hostname: string; port: number },
): string {
  return `${urlHost(server.hostname)}:${server.port}`;
}

/** A build handed out to the session: one to run, or one to refuse. */
export type HandedOutBuild =
  | Extract<Message, { type: "build" }>
  | RefusableBuild;

/** Settings for {@link Registrar}: the session's own, and these. */
export interface RegistrarOptions extends
  Pick<
    SessionOptions,
    | "server"
    | "name"
    | "machine"
    | "systems"
    | "publishPort"
    | "substituteUrls"
    | "extensions"
    | "authKey"
  > {
  /** The store every derivation handed out must be in. */
  storeDir: string;
  /** Bound to the session's worker name. */
  logger: Logger;
  /** Longest wait for the server's answer. */
  replyTimeoutMs: number;
  /** The session's connection, which the registration goes on. */
  connection: ServerConnection;
  /** Takes the results the registration says held, to send after it. */
  delivery: ResultDelivery;
  /**
   * Sends `messages` in order on one connection, as the session sends (see
   * its #offer): false when a draining stop found no connection.
   */
  offer: (...messages: Message[]) => Promise<boolean>;
  /** Whether a draining session may leave now (see its #mayLeave). */
  mayLeave: () => boolean;
  /** The builds handed out during registrations, still to be answered. */
  handedOut: () => readonly HandedOutBuild[];
  /** Keeps a build handed out while registering (see its #keepHandedOut). */
  keepHandedOut: (job: HandedOutBuild) => void;
}

/** Registers a session with its server, and knows whether it still stands. */
export class Registrar {
  readonly #options: RegistrarOptions;
  readonly #logger: Logger;
  readonly #replyTimeoutMs: number;
  readonly #storeDir: string;
  readonly #connection: ServerConnection;
  readonly #delivery: ResultDelivery;
  readonly #offer: (...messages: Message[]) => Promise<boolean>;
  readonly #mayLeave: () => boolean;
  readonly #handedOut: () => readonly HandedOutBuild[];
  readonly #keepHandedOut: (job: HandedOutBuild) => void;
  /** Probes the connection had seen at the last registration. */
  #registeredAt = -1;
  /**
   * The connection the last registration's `worker-ready` went on: a
   * server requiring worker keys takes results only from it.
   */
  #registeredOn = -1;
  #registration: Registration | undefined;
  /**
   * The log line of the last registration, while a server that may refuse
   * it (one that requires worker keys and says refusals: "worker-refused")
   * has not shown it accepted: said at its acceptance ("worker-accepted")
   * or, from a server that does not say acceptances, at the server's next
   * message on the connection the registration went on (a refusal would
   * have come first); dropped at a refusal (see hear).
   */
  #unconfirmed:
    | { connection: number; fields: Record<string, unknown> }
    | undefined;
  /** Whether a registration of this session was said made. */
  #registeredOnce = false;

  constructor(options: RegistrarOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#replyTimeoutMs = options.replyTimeoutMs;
    this.#storeDir = options.storeDir;
    this.#connection = options.connection;
    this.#delivery = options.delivery;
    this.#offer = options.offer;
    this.#mayLeave = options.mayLeave;
    this.#handedOut = options.handedOut;
    this.#keepHandedOut = options.keepHandedOut;
  }

  /** The last registration made; undefined before the first. */
  get current(): Registration | undefined {
    return this.#registration;
  }

  /**
   * Whether a probe came since the last registration: the server
   * restarted, and knows it no more.
   */
  serverRestarted(): boolean {
    return this.#connection.probes !== this.#registeredAt;
  }

  /**
   * Forgets where the last registration went, its log line not said yet
   * with it: the session is replacing its connection, and no registration
   * is made on the new one yet.
   */
  forget() {
    this.#registeredAt = -1;
    this.#registeredOn = -1;
    this.#unconfirmed = undefined;
  }

  /**
   * The server may not know the last registration (a registration again
   * failed, whatever of it was sent): stale() holds until the next.
   */
  markUnknown() {
    this.#registeredAt = -1;
  }

  /**
   * Hears what `message`, which came on connection number `connection`,
   * says of the last registration: true when it was the refusal of it
   * ("worker-refused") or its acceptance ("worker-accepted"), which is
   * said and is nothing else; any other message after the registration
   * shows it accepted.
   */
  hear(
    message: Message | UnreadableReply,
    connection: number,
  ): boolean {
    if (message.type === "worker-refused") {
      this.#unconfirmed = undefined;
      this.#refused(message.reason);
      return true;
    }
    // Its acceptance, or anything else the server sends after a
    // registration (which comes after its refusal, had it been refused):
    // it was accepted. Only on the connection it went on: one lost since
    // answered a registration made there, not the one waiting.
    if (this.#unconfirmed?.connection === connection) {
      this.#sayRegistered(this.#unconfirmed.fields);
    }
    return message.type === "worker-accepted";
  }

  /**
   * Asks who we are, announces ourselves; `holding` is the running build.
   * False when a draining stop ended it (only ever between builds).
   */
  async register(holding: string[]): Promise<boolean> {
    const options = this.#options;
    const answer = await this.#askInfo();
    if (answer === null) return false;
    const { welcome, info, auth } = answer;
    const lorica = welcome !== undefined;
    const features = new Set(
      (welcome?.features ?? []).filter((f) => LORICA_FEATURES.includes(f)),
    );
    if (welcome?.storeDirError !== undefined) {
      // The rest of the welcome stands (its nonce, its features): the
      // store is then checked on each derivation handed out, as with a
      // server that does not say its own (see the session's #refuse).
      this.#logger.error("store directory unreadable", {
        server: serverAddress(this.#options.server),
        error: welcome.storeDirError,
        action: "checking each derivation's store instead",
      });
    }
    if (features.has("store-dir")) this.checkStoreDir(welcome!.storeDir);
    const delivering = this.#delivery.take();
    const worker: WorkerInfo = {
      name: options.name,
      address: info.workerAddress,
      machine: options.machine,
      systems: options.systems,
      lastSeen: 0,
    };
    if (welcome?.features.includes("auth") && auth === undefined) {
      this.#logger.error("authentication required", {
        reason: "the server requires a worker key and none is configured",
      });
    }
    const readyMessage: Extract<Message, { type: "worker-ready" }> = {
      type: "worker-ready",
      worker,
      ...(lorica && features.has("holding")
        ? {
          holding: [
            ...new Set([
              ...holding,
              ...this.#handedOut().map((job) => job.drv),
              // Builds done whose results wait to be delivered (or sent
              // again, no ack heard): said held, they stay this worker's
              // instead of being requeued.
              ...delivering.map((result) => result.drv),
            ]),
          ],
        }
        : {}),
      ...(auth ? { auth } : {}),
    };
    // Sent with no wait since #askInfo returned: on the connection whose
    // nonce the proof signs, if it is still up (see #askInfo).
    if (!await this.#offer(readyMessage)) return false;
    // Counted before the send returns, as in #askInfo.
    this.#registeredOn = this.#connection.connections;
    this.#registration = {
      info,
      lorica,
      features,
      worker,
      publishUrl: `http://${
        urlHost(info.workerAddress)
      }:${options.publishPort}`,
      substituteUrls: [
        ...(info.publishPort === null
          ? []
          : [`http://${urlHost(options.server.hostname)}:${info.publishPort}`]),
        ...options.substituteUrls,
      ],
      logServer: {
        hostname: options.server.hostname,
        port: info.logPort,
        acknowledges: features.has("log-ack"),
      },
      ready: readyMessage,
    };
    const fields = {
      server: `${options.server.hostname}:${options.server.port}`,
      address: info.workerAddress,
      publish: this.#registration.publishUrl,
      lorica,
      holding: holding.length,
    };
    // Such a server may refuse it: said once it is shown accepted, at
    // once by a server that says acceptances ("worker-accepted").
    if (welcome?.features.includes("auth") && features.has("worker-refused")) {
      this.#unconfirmed = { connection: this.#registeredOn, fields };
    } else this.#sayRegistered(fields);
    return true;
  }

  /** Logs the registration made, with `fields`. */
  #sayRegistered(fields: Record<string, unknown>) {
    this.#unconfirmed = undefined;
    this.#logger.info(
      this.#registeredOnce ? "worker registered again" : "worker registered",
      fields,
    );
    this.#registeredOnce = true;
  }

  /**
   * Throws a StoreDirMismatchError, before this session registers, when
   * the server said a store directory that is not this worker's: every
   * build it handed out would be refused, and in the end reported failed,
   * a misconfigured worker turning good builds red.
   */
  checkStoreDir(
    serverStoreDir: string | undefined,
    action = "no builds taken, worker stopping",
  ) {
    if (serverStoreDir === undefined || serverStoreDir === this.#storeDir) {
      return;
    }
    const server = serverAddress(this.#options.server);
    this.#logger.error("store directory mismatch", {
      server,
      server_store_dir: serverStoreDir,
      store_dir: this.#storeDir,
      action,
    });
    throw new StoreDirMismatchError(server, serverStoreDir, this.#storeDir);
  }

  /**
   * Says hello and asks who we are; null when a draining stop ended it.
   * Started over each time the server restarts meanwhile (a probe after a
   * new connection): in a loop, where a call in a call grew the stack with
   * every probe of a flood.
   *
   * The answer is the replies of the connection the questions went on,
   * and only of it: the welcome's nonce is what this worker's proof signs,
   * and a server checks a proof only against the nonces it gave on the
   * connection the proof comes on. The hello and the request go together
   * on one connection, so a server-info never answers a request whose
   * hello went on a connection lost meanwhile (it would come with no
   * welcome, as a Cuirass server's does); and the new connection's probe
   * does not start over a registration that waited for that very
   * connection (two hellos there, two nonces, and the first welcome taken
   * for the answer to the second hello). The proof is made here, and the
   * questions asked again if that connection is no longer the live one
   * once it is made: sent on another, it would be refused.
   */
  async #askInfo(): Promise<
    {
      welcome?: Extract<Message, { type: "lorica-welcome" }>;
      info: Extract<Message, { type: "server-info" }>;
      auth?: WorkerAuthProof;
    } | null
  > {
    asking: for (;;) {
      this.#registeredAt = this.#connection.probes;
      const hello: Message[] = this.#options.extensions === false ? [] : [{
        type: "lorica-hello",
        version: LORICA_PROTOCOL_VERSION,
        features: LORICA_FEATURES,
      }];
      if (!await this.#offer(...hello, { type: "worker-request-info" })) {
        return null;
      }
      // Counted before the send returns (the dealer says it is connected
      // before it hands out the connection): the one they went on.
      const connection = this.#connection.connections;
      let welcome: Extract<Message, { type: "lorica-welcome" }> | undefined;
      for (;;) {
        const event = await this.#connection.next(
          this.#replyTimeoutMs,
          () => this.#mayLeave(),
        );
        if (event === null) {
          if (this.#mayLeave()) return null;
          throw new ServerSilentError(this.#replyTimeoutMs, "server-info");
        }
        if (event.kind === "probe") {
          // The server restarted meanwhile: start over on its new life.
          if (event.connection > connection) continue asking;
          // The server the hello went to is still there, and answers it:
          // that answer is the registration this probe asks for. Starting
          // over at each probe instead said hello once a probe to a server
          // flooding them, and never registered while they kept coming.
          this.#registeredAt = this.#connection.probes;
          continue;
        }
        const reply = event.message;
        if (
          reply.type === "build" ||
          (reply.type === "unreadable-reply" && isRefusable(reply))
        ) this.#keepHandedOut(reply);
        // An answer to questions asked on a connection lost since.
        else if (event.connection !== connection) continue;
        else if (reply.type === "lorica-welcome") welcome = reply;
        else if (reply.type === "server-info") {
          const auth = await this.#proof(welcome);
          if (auth !== undefined && !this.#connection.isLive(connection)) {
            continue asking;
          }
          return { welcome, info: reply, auth };
        }
      }
    }
  }

  /** This worker's proof for `welcome`: with a key, to a Lorica server. */
  async #proof(
    welcome: Extract<Message, { type: "lorica-welcome" }> | undefined,
  ): Promise<WorkerAuthProof | undefined> {
    const key = this.#options.authKey;
    if (welcome === undefined || key === undefined) return undefined;
    return await makeAuthProof(
      key.id,
      key.secret,
      welcome.nonce,
      this.#options.name,
    );
  }

  /**
   * The server refused this session's registration (a Lorica server says
   * so when asked: "worker-refused"). It hands out no work then, and says
   * so with no-build, which alone would look like an empty queue: the key
   * named here is the one to check against the server's --worker-keys.
   */
  #refused(reason: string) {
    const key = this.#options.authKey;
    this.#logger.error("registration refused", {
      server: serverAddress(this.#options.server),
      reason,
      key: key?.id,
      key_file: key?.file,
      action: "no work until a registration is accepted",
    });
  }

  /**
   * Whether a result sent now may reach a server that does not know this
   * session's registration: the server restarted (its probe came), or the
   * connection the registration went on is no longer the live one (the
   * server is away, or back with a probe not read yet). A result sent now
   * would then go on the next connection, before any registration there,
   * where a server requiring worker keys ignores it: the build, requeued
   * at the registration that follows, would be built again.
   */
  stale(): boolean {
    return this.#connection.probes !== this.#registeredAt ||
      !this.#connection.isLive(this.#registeredOn);
  }
}
