// `guix publish`: serve this daemon's valid items as signed narinfos and
// NARs over HTTP, with Guix's routes, headers and log lines.

import { dumpNar } from "../../lib/guix/nar_dump.ts";
import {
  formatNarinfo,
  type Narinfo,
  narinfoSignedPart,
  type NarinfoUrl,
} from "../../lib/guix/narinfo.ts";
import { signNarinfoPrefix } from "../../lib/guix/narinfo_signature.ts";
import type { SecretKey } from "../../lib/guix/signing_key.ts";
import { parseStoreBasename } from "../../lib/guix/store_path.ts";
import { lastValue, type OptionSpec, parseOptions } from "./cli_options.ts";
import { DaemonStore, exists, type PathInfo } from "./daemon_store.ts";
import { configDir, loadSecretKey } from "./keys.ts";
import {
  LeaveError,
  warningLine,
  writeStderr,
  writeStdout,
} from "./messages.ts";

const OPTIONS: OptionSpec[] = [
  { long: "port", short: "p", arg: "required" },
  { long: "listen", arg: "required" },
  { long: "public-key", arg: "required" },
  { long: "private-key", arg: "required" },
  { long: "compression", short: "C", arg: "optional" },
  { long: "ttl", arg: "required" },
  { long: "negative-ttl", arg: "required" },
  { long: "user", short: "u", arg: "required" },
  { long: "cache", short: "c", arg: "required" },
  { long: "workers", arg: "required" },
  { long: "nar-path", arg: "required" },
  { long: "advertise", short: "a", arg: "none" },
];
const NAR_TYPE = "application/x-nix-archive; charset=ISO-8859-1";
const COMPRESSED_EXTENSIONS = /\.(gz|bz2|xz|lz|lzma|tgz|tbz2|tzst|zip|zst)$/;

/** A compression method of `-C`; level 0 means none. */
interface Compression {
  method: "none" | "gzip";
  level: number;
}

/** Runs `guix publish ARGS` until SIGTERM or SIGINT; returns the status. */
export async function publishCommand(args: string[]): Promise<number> {
  const parsed = parseOptions(args, OPTIONS);
  if (parsed.operands.length > 0) {
    throw new LeaveError(`${parsed.operands[0]}: extraneous argument`);
  }
  const store = DaemonStore.fromEnv();
  const port = Number(lastValue(parsed, "port") ?? "8080");
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new LeaveError(`${lastValue(parsed, "port")}: invalid port`);
  }
  const host = lastValue(parsed, "listen") ?? "0.0.0.0";
  const dir = configDir();
  const secretKey = await loadSecretKey(
    lastValue(parsed, "private-key") ?? `${dir}/signing-key.sec`,
  ).catch((error) => {
    throw new LeaveError(`cannot read private key: ${error.message}`);
  });
  const compressions = parseCompressions(parsed.values.get("compression"));
  const ttl = parseDuration(lastValue(parsed, "ttl"));
  const negativeTtl = parseDuration(lastValue(parsed, "negative-ttl"));
  const narPath = (lastValue(parsed, "nar-path") ?? "nar").split("/")
    .filter((part) => part !== "").join("/");

  const controller = new AbortController();
  const handler = makeHandler({
    store,
    secretKey,
    compressions,
    ttl,
    negativeTtl,
    narPath,
    hostname: Deno.hostname(),
    publicKeyFile: `${dir}/signing-key.pub`,
  });
  const server = Deno.serve({
    hostname: host,
    port,
    signal: controller.signal,
    onListen: ({ port: actual }) => {
      writeStderr(
        `guix publish: publishing ${store.storeDir} on ${host}, port ${actual}\n`,
      );
      for (const c of compressions) {
        writeStderr(
          `guix publish: using '${c.method}' compression method, level ${c.level}\n`,
        );
      }
    },
  }, handler);
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
  return 0;
}

interface HandlerConfig {
  store: DaemonStore;
  secretKey: SecretKey;
  compressions: Compression[];
  ttl: number | null;
  negativeTtl: number | null;
  narPath: string;
  hostname: string;
  publicKeyFile: string;
}

/** The request handler: one function per route, 404 for everything else. */
function makeHandler(config: HandlerConfig) {
  const { store } = config;
  return async function handlePublishRequest(
    request: Request,
  ): Promise<Response> {
    const url = new URL(request.url);
    let path: string;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      path = url.pathname;
    }
    try {
      writeStdout(`${request.method} ${url.pathname}\n`);
    } catch {
      // A closed stdout must not take the server down.
    }
    if (request.method !== "GET") return notFound(url.pathname, config);
    try {
      const response = await route(path, config);
      if (response) return response;
    } catch (error) {
      writeStderr(`guix publish: error: ${(error as Error).message}\n`);
      return new Response("Internal server error", { status: 500 });
    }
    return notFound(url.pathname, config);
  };

  async function route(
    path: string,
    config: HandlerConfig,
  ): Promise<Response | null> {
    if (path === "/nix-cache-info") {
      return text(
        `StoreDir: ${store.storeDir}\nWantMassQuery: 0\nPriority: 100\n`,
        "text/plain",
      );
    }
    if (path === "/" || path === "/index.html") {
      return text(
        `<!DOCTYPE html>\n<html><head><title>GNU Guix Substitute Server</title></head><body><h1>GNU Guix Substitute Server</h1><p>Hi, <a href="/signing-key.pub">signing-key.pub</a> is the public key of this server.</p></body></html>\n`,
        "text/html",
      );
    }
    if (path === "/signing-key.pub") {
      if (!(await exists(config.publicKeyFile))) return null;
      return text(
        await Deno.readTextFile(config.publicKeyFile),
        "text/plain;charset=utf-8",
      );
    }
    const narinfo = path.match(/^\/([0-9a-z]{32})\.narinfo$/);
    if (narinfo) {
      const info = await store.queryByHashPart(narinfo[1]);
      return info ? narinfoResponse(info, config) : null;
    }
    if (path.startsWith(`/${config.narPath}/`)) {
      const rest = path.slice(config.narPath.length + 2).split("/");
      if (rest.length === 1) return await narResponse(rest[0], "none", store);
      if (rest.length === 2 && rest[0] === "gzip") {
        return await narResponse(rest[1], "gzip", store);
      }
      return null;
    }
    const log = path.match(/^\/log\/([^/]+)$/);
    if (log) return await logResponse(log[1], store);
    return null;
  }
}

