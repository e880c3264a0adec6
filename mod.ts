// Lorica's library surface, for embedding its codecs and protocol elsewhere.

export * from "./lib/sexp/datum.ts";
export { readAllSexps, readSexp, SexpSyntaxError } from "./lib/sexp/read.ts";
export { writeSexp } from "./lib/sexp/write.ts";
export * from "./lib/protocol/messages.ts";
export * from "./lib/guix/store_path.ts";
export * from "./lib/guix/base32.ts";
export * from "./lib/guix/drv.ts";
export * from "./lib/guix/narinfo.ts";
export * from "./lib/guix/nar_format.ts";
export * from "./lib/guix/nar_dump.ts";
export * from "./lib/guix/nar_restore.ts";
export { RouterSocket } from "./lib/zmtp/router.ts";
export { DealerSocket } from "./lib/zmtp/dealer.ts";
