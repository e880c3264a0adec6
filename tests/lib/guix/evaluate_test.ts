// lib/guix/evaluate.scm needs a real Guix to do its job; here it runs under
// plain Guile against small stand-in modules for the Guix API it calls, so
// its argument handling and output format are checked. Skipped without guile.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { readAllSexps } from "../../../lib/sexp/read.ts";
import { isSym } from "../../../lib/sexp/datum.ts";

const SCRIPT = fileURLToPath(
  new URL("../../../lib/guix/evaluate.scm", import.meta.url),
);

const guileAvailable = await new Deno.Command("guile", { args: ["--version"] })
  .output().then((o) => o.success, () => false);

// Stand-ins for the Guix modules the evaluator uses.
const STUBS: Record<string, string> = {
  "gnu/ci.scm": `
(define-module (gnu ci)
  #:use-module (ice-9 match)
  #:export (cuirass-jobs))
(define (cuirass-jobs store arguments)
  (display "noise that must not reach standard output\\n")
  (format (current-error-port) "ARGS ~s~%" arguments)
  (let ((system (car (assq-ref arguments 'systems))))
    (match (assq-ref arguments 'subset)
      ('fail (error "no such package" "frobnicate"))
      (_
       (list
        \`((#:job-name . ,(string-append "hello." system))
          (#:derivation . "/gnu/store/aaaa-hello-2.12.drv")
          (#:inputs . ("/gnu/store/wrong.drv"))
          (#:outputs ("out" . "/gnu/store/bbbb-hello-2.12"))
          (#:nix-name . "hello-2.12")
          (#:system . ,system)
          (#:max-silent-time . 60)
          (#:timeout . 120))
        \`((#:job-name . ,(string->symbol (string-append "guix." system)))
          (#:derivation . "/gnu/store/cccc-guix-1.4.drv")
          (#:outputs ("out" . "/gnu/store/dddd-guix-1.4")
                     ("doc" . "/gnu/store/eeee-guix-1.4-doc"))
          (#:nix-name . "guix-1.4")
          (#:system . ,system)))))))
`,
  "guix/store.scm": `
(define-module (guix store) #:export-syntax (with-store))
(define-syntax-rule (with-store store body ...)
  (let ((store 'stand-in-store)) body ...))
`,
  "guix/derivations.scm": `
(define-module (guix derivations)
  #:export (read-derivation-from-file derivation-inputs derivation-input-path))
(define table
  '(("/gnu/store/aaaa-hello-2.12.drv"
     "/gnu/store/ffff-gcc-11.drv" "/gnu/store/gggg-glibc-2.35.drv")
    ("/gnu/store/cccc-guix-1.4.drv")))
(define (read-derivation-from-file file)
  (or (assoc file table) (error "no such derivation" file)))
(define derivation-inputs cdr)
(define (derivation-input-path input) input)
`,
  "guix/channels.scm": `
(define-module (guix channels)
  #:use-module (srfi srfi-9)
  #:export (make-channel channel-name channel-url channel-branch
            channel-commit %default-channels))
(define-record-type <channel>
  (make-channel name url branch commit)
  channel?
  (name channel-name) (url channel-url) (branch channel-branch)
  (commit channel-commit))
(define %default-channels
  (list (make-channel 'guix "file:///nowhere/guix.git" "master" #f)))
`,
  "guix/describe.scm": `
(define-module (guix describe)
  #:use-module (guix channels)
  #:export (current-channels))
(define (current-channels)
  (list (make-channel 'guix "file:///nowhere/guix.git" "master" "0123abcd")))
`,
  "guix/git.scm": `
(define-module (guix git) #:export (update-cached-checkout))
(define* (update-cached-checkout url #:key ref)
  (values (string-append "/cache/checkouts/" (cdr ref)) (cdr ref) 'ancestor))
`,
};

