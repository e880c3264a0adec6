// The error of every specification reader, located in its file.

/** What kind of problem a {@link SpecError} reports. */
export type SpecErrorKind =
  /** The text is not well-formed Scheme or JSON. */
  | "syntax"
  /** A form outside the supported subset (Guile could still evaluate it). */
  | "unsupported"
  /** A field value that is not acceptable. */
  | "invalid";

/** A specification that cannot be read, located in its file. */
export class SpecError extends Error {
  file: string;
  /** 1-based; 0 when the input has no lines (JSON). */
  line: number;
  column: number;
  kind: SpecErrorKind;

  constructor(
    message: string,
    where: { file: string; line: number; column: number },
    options?: ErrorOptions & { kind?: SpecErrorKind },
  ) {
    super(message, options);
    this.kind = options?.kind ?? "invalid";
    this.name = "SpecError";
    this.file = where.file;
    this.line = where.line;
    this.column = where.column;
  }
}
