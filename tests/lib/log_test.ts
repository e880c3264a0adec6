import assert from "node:assert/strict";
import { createLogger, parseLogLevel } from "../../lib/log.ts";

function capture(level: "debug" | "info" | "warn" | "error" = "debug") {
  const lines: string[] = [];
  const logger = createLogger({
    level,
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  return { logger, lines };
}

Deno.test("logger writes the event then key=value fields", () => {
  const { logger, lines } = capture();
  logger.info("build started", { drv: "/gnu/store/x.drv", worker: "ab12" });
  assert.deepEqual(lines, [
    "info build started drv=/gnu/store/x.drv worker=ab12",
  ]);
});

Deno.test("logger quotes values holding spaces, quotes or control characters", () => {
  const { logger, lines } = capture();
  logger.warn("message dropped", {
    reason: 'bad "frame"',
    raw: "a\nb",
    plain: "ok",
  });
  assert.equal(
    lines[0],
    'warn message dropped reason="bad \\"frame\\"" raw="a\\nb" plain=ok',
  );
});

Deno.test("logger prints an error's message and skips undefined fields", () => {
  const { logger, lines } = capture();
  logger.error("fetch failed", {
    error: new Error("no route"),
    url: undefined,
  });
  assert.equal(lines[0], 'error fetch failed error="no route"');
});

Deno.test("logger drops lines below its level", () => {
  const { logger, lines } = capture("warn");
  logger.debug("noise");
  logger.info("noise");
  logger.warn("kept");
  assert.deepEqual(lines, ["warn kept"]);
});

Deno.test("logger.with() adds bound fields to every line", () => {
  const { logger, lines } = capture();
  logger.with({ part: "dispatch" }).info("worker ready", { worker: "w1" });
  assert.equal(lines[0], "info worker ready part=dispatch worker=w1");
});

Deno.test("parseLogLevel() falls back to info for unknown names", () => {
  assert.equal(parseLogLevel("debug"), "debug");
  assert.equal(parseLogLevel("loud"), "info");
  assert.equal(parseLogLevel(undefined), "info");
});
