// Hexadecimal text of bytes, shared by layers that must not depend on each
// other (the ZeroMQ transport, the worker protocol, the Guix store code).

/** Lower-case hexadecimal of bytes. */
export function toHex(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += byte.toString(16).padStart(2, "0");
  return text;
}
