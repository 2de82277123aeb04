// Copies the dashboard's browser libraries from node_modules into ../static/vendor, so the
// Python package serves them without npm (and without internet) at run time.
//   npm ci && npm run vendor
// Re-run after changing a version in package.json; commit package-lock.json and static/vendor.
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "static", "vendor");
mkdirSync(out, { recursive: true });

// uPlot: time-series charts (MIT).
for (const file of ["uPlot.iife.min.js", "uPlot.min.css"]) {
  copyFileSync(join(modules, "uplot", "dist", file), join(out, file));
}
copyFileSync(join(modules, "uplot", "LICENSE"), join(out, "uPlot.LICENSE"));

// Lucide icons (ISC): one JSON object, icon name -> inner SVG markup (24x24 viewBox, stroke
// icons). An alias whose markup equals an earlier icon's is stored as "=name".
const icons = join(modules, "lucide-static", "icons");
const byMarkup = new Map();
const result = {};
for (const file of readdirSync(icons).filter((f) => f.endsWith(".svg")).sort()) {
  const name = file.slice(0, -4);
  const svg = readFileSync(join(icons, file), "utf8");
  const inner = svg
    .replace(/<!--[\s\S]*?-->/g, "")
    .replace(/^[\s\S]*?<svg[^>]*>/, "")
    .replace(/<\/svg>\s*$/, "")
    .replace(/\s*\n\s*/g, "")
    .replace(/\s+\/>/g, "/>");
  const seen = byMarkup.get(inner);
  if (seen === undefined) {
    byMarkup.set(inner, name);
    result[name] = inner;
  } else {
    result[name] = `=${seen}`;
  }
}
// Names used by rule files that Lucide spells differently.
const extra = { seedling: "sprout", warning: "triangle-alert", star: "star", user: "user" };
for (const [name, target] of Object.entries(extra)) {
  if (!(name in result) && target in result) result[name] = `=${target}`;
}
writeFileSync(join(out, "icons.json"), JSON.stringify(result));
copyFileSync(join(modules, "lucide-static", "LICENSE"), join(out, "lucide.LICENSE"));
const version = (pkg) => JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
writeFileSync(join(out, "VERSIONS.txt"),
  `uplot ${version("uplot")}\nlucide-static ${version("lucide-static")}\n`);
console.log(`vendored uPlot ${version("uplot")} and ${Object.keys(result).length} Lucide icons into ${out}`);
