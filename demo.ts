// `deno task demo`: a server and two workers build the demo specification.

import { parseArgs } from "node:util";
import { fileURLToPath as fromFileUrl } from "node:url";
import { startFarm } from "./demo/farm.ts";
import { parsePort, UsageError } from "./lib/cli/args.ts";
import { OFFLINE_RUN_FLAGS } from "./scripts/vendor.ts";
import {
  compareOutcome,
  progressLine,
  readProgress,
  summaryTable,
} from "./demo/report.ts";

const HERE = fromFileUrl(new URL(".", import.meta.url)).replace(/\/$/, "");

const USAGE =
  `Usage: deno task demo [--until-done] [--web-port=PORT] [--keep] [--vendored]
Runs a Lorica server and two workers (x86_64-linux, i686-linux) on the demo
specification, with a fake guix standing in for Guix. Pages are served on
http://127.0.0.1:8080 until you press Ctrl-C.

  --until-done     exit after the summary: 0 when the outcome matches the scenario
  --web-port=PORT  web port (default 8080; 0 picks a free one)
  --keep           keep the farm's directory (stores, logs, database)
  --vendored       run the programs from this tree's node_modules/ and vendor/
                   only (${OFFLINE_RUN_FLAGS.join(" ")}), as after
                   scripts/vendor.ts on a machine without registry access`;

// deno-lint-ignore no-console
const say = console.log;

async function main(): Promise<number> {
  const { values } = parseArgs({
    // `deno task demo -- --until-done` passes the "--" along.
    args: Deno.args.filter((arg) => arg !== "--"),
    options: {
      "until-done": { type: "boolean", default: false },
      "web-port": { type: "string", default: "8080" },
      keep: { type: "boolean", default: false },
      vendored: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }
  const expected: Record<string, string> = JSON.parse(
    await Deno.readTextFile(`${HERE}/demo/expected.json`),
  );
  const total = Object.keys(expected).length;
  say(`Starting a server and two workers; ${total} jobs expected.`);
  // Listening before the farm starts: an interrupt meanwhile is served once
  // it has started, by stopping it and removing its directory as always.
  // SIGHUP is the terminal closing: the same clean stop.
  const interrupted = Promise.withResolvers<void>();
  let stopAsked = false;
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(signal, () => {
      stopAsked = true;
      interrupted.resolve();
    });
  }
  const starting = startFarm({
    specFile: `${HERE}/demo/demo-spec.scm`,
    scenarioFile: `${HERE}/demo/scenario.json`,
    workers: [
      { systems: ["x86_64-linux"], sessions: 2 },
      { systems: ["i686-linux"], sessions: 2 },
    ],
    webPort: parsePort("--web-port", values["web-port"]!),
    requestPeriod: 1,
    // The server and workers are separate `deno run`s: without these flags
    // they would look for the npm packages in DENO_DIR and the registry.
    denoFlags: values.vendored ? OFFLINE_RUN_FLAGS : undefined,
  });
  // Ctrl-C reaches the whole process group: the guix commands of the
  // farm's first steps die of it, and the start fails. The farm has
  // removed what it made; the interrupt is no error to report.
  const farm = await starting.catch((error) => {
    if (stopAsked) return null;
    throw error;
  });
  if (farm === null) return 130;
  say(`Web interface: ${farm.webUrl}/  (process logs in ${farm.root})`);

  const started = Date.now();
  let status = 0;
  try {
    let lastLine = "";
    let finished = false;
    while (!finished) {
      const tick = await Promise.race([
        new Promise((resolve) => setTimeout(() => resolve("tick"), 1000)),
        interrupted.promise.then(() => "stop"),
      ]);
      if (tick === "stop") return 130;
      const elapsed = Math.round((Date.now() - started) / 1000);
      const progress = await readProgress(farm.webUrl);
      const line = progressLine(progress, elapsed);
      if (line.slice(9) !== lastLine.slice(9)) say(line);
      lastLine = line;
      finished = progress.pending.length === 0 &&
        progress.finished.length >= total;
      if (elapsed > 600) {
        say("The demo did not finish within 10 minutes.");
        status = 1;
        break;
      }
    }
    const { finished: builds } = await readProgress(farm.webUrl);
    say("\n" + summaryTable(builds) + "\n");
    const problems = compareOutcome(builds, expected);
    if (problems.length === 0) {
      say(`Outcome matches the scenario: ${builds.length} builds.`);
    } else {
      status = 1;
      say(`Outcome differs from the scenario:\n  ${problems.join("\n  ")}`);
    }
    if (values["until-done"]) return status;
    say(`\nStill serving ${farm.webUrl}/ — press Ctrl-C to stop.`);
    await interrupted.promise;
    return status;
  } finally {
    say("Stopping the farm...");
    await farm.stop();
    if (!values.keep) {
      await Deno.remove(farm.root, { recursive: true }).catch(() => {});
    }
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    const usage = error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    // deno-lint-ignore no-console
    console.error(`demo: error: ${(error as Error).message}`);
    if (usage) {
      // deno-lint-ignore no-console
      console.error("Try: deno task demo --help");
    }
    Deno.exit(usage ? 2 : 1);
  }
}
