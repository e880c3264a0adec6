// lib/guix/build_driver.scm run by a real Guile, with stand-in (guix store)
// and (guix derivations) modules that replay a daemon stream the way
// (guix store) hands it over: already decoded, invalid bytes replaced.

import assert from "node:assert/strict";
import {
  type BuildEvent,
  BuildEventParser,
  defaultBuildDriverPath,
} from "../../../lib/guix/build_events.ts";
import { joinBytes } from "./_support.ts";

const guile = await new Deno.Command("guile", { args: ["--version"] })
  .output().then((r) => r.success, () => false);

const STORE_STUB = `(define-module (guix store)
  #:use-module (srfi srfi-34)
  #:use-module (srfi srfi-35)
  #:use-module (rnrs io ports)
  #:export (with-store set-build-options build-things
            current-build-output-port valid-path? log-file
            store-protocol-error? store-protocol-error-message))
(define current-build-output-port (make-parameter (current-error-port)))
(define-syntax-rule (with-store store body ...) (let ((store 'stub)) body ...))
(define (set-build-options store . args)
  (format (current-error-port) "options: ~s~%" args))
(define (valid-path? store path)
  (not (or (string-contains path "missing")
           (string-suffix? "failed.drv.out" path)
           (string-suffix? "none.drv.out" path))))
(define (log-file store drv) (and (string-contains drv "failed") "/var/log/x"))
(define-condition-type &store-protocol-error &error store-protocol-error?
  (message store-protocol-error-message))
(define (build-things store things)
  (format (current-error-port) "building: ~s~%" things)
  (let* ((port (open-file-input-port (getenv "STUB_STREAM")))
         (text (begin (set-port-encoding! port "UTF-8")
                      (set-port-conversion-strategy! port 'substitute)
                      (get-string-all port))))
    ;; Written in small uneven pieces, as ports chunk it.
    (let loop ((i 0) (n 1))
      (when (< i (string-length text))
        (let ((j (min (string-length text) (+ i n))))
          (display (substring text i j) (current-build-output-port))
          (loop j (+ 1 (modulo (* n 7) 13)))))))
  (when (getenv "STUB_FAIL")
    (raise (condition (&store-protocol-error (message "build of x failed"))))))
`;

const DERIVATIONS_STUB = `(define-module (guix derivations)
  #:export (read-derivation-from-file derivation-outputs derivation-output-path))
(define (read-derivation-from-file file) file)
(define (derivation-outputs drv)
  (list (cons "out" (string-append drv ".out"))))
(define (derivation-output-path output) output)
`;

const DRV = "/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv";

async function runDriver(
  args: string[],
  stream: Uint8Array,
  env: Record<string, string> = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "lorica-driver-" });
  try {
    await Deno.mkdir(`${dir}/guix`);
    await Deno.writeTextFile(`${dir}/guix/store.scm`, STORE_STUB);
    await Deno.writeTextFile(`${dir}/guix/derivations.scm`, DERIVATIONS_STUB);
    await Deno.writeFile(`${dir}/stream`, stream);
    const output = await new Deno.Command("guile", {
      args: [
        "--no-auto-compile",
        "-L",
        dir,
        defaultBuildDriverPath(),
        ...args,
      ],
      env: { STUB_STREAM: `${dir}/stream`, ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: output.code,
      stdout: output.stdout,
      stderr: new TextDecoder().decode(output.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function frame(pid: number, bytes: Uint8Array): Uint8Array {
  return joinBytes(`@ build-log ${pid} ${bytes.length}\n`, bytes);
}

function parse(bytes: Uint8Array): BuildEvent[] {
  const parser = new BuildEventParser();
  return [...parser.push(bytes), ...parser.end()];
}

Deno.test({
  name: "build_driver.scm re-frames the decoded stream exactly (needs guile)",
  ignore: !guile,
  async fn() {
    const log = joinBytes(
      "héllo \u2713\n",
      new Uint8Array([0xff, 0xfe]),
      `\n@ build-succeeded ${DRV} -\n`,
    );
    const stream = joinBytes(
      `@ build-started ${DRV} - x86_64-linux /var/log/guix/drvs/aa//aa.drv.gz 42\n`,
      frame(42, log),
      `@ build-failed ${DRV} - 1 builder for \`${DRV}' failed with exit code 1\n`,
    );
    const run = await runDriver(
      ["--timeout=60", "--max-silent-time=5", "--max-jobs=2", DRV],
      stream,
      { STUB_FAIL: "1" },
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /#:keep-going\? #t/);
    assert.match(run.stderr, /#:multiplexed-build-output\? #t/);
    assert.match(run.stderr, /#:print-build-trace #t/);
    assert.match(run.stderr, /#:timeout 60/);
    assert.match(run.stderr, /#:max-silent-time 5/);
    assert.match(run.stderr, /#:max-build-jobs 2/);
    assert.match(run.stderr, /build of x failed/);
    const events = parse(run.stdout);
    const types = events.map((e) => e.type).filter((t) => t !== "build-log");
    assert.deepEqual(types, ["build-started", "build-failed"]);
    const text = new TextDecoder().decode(joinBytes(
      ...events.filter((e) => e.type === "build-log")
        .map((e) => (e as { data: Uint8Array }).data),
    ));
    assert.equal(
      text,
      `héllo \u2713\n\ufffd\ufffd\n@ build-succeeded ${DRV} -\n`,
    );
  },
});

Deno.test({
  name:
    "build_driver.scm skips missing derivations and answers queries (needs guile)",
  ignore: !guile,
  async fn() {
    const missing = DRV.replace("-x.drv", "-missing.drv");
    const failed = DRV.replace("-x.drv", "-failed.drv");
    const built = await runDriver([DRV, missing], new Uint8Array());
    assert.equal(built.code, 0, built.stderr);
    assert.match(built.stderr, new RegExp(`missing from store: ${missing}`));
    assert.match(built.stderr, new RegExp(`building: \\("${DRV}"\\)`));

    const none = DRV.replace("-x.drv", "-none.drv");
    const query = await runDriver(
      ["--query", DRV, missing, failed, none],
      new Uint8Array(),
    );
    assert.equal(query.code, 0, query.stderr);
    assert.equal(
      new TextDecoder().decode(query.stdout),
      `(state "${DRV}" valid)\n(state "${missing}" missing)\n(state "${failed}" failed)\n(state "${none}" none)\n`,
    );

    const bad = await runDriver(["--timeout=x", DRV], new Uint8Array());
    assert.equal(bad.code, 2);
  },
});
