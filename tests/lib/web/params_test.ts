import assert from "node:assert/strict";
import { HttpError } from "../../../lib/web/http_error.ts";
import {
  parseBuildRef,
  parseId,
  readBuildFilter,
  requireLimit,
} from "../../../lib/web/params.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof HttpError);
    return error.status;
  }
  return 200;
}

Deno.test("requireLimit() accepts 1 to 1000 only", () => {
  const table: [string, number | null][] = [
    ["1", 1],
    ["1000", 1000],
    ["0", null],
    ["1001", null],
    ["01", null],
    ["1e3", null],
    [" 5", null],
    ["5x", null],
  ];
  for (const [text, expected] of table) {
    const params = new URLSearchParams({ nr: text });
    if (expected === null) {
      assert.equal(status(() => requireLimit(params)), 400, text);
    } else assert.equal(requireLimit(params), expected);
  }
});

Deno.test("parseId() rejects anything but a safe positive integer", () => {
  assert.equal(parseId("42", "id"), 42);
  for (const text of ["0", "-1", "1.0", "", "9007199254740993", "0x10"]) {
    assert.equal(status(() => parseId(text, "id")), 400, text);
  }
});

Deno.test("parseId() says when a positive integer is too large to be an ID", () => {
  // It said "is not a positive integer" of a value that is one.
  for (const text of ["9007199254740992", "99999999999999999999"]) {
    assert.throws(
      () => parseId(text, "build ID"),
      new HttpError(
        400,
        `Cannot read build ID: value "${text}" is above the largest ID, 9007199254740991`,
      ),
    );
  }
});

Deno.test("parseBuildRef() takes an id or a derivation basename, nothing else", () => {
  assert.deepEqual(parseBuildRef("12"), { id: 12 });
  assert.deepEqual(parseBuildRef(`${HASH}-hello-2.12.drv`), {
    basename: `${HASH}-hello-2.12.drv`,
  });
  for (
    const text of [
      "../../etc",
      `${HASH}-hello`,
      `${HASH}-../x.drv`,
      `${HASH}-.drv`,
      `../${HASH}-x.drv`,
      `${HASH}-x/y.drv`,
      "0",
    ]
  ) {
    assert.equal(status(() => parseBuildRef(text)), 400, text);
  }
});

Deno.test("readBuildFilter() maps Cuirass names to the store's filter", () => {
  assert.deepEqual(
    readBuildFilter(
      new URLSearchParams(
        "jobset=a&job=b&system=c&evaluation=4&worker=w&derivation=d&other=x",
      ),
    ),
    {
      specification: "a",
      job: "b",
      system: "c",
      evaluation: 4,
      worker: "w",
      derivation: "d",
    },
  );
  assert.equal(
    status(() => readBuildFilter(new URLSearchParams("evaluation=-4"))),
    400,
  );
});
