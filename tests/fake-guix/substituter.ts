// Substitution: fetch signed narinfos and NARs from `guix publish` servers
// and make the items (with their reference closure) valid in this daemon.

import {
  chooseNarUrl,
  type Narinfo,
  parseNarinfo,
} from "../../lib/guix/narinfo.ts";
import { verifyNarinfoText } from "../../lib/guix/narinfo_signature.ts";
import { restoreNar } from "../../lib/guix/nar_restore.ts";
import { parseStorePath } from "../../lib/guix/store_path.ts";
import type { DaemonStore } from "./daemon_store.ts";
import type { PublicKeyList } from "./keys.ts";

/** A narinfo that passed the ACL check, with the cache it came from. */
export interface Offer {
  info: Narinfo;
  cacheUrl: string;
}

/** Options of `Substituter`. */
export interface SubstituterOptions {
  urls: string[];
  acl: PublicKeyList;
  /** Called with `substituting ITEM...` style progress. */
  progress: (item: string) => void;
  /** Called when an offered download fails. */
  warn: (message: string) => void;
}

const MAX_NAR_BYTES = 4 * 1024 * 1024 * 1024;
const NARINFO_TIMEOUT_MS = 20_000;
const NAR_TIMEOUT_MS = 600_000;

/** Looks up and downloads substitutes; lookups are cached per process. */
export class Substituter {
  #offers = new Map<string, Promise<Offer | null>>();
  #done = new Map<string, Promise<boolean>>();

  constructor(
    readonly store: DaemonStore,
    readonly options: SubstituterOptions,
  ) {}

  /** The first authorised narinfo for `path` among the URLs, or null. */
  offer(path: string): Promise<Offer | null> {
    let pending = this.#offers.get(path);
    if (!pending) {
      pending = this.#lookup(path);
      this.#offers.set(path, pending);
    }
    return pending;
  }

  /**
   * Makes `path` valid by substitution, references first; false when no
   * authorised substitute exists or a download fails.
   */
  ensure(path: string): Promise<boolean> {
    let pending = this.#done.get(path);
    if (!pending) {
      pending = this.#ensure(path);
      this.#done.set(path, pending);
    }
    return pending;
  }

  async #ensure(path: string): Promise<boolean> {
    if (await this.store.isValid(path)) return true;
    const offer = await this.offer(path);
    if (!offer) return false;
    const { info } = offer;
    for (const basename of info.references) {
      const reference = `${this.store.storeDir}/${basename}`;
      if (reference === path) continue;
      if (!(await this.ensure(reference))) return false;
    }
    return await this.store.withLock(path, async () => {
      if (await this.store.isValid(path)) return true;
      try {
        await this.#download(offer);
      } catch (error) {
        this.options.warn(
          `download of \`${path}' failed: ${(error as Error).message}`,
        );
        return false;
      }
      const references = info.references.map((b) =>
        `${this.store.storeDir}/${b}`
      );
      const deriver = info.deriver === null
        ? null
        : `${this.store.storeDir}/${info.deriver}`;
      await this.store.register(path, references, deriver);
      return true;
    });
  }

  async #download(offer: Offer): Promise<void> {
    const { info, cacheUrl } = offer;
    const choice = chooseNarUrl(info);
    if (!choice) throw new Error("no supported compression offered");
    this.options.progress(info.storePath);
    const url = new URL(choice.url, cacheUrl + "/");
    const response = await fetch(url, {
      signal: AbortSignal.timeout(NAR_TIMEOUT_MS),
    });
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new Error(`HTTP ${response.status} for '${url}'`);
    }
    const body = choice.compression === "gzip"
      ? response.body.pipeThrough(new DecompressionStream("gzip"))
      : response.body;
    const temp = this.store.tempPath(info.storePath.slice(-20));
    const digest = await restoreNar(body, temp, { maxBytes: MAX_NAR_BYTES });
    if (digest.narHash !== info.narHash || digest.narSize !== info.narSize) {
      await Deno.remove(temp, { recursive: true });
      throw new Error(
        `hash mismatch: expected ${info.narHash}, got ${digest.narHash}`,
      );
    }
    await this.store.install(temp, info.storePath);
  }

  async #lookup(path: string): Promise<Offer | null> {
    let hash: string;
    try {
      hash = parseStorePath(path, this.store.storeDir).hash;
    } catch {
      return null;
    }
    for (const cacheUrl of this.options.urls) {
      const base = cacheUrl.replace(/\/+$/, "");
      try {
        const response = await fetch(`${base}/${hash}.narinfo`, {
          signal: AbortSignal.timeout(NARINFO_TIMEOUT_MS),
        });
        const text = await response.text();
        if (response.status !== 200) continue;
        // Unauthorised narinfos are silently unusable, as in Guix.
        if (!verifyNarinfoText(text, this.options.acl).ok) continue;
        const info = parseNarinfo(text, { storeDir: this.store.storeDir });
        if (info.storePath !== path) continue;
        return { info, cacheUrl: base };
      } catch {
        continue;
      }
    }
    return null;
  }
}
