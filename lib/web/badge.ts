// SVG badges for a jobset: success percentage of its latest successful evaluation.

import { escapeXml } from "./html.ts";

/** Colours by success share. */
function colour(percent: number): string {
  if (percent >= 90) return "#2da44e";
  if (percent >= 60) return "#bf8700";
  return "#cf222e";
}

/** Approximate text width in pixels for an 11 px sans-serif font. */
function textWidth(text: string): number {
  return Math.ceil([...text].length * 6.5) + 10;
}

function twoPart(
  label: string,
  value: string,
  fill: string,
): string {
  const left = textWidth(label);
  const right = textWidth(value);
  const width = left + right;
  const l = escapeXml(label);
  const v = escapeXml(value);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="20" role="img" aria-label="${l}: ${v}">
<title>${l}: ${v}</title>
<clipPath id="r"><rect width="${width}" height="20" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#r)">
<rect width="${left}" height="20" fill="#555"/>
<rect x="${left}" width="${right}" height="20" fill="${fill}"/>
</g>
<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">
<text x="${left / 2}" y="14">${l}</text>
<text x="${left + right / 2}" y="14">${v}</text>
</g>
</svg>
`;
}

/** What a badge is about: Cuirass's `type` parameter and the jobset. */
export interface BadgeSubject {
  /** 0 labels the badge "build"; 1, the specification's name. */
  type: 0 | 1;
  spec: string;
}

/** The percentage badge: `succeeded` of `total` builds. */
export function percentageBadge(
  succeeded: number,
  total: number,
  subject: BadgeSubject,
): string {
  if (!(total > 0)) return errorBadge("no builds", subject);
  const percent = Math.round(100 * Math.min(succeeded, total) / total);
  return twoPart(label(subject), `${percent}%`, colour(percent));
}

/**
 * The badge shown when there is nothing to measure (unknown jobset, no
 * successful evaluation), labelled as the percentage badge would be.
 */
export function errorBadge(message: string, subject: BadgeSubject): string {
  return twoPart(label(subject), message, "#6e7781");
}

function label(subject: BadgeSubject): string {
  return subject.type === 0 || subject.spec === "" ? "build" : subject.spec;
}
