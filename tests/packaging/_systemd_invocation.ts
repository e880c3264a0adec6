// Test helper: reads a systemd unit's settings, and works out the command
// line and the variables systemd would start its ExecStart with, as
// systemd.exec(5) and systemd.service(5) describe it, for the few forms the
// units of etc/systemd use.

/** A unit's settings as [key, value] pairs, continuation lines joined. */
export function settings(text: string): [string, string][] {
  return text.replace(/\\\n\s*/g, " ").split("\n")
    .filter((line) => /^[A-Za-z_]+=/.test(line))
    .map((line) => {
      const at = line.indexOf("=");
      return [line.slice(0, at), line.slice(at + 1).trim()];
    });
}

/** What systemd starts for a unit. */
export interface Invocation {
  /** ExecStart's words, variables expanded. */
  argv: string[];
  /** The unit's Environment=, then its EnvironmentFile= over them. */
  env: Map<string, string>;
}

/**
 * The process systemd would start for `unitText`, with `envFileText` as
 * the file its EnvironmentFile= names and `credentialsDirectory` as its
 * `$CREDENTIALS_DIRECTORY` (the `%d` specifier).
 * @throws {RangeError} for a specifier or a quote this helper does not know,
 * rather than read the unit wrong.
 */
export function invocation(
  unitText: string,
  envFileText: string,
  credentialsDirectory: string,
): Invocation {
  const pairs = settings(unitText);
  const env = new Map<string, string>();
  for (const [key, value] of pairs) {
    if (key !== "Environment") continue;
    if (/["'\s]/.test(value)) {
      throw new RangeError(`Cannot read Environment=${value}: quoted or many`);
    }
    const [name, assigned] = splitAssignment(value);
    env.set(name, expandSpecifiers(assigned, credentialsDirectory));
  }
  // Settings from EnvironmentFile= override those of Environment=.
  for (const line of envFileText.split("\n")) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(line)) continue;
    const [name, assigned] = splitAssignment(line.trim());
    env.set(name, assigned.replace(/^"(.*)"$/, "$1"));
  }
  env.set("CREDENTIALS_DIRECTORY", credentialsDirectory);

  const execStart = pairs.filter(([key]) => key === "ExecStart");
  if (execStart.length !== 1) {
    throw new RangeError(`Cannot read ExecStart: ${execStart.length} given`);
  }
  const argv = execStart[0][1].split(/\s+/).flatMap((word) => {
    // A lone $NAME becomes the variable's words (none when it is unset
    // or empty); ${NAME} is replaced in place, as one word.
    const alone = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (alone !== null) {
      return (env.get(alone[1]) ?? "").split(/\s+/).filter(Boolean);
    }
    return [
      word.replace(
        /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g,
        (_, name) => env.get(name) ?? "",
      ),
    ];
  });
  return { argv, env };
}

/**
 * The options the process gets from `LORICA_*` variables, by long name
 * (LORICA_GC_ROOTS gives gc-roots), leaving out `LORICA_LOG` (a log level,
 * not an option) and the `*_OPTIONS` lists the command line takes.
 */
export function optionVariables(env: Map<string, string>): Map<string, string> {
  const options = new Map<string, string>();
  for (const [name, value] of env) {
    if (!name.startsWith("LORICA_") || name === "LORICA_LOG") continue;
    if (name.endsWith("_OPTIONS")) continue;
    options.set(
      name.slice("LORICA_".length).toLowerCase().replaceAll("_", "-"),
      value,
    );
  }
  return options;
}

function splitAssignment(text: string): [string, string] {
  const at = text.indexOf("=");
  return [text.slice(0, at), text.slice(at + 1)];
}

/** `%d` and `%%`, the specifiers the units use; any other one throws. */
function expandSpecifiers(value: string, credentialsDirectory: string) {
  return value.replace(/%(.)/g, (specifier, letter) => {
    if (letter === "d") return credentialsDirectory;
    if (letter === "%") return "%";
    throw new RangeError(`Cannot expand specifier ${specifier} in ${value}`);
  });
}