function narinfoResponse(info: PathInfo, config: HandlerConfig): Response {
  const { store } = config;
  const basename = info.path.slice(store.storeDir.length + 1);
  const encoded = encodeURIComponent(basename);
  const methods = COMPRESSED_EXTENSIONS.test(basename)
    ? [{ method: "none", level: 0 } as Compression]
    : config.compressions;
  const urls: NarinfoUrl[] = methods.map((c) =>
    c.method === "none"
      ? {
        url: `${config.narPath}/${encoded}`,
        compression: "none",
        fileSize: info.narSize,
        fileHash: null,
      }
      : {
        url: `${config.narPath}/${c.method}/${encoded}`,
        compression: c.method,
        fileSize: null,
        fileHash: null,
      }
  );
  const deriver = info.deriver && !basename.endsWith(".drv")
    ? info.deriver.slice(store.storeDir.length + 1)
    : null;
  const narinfo: Narinfo = {
    storePath: info.path,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references
      .map((reference) => reference.slice(store.storeDir.length + 1)).sort(),
    deriver,
    system: null,
    signature: null,
    urls,
    extra: {},
  };
  narinfo.signature = signNarinfoPrefix(
    narinfoSignedPart(narinfo),
    config.secretKey,
    config.hostname,
  );
  const headers: Record<string, string> = {
    "Content-Type": "application/x-nix-narinfo",
  };
  if (config.ttl !== null) headers["Cache-Control"] = `max-age=${config.ttl}`;
  return new Response(formatNarinfo(narinfo), { headers });
}

async function narResponse(
  basename: string,
  compression: "none" | "gzip",
  store: DaemonStore,
): Promise<Response | null> {
  try {
    parseStoreBasename(basename);
  } catch {
    return null;
  }
  const path = `${store.storeDir}/${basename}`;
  if (!(await store.isValid(path))) return null;
  const nar = dumpNar(path);
  const body = compression === "gzip"
    ? nar.pipeThrough(
      new CompressionStream("gzip") as unknown as TransformStream<
        Uint8Array,
        Uint8Array
      >,
    )
    : nar;
  return new Response(body, { headers: { "Content-Type": NAR_TYPE } });
}

async function logResponse(
  basename: string,
  store: DaemonStore,
): Promise<Response | null> {
  let drv = basename.endsWith(".drv") ? `${store.storeDir}/${basename}` : null;
  if (!drv) {
    const info = await store.queryPathInfo(`${store.storeDir}/${basename}`);
    drv = info?.deriver ?? null;
  }
  if (!drv) return null;
  const file = store.logFile(drv);
  if (!(await exists(file))) return null;
  return new Response(await Deno.readFile(file), {
    headers: {
      "Content-Type": "text/plain; charset=utf-8",
      "Content-Encoding": "gzip",
    },
  });
}

function notFound(path: string, config: HandlerConfig): Response {
  const headers: Record<string, string> = { "Content-Type": "text/plain" };
  if (config.negativeTtl !== null) {
    headers["Cache-Control"] = `max-age=${config.negativeTtl}`;
  }
  return new Response(`Resource not found: ${path}`, { status: 404, headers });
}

function text(body: string, type: string): Response {
  return new Response(body, { headers: { "Content-Type": type } });
}

/** `-C` values: a bare level means gzip; level 0 means no compression. */
function parseCompressions(values: string[] | undefined): Compression[] {
  if (!values || values.length === 0) return [{ method: "gzip", level: 3 }];
  const result: Compression[] = [];
  for (const value of values) {
    const [method, levelText] = value === ""
      ? ["gzip", "3"]
      : /^\d+$/.test(value)
      ? ["gzip", value]
      : value.split(":");
    const level = Number(levelText ?? "3");
    if (method !== "gzip") {
      // This stand-in only speaks gzip; lzip and zstd are skipped.
      writeStderr(
        warningLine("publish", `${method}: unsupported compression type`),
      );
      continue;
    }
    result.push(level === 0 ? { method: "none", level: 0 } : { method, level });
  }
  return result.length > 0 ? result : [{ method: "gzip", level: 3 }];
}

/** Guix durations: digits then s, h, d, w or m (30 days). */
function parseDuration(value: string | undefined): number | null {
  if (value === undefined) return null;
  const match = value.match(/^(\d+)([shdwm])$/);
  if (!match) throw new LeaveError(`${value}: invalid duration`);
  const unit = { s: 1, h: 3600, d: 86400, w: 604800, m: 2592000 }[
    match[2] as "s" | "h" | "d" | "w" | "m"
  ];
  return Number(match[1]) * unit;
}
