// Entry point of the test stand-in for `guix`: dispatches subcommands.

import { archiveCommand } from "./archive.ts";
import { buildCommand } from "./build_command.ts";
import { gcCommand } from "./gc.ts";
import { errorLine, LeaveError, writeStderr, writeStdout } from "./messages.ts";
import { publishCommand } from "./publish.ts";
import { replCommand, timeMachineCommand } from "./time_machine.ts";

const VERSION = "1.4.0-37.0a1b2c3";

/** Runs one `guix` command line; returns the exit status. */
export async function runGuix(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === "--help" || command === "-h") {
    writeStdout("Usage: guix OPTION | COMMAND ARGS...\n");
    return command === undefined ? 1 : 0;
  }
  if (command === "--version" || command === "-V") {
    writeStdout(
      `guix (GNU Guix) ${VERSION}\nCopyright (C) 2024 the Guix authors\nLicense GPLv3+: GNU GPL version 3 or later <http://gnu.org/licenses/gpl.html>\nThis is free software: you are free to change and redistribute it.\nThere is NO WARRANTY, to the extent permitted by law.\n`,
    );
    return 0;
  }
  const commands: Record<string, (args: string[]) => Promise<number>> = {
    build: buildCommand,
    publish: publishCommand,
    archive: archiveCommand,
    gc: gcCommand,
    repl: replCommand,
    "time-machine": (args) => timeMachineCommand(args, runGuix),
  };
  const handler = commands[command];
  if (!handler) {
    writeStderr(`guix: ${command}: command not found\n`);
    writeStderr("hint: Run `guix help' to list available commands.\n");
    return 1;
  }
  try {
    return await handler(args);
  } catch (error) {
    if (error instanceof LeaveError) {
      writeStderr(errorLine(command, error.message));
      return error.exitCode;
    }
    writeStderr(errorLine(command, String((error as Error)?.message ?? error)));
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await runGuix(Deno.args));
}
