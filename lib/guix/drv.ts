// Derivation (.drv) files: the ATerm syntax, hash modulo and output paths.

import {
  makeStorePath,
  makeTextStorePath,
  sha256,
  toHex,
} from "./store_hash.ts";

/** One output of a derivation; `hashAlgo`/`hash` are empty unless fixed. */
export interface DerivationOutput {
  name: string;
  path: string;
  hashAlgo: string;
  hash: string;
}

/** An input derivation and the outputs of it that are used. */
export interface DerivationInput {
  path: string;
  outputs: string[];
}

/** A parsed `Derive(…)` term. */
export interface Derivation {
  outputs: DerivationOutput[];
  inputDrvs: DerivationInput[];
  inputSrcs: string[];
  system: string;
  builder: string;
  args: string[];
  env: [string, string][];
}

/** What `instantiateDerivation` needs: a derivation before its paths exist. */
export interface DerivationTemplate {
  name: string;
  system: string;
  builder: string;
  args: string[];
  env: Record<string, string>;
  inputDrvs: DerivationInput[];
  inputSrcs: string[];
  /** Output names, e.g. `["out"]` or `["doc", "out"]`. */
  outputs: string[];
}

/** Options of `parseDerivation`. */
export interface ParseDerivationOptions {
  /** Longest text accepted, in UTF-16 code units; default 16 MiB. */
  maxBytes?: number;
}

/** Options of `instantiateDerivation`. */
export interface InstantiateOptions {
  storeDir: string;
  /** Reads and parses an input .drv, for its hash modulo. */
  readInput: (drvPath: string) => Derivation;
  /** Hash modulo per input .drv path, shared between calls. */
  cache?: Map<string, Uint8Array>;
}

/** Thrown for text that is not a well-formed derivation. */
export class DrvSyntaxError extends SyntaxError {
  constructor(
    message: string,
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "DrvSyntaxError";
  }
}

