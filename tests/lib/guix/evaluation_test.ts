// parseJob(): the evaluator's job lines, and what fails an evaluation.

import assert from "node:assert/strict";
import {
  EvaluationOutputError,
  parseJob,
  selectorToDatum,
} from "../../../lib/guix/evaluation.ts";
import { readSexp } from "../../../lib/sexp/read.ts";
import { writeSexp } from "../../../lib/sexp/write.ts";
import { readSpecifications } from "../../../lib/spec/read_spec.ts";
import { guileAvailable, runGuile } from "../sexp/_guile.ts";

const DRV = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1.drv";
const OUT = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1";

/** A job line whose `field` is `value`, the others plain. */
function jobLine(field: string, value: string): string {
  const fields: Record<string, string> = {
    name: "hello.x86_64-linux",
    derivation: DRV,
    system: "x86_64-linux",
    "nix-name": "hello-1",
    [field]: value,
  };
  const text = Object.entries(fields)
    .map(([name, text]) => `(${name} ${JSON.stringify(text)})`).join(" ");
  return `(job ${text} (outputs ("out" ${JSON.stringify(OUT)})))`;
}

Deno.test("parseJob() reads a job line", () => {
  const job = parseJob(readSexp(jobLine("name", "hello")));
  assert.equal(job.name, "hello");
  assert.deepEqual(job.outputs, [{ name: "out", path: OUT }]);
});

Deno.test("parseJob() refuses a field holding a NUL character, naming it", async (t) => {
  for (const field of ["name", "derivation", "system", "nix-name"]) {
    await t.step(field, () => {
      // A raw NUL in the line, as a broken evaluator would print it.
      const line = jobLine(field, "a\0b").replace("\\u0000", "\0");
      assert.throws(
        () => parseJob(readSexp(line), line),
        (error: unknown) =>
          error instanceof EvaluationOutputError &&
          error.message.endsWith(
            `: field "${field}" holds a NUL character (U+0000): "a\\u0000b"`,
          ) && !error.message.includes("\0"),
      );
    });
  }
});

Deno.test(
  "selectorToDatum() hands a custom build's modules to Guile as module names",
  {
    ignore: !guileAvailable,
  },
  async () => {
    // What Guix's `cuirass-jobs' does with `(custom . MODULES)': each module
    // goes to `resolve-interface', which wants a list of symbols.
    const [spec] = readSpecifications(
      `(list (specification (name "c") (build '(custom (ice-9 match) (srfi srfi-1)))))`,
      "custom.scm",
    );
    const selector = writeSexp(selectorToDatum(spec.build));
    const resolved = await runGuile(
      `(let ((subset (read)))
       (for-each (lambda (module)
                   (write (module-name (resolve-interface module)))
                   (newline))
                 (cdr subset)))`,
      selector,
    );
    assert.equal(resolved, "(ice-9 match)\n(srfi srfi-1)\n");
  },
);
