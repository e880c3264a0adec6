// Build products: files of a succeeded build's outputs offered for
// download (cuirass.md 5.9), one row per file.

import { get, run } from "./sql_query.ts";
import { integer } from "./rows.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { BuildProduct } from "./types.ts";

export function* addBuildProducts(
  _d: Dialect,
  build: number,
  products: Pick<BuildProduct, "type" | "fileSize" | "path">[],
): Step<void> {
  const id = integer("add build products", "build", build);
  for (const product of products) {
    const size = integer("add build products", "file size", product.fileSize);
    yield* run(
      `INSERT INTO BuildProducts (build, type, file_size, checksum, path)
       VALUES (?, ?, ?, '', ?) ON CONFLICT (build, path) DO NOTHING`,
      [id, product.type, size, product.path],
    );
  }
}

export function* buildProduct(
  _d: Dialect,
  id: number,
): Step<BuildProduct | null> {
  const row = yield* get(
    `SELECT id, build, type, file_size, checksum, path
     FROM BuildProducts WHERE id = ?`,
    [integer("get build product", "id", id)],
  );
  if (row === undefined) return null;
  return {
    id: Number(row.id),
    build: Number(row.build),
    type: String(row.type),
    fileSize: Number(row.file_size),
    checksum: String(row.checksum),
    path: String(row.path),
  };
}