const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;
const ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};
const UNESCAPES: Record<string, string> = { n: "\n", r: "\r", t: "\t" };
const QUOTE_OR_BACKSLASH = /["\\]/g;

/**
 * Parses the text of a .drv file.
 * @throws {DrvSyntaxError} with the offset of the first problem.
 */
export function parseDerivation(
  text: string,
  options: ParseDerivationOptions = {},
): Derivation {
  const { maxBytes = DEFAULT_MAX_BYTES } = options;
  if (typeof text !== "string") {
    throw new DrvSyntaxError(`Cannot parse derivation: not a string`, 0);
  }
  if (text.length > maxBytes) {
    throw new DrvSyntaxError(
      `Cannot parse derivation: ${text.length} characters exceed the limit of ${maxBytes}`,
      maxBytes,
    );
  }
  const reader = new TermReader(text);
  reader.expect("Derive(");
  const outputs = reader.list(() => {
    reader.expect("(");
    const name = reader.string();
    reader.expect(",");
    const path = reader.string();
    reader.expect(",");
    const hashAlgo = reader.string();
    reader.expect(",");
    const hash = reader.string();
    reader.expect(")");
    return { name, path, hashAlgo, hash };
  });
  reader.expect(",");
  const inputDrvs = reader.list(() => {
    reader.expect("(");
    const path = reader.string();
    reader.expect(",");
    const outputs = reader.list(() => reader.string());
    reader.expect(")");
    return { path, outputs };
  });
  reader.expect(",");
  const inputSrcs = reader.list(() => reader.string());
  reader.expect(",");
  const system = reader.string();
  reader.expect(",");
  const builder = reader.string();
  reader.expect(",");
  const args = reader.list(() => reader.string());
  reader.expect(",");
  const env = reader.list((): [string, string] => {
    reader.expect("(");
    const key = reader.string();
    reader.expect(",");
    const value = reader.string();
    reader.expect(")");
    return [key, value];
  });
  reader.expect(")");
  reader.end();
  // A .drv is canonical: every set and map is sorted and free of repeats,
  // so that hashing its text is meaningful. Anything else is not a drv
  // that Guix or Nix wrote.
  requireCanonical("output", outputs.map((o) => o.name));
  requireCanonical("input derivation", inputDrvs.map((i) => i.path));
  for (const input of inputDrvs) {
    requireCanonical(
      `output of input ${JSON.stringify(input.path)}`,
      input.outputs,
    );
  }
  requireCanonical("input source", inputSrcs);
  requireCanonical("environment variable", env.map(([key]) => key));
  return { outputs, inputDrvs, inputSrcs, system, builder, args, env };
}

function requireCanonical(what: string, keys: string[]) {
  for (let i = 1; i < keys.length; i++) {
    const order = compare(keys[i - 1], keys[i]);
    if (order >= 0) {
      throw new DrvSyntaxError(
        `Cannot parse derivation: ${what} ${JSON.stringify(keys[i])} is ${
          order === 0 ? "repeated" : "out of order"
        }`,
        0,
      );
    }
  }
}

/** Writes a derivation in canonical form: sorted, escaped, no newline. */
export function printDerivation(drv: Derivation): string {
  const outputs = [...drv.outputs].sort((a, b) => compare(a.name, b.name))
    .map((o) =>
      `(${str(o.name)},${str(o.path)},${str(o.hashAlgo)},${str(o.hash)})`
    );
  const inputDrvs = [...drv.inputDrvs].sort((a, b) => compare(a.path, b.path))
    .map((i) => `(${str(i.path)},${strings([...i.outputs].sort(compare))})`);
  const env = [...drv.env].sort((a, b) => compare(a[0], b[0]))
    .map(([key, value]) => `(${str(key)},${str(value)})`);
  return `Derive([${outputs.join(",")}],[${inputDrvs.join(",")}],${
    strings([...drv.inputSrcs].sort(compare))
  },${str(drv.system)},${str(drv.builder)},${strings(drv.args)},[${
    env.join(",")
  }])`;
}

/**
 * The derivation's hash modulo: for a fixed-output derivation the hash of its
 * output spec, otherwise the hash of its text with each input .drv path
 * replaced by that input's own hash modulo. `drv` is hashed as given; blank
 * its output paths first to compute them (as `instantiateDerivation` does).
 */
export function derivationHashModulo(
  drv: Derivation,
  readInput: (drvPath: string) => Derivation,
  cache: Map<string, Uint8Array> = new Map(),
): Uint8Array {
  if (
    drv.outputs.length === 1 && drv.outputs[0].name === "out" &&
    drv.outputs[0].hash !== ""
  ) {
    const out = drv.outputs[0];
    return sha256(`fixed:out:${out.hashAlgo}:${out.hash}:${out.path}`);
  }
  const inputDrvs = drv.inputDrvs.map((input) => {
    let hash = cache.get(input.path);
    if (hash === undefined) {
      hash = derivationHashModulo(readInput(input.path), readInput, cache);
      cache.set(input.path, hash);
    }
    return { path: toHex(hash), outputs: input.outputs };
  });
  return sha256(printDerivation({ ...drv, inputDrvs }));
}

/**
 * Builds the derivation described by `template`: computes its output paths,
 * sets them in the outputs and the environment, and computes the .drv path.
 */
export function instantiateDerivation(
  template: DerivationTemplate,
  options: InstantiateOptions,
): { path: string; drv: Derivation; text: string } {
  const { storeDir, readInput, cache } = options;
  const outputNames = [...new Set(template.outputs)].sort(compare);
  const env = new Map(Object.entries(template.env));
  for (const name of outputNames) env.set(name, "");
  const masked: Derivation = {
    outputs: outputNames.map((name) => ({
      name,
      path: "",
      hashAlgo: "",
      hash: "",
    })),
    inputDrvs: template.inputDrvs,
    inputSrcs: template.inputSrcs,
    system: template.system,
    builder: template.builder,
    args: template.args,
    env: [...env],
  };

  const innerHex = toHex(derivationHashModulo(masked, readInput, cache));
  const outputs = masked.outputs.map((output) => {
    const pathName = output.name === "out"
      ? template.name
      : `${template.name}-${output.name}`;
    const path = makeStorePath(
      `output:${output.name}`,
      innerHex,
      pathName,
      storeDir,
    );
    env.set(output.name, path);
    return { ...output, path };
  });
  const drv: Derivation = { ...masked, outputs, env: [...env] };
  const text = printDerivation(drv);
  const references = [
    ...template.inputDrvs.map((input) => input.path),
    ...template.inputSrcs,
  ];
  const path = makeTextStorePath(
    `${template.name}.drv`,
    text,
    references,
    storeDir,
  );
  return { path, drv, text };
}

/** Output name to output path, in the derivation's order. */
export function derivationOutputPaths(drv: Derivation): Map<string, string> {
  return new Map(drv.outputs.map((output) => [output.name, output.path]));
}

class TermReader {
  offset = 0;
  constructor(readonly text: string) {}

  expect(token: string): void {
    if (!this.text.startsWith(token, this.offset)) {
      this.fail(`expected ${JSON.stringify(token)}`);
    }
    this.offset += token.length;
  }

  list<T>(item: () => T): T[] {
    this.expect("[");
    const items: T[] = [];
    if (this.text[this.offset] === "]") {
      this.offset++;
      return items;
    }
    for (;;) {
      items.push(item());
      if (this.text[this.offset] === "]") {
        this.offset++;
        return items;
      }
      this.expect(",");
    }
  }

  string(): string {
    this.expect('"');
    let value = "";
    let start = this.offset;
    for (;;) {
      QUOTE_OR_BACKSLASH.lastIndex = start;
      const match = QUOTE_OR_BACKSLASH.exec(this.text);
      if (match === null) {
        this.offset = this.text.length;
        this.fail("unterminated string");
      }
      const at = match.index;
      value += this.text.slice(start, at);
      if (this.text[at] === '"') {
        this.offset = at + 1;
        return value;
      }
      if (at + 1 >= this.text.length) {
        this.offset = at;
        this.fail("unterminated string");
      }
      const escaped = this.text[at + 1];
      value += UNESCAPES[escaped] ?? escaped;
      start = at + 2;
    }
  }

  end(): void {
    if (this.offset !== this.text.length) this.fail("trailing data");
  }

  fail(problem: string): never {
    const found = this.offset < this.text.length
      ? JSON.stringify(this.text.slice(this.offset, this.offset + 20))
      : "end of text";
    throw new DrvSyntaxError(
      `Cannot parse derivation: ${problem} at offset ${this.offset}, found ${found}`,
      this.offset,
    );
  }
}

function str(value: string): string {
  return `"${value.replace(/["\\\n\r\t]/g, (char) => ESCAPES[char])}"`;
}

function strings(values: string[]): string {
  return `[${values.map(str).join(",")}]`;
}

// Nix sorts by UTF-8 bytes (std::string); code-point order is the same,
// while JavaScript's `<` compares UTF-16 units and differs past U+FFFF.
function compare(a: string, b: string): number {
  if (a === b) return 0;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return a.length < b.length ? -1 : 1;
}
