// Who speaks for which worker: the Lorica handshake and its auth nonce,
// registration (`worker-ready`) and pings, the address recorded for a
// worker, and whether a connection may report on a build in a worker's
// name (the rules are summed up at the top of dispatcher.ts).

import {
  LORICA_FEATURES,
  LORICA_PROTOCOL_VERSION,
  type WorkerInfo,
} from "../protocol/messages.ts";
import type { Logger } from "../log.ts";
import type { Build, Store, Worker } from "../store/types.ts";
import type { Incoming, MessageOf } from "./incoming_message.ts";
import type { TurnWork } from "./turn_work.ts";
import type { WorkerHoldings } from "./worker_holdings.ts";
import { isLocalHolderName } from "./local_holder.ts";
import { ConnectionNonces } from "./connection_nonces.ts";
import {
  sameAddress,
  type WorkerLink,
  type WorkerLinks,
} from "./worker_links.ts";

/** What worker identity needs around it: the dispatcher's parts. */
export interface WorkerIdentityOptions {
  /**
   * Key id -> secret. When set, only workers proving one of these keys
   * (Lorica's `auth` field) get builds or may report; Cuirass workers are
   * refused. When null or absent, any worker is accepted, as in Cuirass.
   */
  workerKeys?: Map<string, string> | null;
  /**
   * The server's store directory, told to the Lorica workers that ask
   * ("store-dir"): one of another store would fail every build.
   */
  storeDir: string;
  /**
   * The server's worker timeout, written with each registration and ping:
   * the row is judged by the timeout of the server that heard the worker.
   */
  workerTimeoutSeconds: number;
  /** The dispatcher's: what a turn logs is written only once it commits. */
  logger: Logger;
  links: WorkerLinks;
  holdings: WorkerHoldings;
  work: TurnWork;
}

/** Registers workers, and tells which connection speaks for which name. */
export class WorkerIdentity {
  readonly #options: WorkerIdentityOptions;
  readonly #logger: Logger;
  readonly #links: WorkerLinks;
  readonly #holdings: WorkerHoldings;
  readonly #work: TurnWork;
  /** Names that proved a key (only used when keys are configured). */
  readonly #authenticated = new Set<string>();
  /** Workers whose last ping said they are short of disk space. */
  readonly #diskLow = new Set<string>();

  constructor(options: WorkerIdentityOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#links = options.links;
    this.#holdings = options.holdings;
    this.#work = options.work;
  }

