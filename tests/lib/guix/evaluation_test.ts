// parseJob(): the evaluator's job lines, and what fails an evaluation.

import assert from "node:assert/strict";
import {
  EvaluationOutputError,
  parseJob,
} from "../../../lib/guix/evaluation.ts";
import { readSexp } from "../../../lib/sexp/read.ts";

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