async function withStubs<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-guix-stubs-" });
  try {
    for (const [path, text] of Object.entries(STUBS)) {
      await Deno.mkdir(`${dir}/${path.replace(/\/[^/]+$/, "")}`, {
        recursive: true,
      });
      await Deno.writeTextFile(`${dir}/${path}`, text);
    }
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function evaluate(args: string[]) {
  return await withStubs(async (dir) => {
    const { code, stdout, stderr } = await new Deno.Command("guile", {
      args: ["--no-auto-compile", "-L", dir, SCRIPT, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code,
      stdout: decoder.decode(stdout),
      stderr: decoder.decode(stderr),
    };
  });
}

Deno.test({
  name: "evaluate.scm is readable by Guile's reader (needs guile)",
  ignore: !guileAvailable,
  async fn() {
    const expr = `(call-with-input-file ${
      JSON.stringify(SCRIPT)
    } (lambda (p) (let loop ((d (read p)) (n 0)) (if (eof-object? d) (begin (display n) (newline)) (loop (read p) (+ n 1))))))`;
    const { code, stdout } = await new Deno.Command("guile", {
      args: ["--no-auto-compile", "-c", expr],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0);
    assert.ok(Number(new TextDecoder().decode(stdout)) > 5);
  },
});

Deno.test({
  name:
    "evaluate.scm prints one contract line per job, then (done N) (needs guile)",
  ignore: !guileAvailable,
  async fn() {
    const { code, stdout, stderr } = await evaluate(["all", "x86_64-linux"]);
    assert.equal(code, 0, stderr);
    assert.equal(
      stdout,
      [
        '(job (name "hello.x86_64-linux") (derivation "/gnu/store/aaaa-hello-2.12.drv") (system "x86_64-linux") (nix-name "hello-2.12") (outputs ("out" "/gnu/store/bbbb-hello-2.12")) (inputs "/gnu/store/ffff-gcc-11.drv" "/gnu/store/gggg-glibc-2.35.drv") (timeout 120) (max-silent-time 60))',
        '(job (name "guix.x86_64-linux") (derivation "/gnu/store/cccc-guix-1.4.drv") (system "x86_64-linux") (nix-name "guix-1.4") (outputs ("out" "/gnu/store/dddd-guix-1.4") ("doc" "/gnu/store/eeee-guix-1.4-doc")) (inputs) (timeout 72000) (max-silent-time 3600))',
        "(done 2)",
        "",
      ].join("\n"),
    );
    const data = readAllSexps(stdout);
    assert.equal(data.length, 3);
    assert.ok(
      data.slice(0, 2).every((d) => Array.isArray(d) && isSym(d[0], "job")),
    );

    // cuirass-jobs got the Cuirass-style arguments, channels included.
    assert.match(stderr, /noise that must not reach standard output/);
    assert.match(
      stderr,
      /ARGS \(\(subset \. all\) \(systems "x86_64-linux"\) \(channels \(repository \(version 0\) \(url "file:\/\/\/nowhere\/guix\.git"\) \(branch "master"\) \(commit "0123abcd"\) \(name guix\)\)\)\)/,
    );
  },
});

Deno.test({
  name:
    "evaluate.scm reads the build selector as a datum and uses local checkouts when the subset needs sources (needs guile)",
  ignore: !guileAvailable,
  async fn() {
    const packages = await evaluate([
      '(packages "hello" "guix")',
      "i686-linux",
    ]);
    assert.equal(packages.code, 0, packages.stderr);
    assert.match(packages.stderr, /\(subset packages "hello" "guix"\)/);
    assert.match(packages.stdout, /\(system "i686-linux"\)/);

    const guix = await evaluate(["guix", "i686-linux"]);
    assert.equal(guix.code, 0, guix.stderr);
    assert.match(guix.stderr, /\(url "\/cache\/checkouts\/0123abcd"\)/);
  },
});

Deno.test({
  name:
    "evaluate.scm exits 1 with the error on stderr and no done line (needs guile)",
  ignore: !guileAvailable,
  async fn() {
    for (
      const args of [["fail", "x86_64-linux"], ["all"], ["", "x86_64-linux"]]
    ) {
      const { code, stdout, stderr } = await evaluate(args);
      assert.equal(code, 1, args.join(" "));
      assert.doesNotMatch(stdout, /\(done/);
      assert.match(stderr, /evaluat/);
    }
  },
});