  /** Whether worker authentication is on. */
  get authRequired(): boolean {
    return (this.#options.workerKeys?.size ?? 0) > 0;
  }

  /** True while worker `name` says it is too short of disk for work. */
  diskLow(name: string): boolean {
    return this.#diskLow.has(name);
  }

  /**
   * Forgets `name`, which no open connection speaks for any more: a new
   * connection proves its key again, and its next ping says its disk.
   */
  drop(name: string): void {
    this.#authenticated.delete(name);
    this.#diskLow.delete(name);
  }

  /** The worker names something is remembered about. */
  names(): Set<string> {
    return new Set([...this.#authenticated, ...this.#diskLow]);
  }

  /** A Lorica peer: its features, and a nonce for its proof. */
  hello(
    { turn, routingId, link }: Incoming,
    message: MessageOf<"lorica-hello">,
  ) {
    link.lorica = true;
    link.features = new Set(
      message.features.filter((f) => LORICA_FEATURES.includes(f)),
    );
    link.nonces ??= new ConnectionNonces();
    const nonce = link.nonces.issue();
    turn.reply({
      routingId,
      message: {
        type: "lorica-welcome",
        version: LORICA_PROTOCOL_VERSION,
        features: [
          ...LORICA_FEATURES,
          ...(this.authRequired ? ["auth"] : []),
        ],
        nonce,
        ...(link.features.has("store-dir")
          ? { storeDir: this.#options.storeDir }
          : {}),
      },
    });
  }

  /** A session registers (again, after a restart of either side). */
  async ready(from: Incoming, message: MessageOf<"worker-ready">) {
    const { turn, store, routingId, sender, link, now } = from;
    const name = message.worker.name;
    if (isLocalHolderName(name)) {
      this.#refuse(
        from,
        message,
        "the name is a local-mode server's (local@HOST)",
      );
      return;
    }
    if (this.authRequired) {
      // Any nonce this connection was given and has not used (see
      // ConnectionNonces): a worker's hellos may have crossed.
      const ok = link.nonces !== undefined &&
        await link.nonces.accept(
          this.#options.workerKeys!,
          name,
          message.auth,
        );
      if (!ok) {
        this.#refuse(
          from,
          message,
          message.auth === undefined
            ? "no authentication proof"
            : `bad proof for key ${JSON.stringify(message.auth.key)}`,
        );
        return;
      }
      this.#authenticated.add(name);
      link.authenticated = name;
      link.refusalWarned = false;
    }
    this.#links.learn(routingId, name, true);
    this.#work.withdraw(turn, name, sender);
    // A fresh `worker-ready` means that session builds nothing but what
    // it says it holds: anything else its name held was lost.
    const holding = link.features.has("holding")
      ? new Set(message.holding ?? [])
      : new Set<string>();
    const requeued = await this.#holdings.registered(
      store,
      name,
      holding,
      now,
    );
    const address = await this.#addressToRecord(from, message.worker, true);
    await store.upsertWorker(this.#row(message.worker, address, now));
    this.#holdings.remember(name, message.worker.systems, now);
    this.#logger.info("worker ready", {
      worker: name,
      machine: message.worker.machine,
      address,
      systems: message.worker.systems.join(","),
      lorica: link.lorica,
      holding: holding.size,
      requeued,
    });
    // Keys make a registration one that may be refused: a worker that
    // asked ("worker-accepted") hears it taken at once, not at the
    // server's next message, which may come only with a build's result-ack.
    if (this.authRequired && link.features.has("worker-accepted")) {
      turn.reply({ routingId, message: { type: "worker-accepted" } });
    }
  }

  /**
   * Refuses a registration for `reason`, and tells the worker when it
   * asked to hear it ("worker-refused"): otherwise only this log says so,
   * and a worker with a key this server does not accept asks for work in
   * vain, none the wiser. A Cuirass worker never asks, and would take any
   * reply but a build or no-build for a fatal error.
   */
  #refuse(
    { turn, routingId, sender, link }: Incoming,
    message: MessageOf<"worker-ready">,
    reason: string,
  ) {
    this.#logger.warn("worker refused", {
      ...sender,
      worker: message.worker.name,
      machine: message.worker.machine,
      reason,
    });
    if (link.features.has("worker-refused")) {
      turn.reply({ routingId, message: { type: "worker-refused", reason } });
    }
  }

  /** Liveness, and (Lorica) whether the worker is short of disk. */
  async ping(from: Incoming, message: MessageOf<"worker-ping">) {
    const { store, sender, now } = from;
    const name = message.worker.name;
    // Refused at its registration (see ready); a ping would renew the
    // row of a local-mode server, dead or alive, or take it over.
    if (isLocalHolderName(name)) {
      this.#logger.debug("ping ignored", {
        ...sender,
        worker: name,
        reason: "the name is a local-mode server's (local@HOST)",
      });
      return;
    }
    // The connection that registered the name, or asks for its work.
    const owner = this.#links.connectionOf(name);
    if (
      this.authRequired &&
      (owner === undefined || !this.#authenticated.has(name))
    ) {
      this.#logger.debug("ping ignored", {
        ...sender,
        worker: name,
        reason: "worker not authenticated on an open connection",
      });
      return;
    }
    // Without keys, a ping of a name no open connection speaks for may
    // register it: a Cuirass worker comes back that way after a server
    // restart.
    if (owner !== undefined && !sameSender(owner, from)) {
      this.#logger.warn("ping ignored", {
        ...sender,
        worker: name,
        reason: "another connection registered this worker",
      });
      return;
    }
    if (message.diskLow !== undefined) {
      if (message.diskLow && !this.#diskLow.has(name)) {
        this.#logger.warn("worker low on disk", { worker: name });
      }
      if (message.diskLow) this.#diskLow.add(name);
      else this.#diskLow.delete(name);
    }
    if (this.authRequired) {
      // Only liveness: a ping cannot register or change a worker.
      await store.touchWorker(
        name,
        now,
        this.#options.workerTimeoutSeconds,
      );
      return;
    }
    const address = await this.#addressToRecord(from, message.worker, false);
    await store.upsertWorker(this.#row(message.worker, address, now));
    this.#holdings.remember(name, message.worker.systems, now);
  }

  /** The row of `worker`, heard at `now`, its address as recorded. */
  #row(worker: WorkerInfo, address: string, now: number): Worker {
    return {
      ...worker,
      address,
      lastSeen: now,
      timeoutSeconds: this.#options.workerTimeoutSeconds,
    };
  }

  /**
   * The address to record for `worker`, which declared its own in a message
   * from `from`: the server fetches results from the recorded address
   * (publish_url.ts) and takes log uploads from it, so it must be one the
   * server saw the worker connect from. The declared address counts only
   * when it is the sender's; otherwise a registration records the sender's
   * address, and a ping keeps the address recorded before.
   */
  async #addressToRecord(
    { store, peerAddress, sender }: Incoming,
    worker: WorkerInfo,
    registration: boolean,
  ): Promise<string> {
    if (sameAddress(worker.address, peerAddress)) return worker.address;
    const recorded = registration
      ? undefined
      : (await store.getWorker(worker.name))?.address;
    const address = recorded ?? peerAddress;
    const fields = {
      ...sender,
      worker: worker.name,
      declared: worker.address,
      recorded: address,
      reason: "not the address the message came from",
    };
    // A Cuirass worker that reconnected from another address pings with
    // its first address every minute: that is no news after the first.
    if (registration) this.#logger.warn("declared address ignored", fields);
    else this.#logger.debug("declared address ignored", fields);
    return address;
  }

  /**
   * Whether this connection may report for worker `name`: it spoke for that
   * name before, or it is new (a worker reconnected after a server restart)
   * and no open connection speaks for the name.
   */
  mayReport(routingId: Uint8Array, name: string): boolean {
    // Never for a local-mode server's builds (see ready).
    if (isLocalHolderName(name)) return false;
    const link = this.#links.get(routingId);
    if (this.authRequired) return link.authenticated === name;
    if (link.name !== undefined) return link.name === name;
    return this.#links.connectionOf(name) === undefined;
  }

  /**
   * The worker that reports on `build` over this connection: the name the
   * connection used before, or, for a connection opened after a server
   * restart, the build's worker when it speaks from that worker's address
   * and has no other known connection (not when authentication is on: a
   * Lorica worker registers again). Whether it holds the build is for the
   * caller to check.
   */
  async senderOf(
    store: Store,
    routingId: Uint8Array,
    peerAddress: string,
    current: () => Promise<Build | null>,
  ): Promise<string | undefined> {
    const link = this.#links.get(routingId);
    if (this.authRequired) return link.authenticated;
    if (link.name !== undefined) return link.name;
    const build = await current();
    if (build?.worker == null) return undefined;
    // The owner still talks on a connection we know: this is someone else.
    if (this.#links.connectionOf(build.worker) !== undefined) return undefined;
    const owner = await store.getWorker(build.worker);
    return owner !== null && sameAddress(owner.address, peerAddress)
      ? build.worker
      : undefined;
  }
}

/**
 * Whether `from` is the connection `owner` or another one at its address:
 * Cuirass and Lorica workers ping on a second connection.
 */
function sameSender(owner: WorkerLink, from: Incoming): boolean {
  if (owner === from.link) return true;
  return owner.peerAddress !== undefined &&
    sameAddress(owner.peerAddress, from.peerAddress);
}
