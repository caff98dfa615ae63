// Copy the front-end files the pages load from node_modules (installed by `npm ci` from the
// pinned package-lock.json) into hotline/static/vendor/, each package with its licence files.
// The wheel ships that folder, so a production install needs no npm and no CDN.
// JsSIP ships CommonJS only: it is bundled once here, with esbuild, into an IIFE whose global
// is `JsSIP`; the licences of every package inside the bundle go with it.
// Run by scripts/setup after `npm ci`; run again safely (the folder is rebuilt whole).
import { build } from "esbuild";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const modules = path.join(root, "node_modules");
const vendor = path.join(root, "hotline", "static", "vendor");

// package -> [file in the package, name under vendor/<folder>/]; folder = the package's name
// without "@" and "/" (@alpinejs/csp -> alpinejs-csp)
const FILES = {
  "htmx.org": [["dist/htmx.min.js", "htmx.min.js"]],
  "htmx-ext-sse": [["dist/sse.min.js", "sse.min.js"]],
  // Alpine's CSP build: the standard build evaluates expressions with `new Function`, which a
  // Content-Security-Policy without 'unsafe-eval' (ours) refuses.
  "@alpinejs/csp": [["dist/cdn.min.js", "alpine.min.js"]],
  "echarts": [["dist/echarts.min.js", "echarts.min.js"]],
  "leaflet": [
    ["dist/leaflet.js", "leaflet.js"], ["dist/leaflet.css", "leaflet.css"],
    ...["layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png",
        "marker-shadow.png"].map((name) => [`dist/images/${name}`, `images/${name}`]),
  ],
  "swagger-ui-dist": [
    ["swagger-ui-bundle.js", "swagger-ui-bundle.js"],
    ["swagger-ui-bundle.js.LICENSE.txt", "swagger-ui-bundle.js.LICENSE.txt"],
    ["swagger-ui.css", "swagger-ui.css"],
  ],
};
const LICENCE = /^(licen[cs]e|notice|copying)(\.(md|txt))?$/i;

function packageDir(name) {
  return path.join(modules, ...name.split("/"));
}

function folderOf(name) {
  return name.replace(/^@/, "").replace("/", "-");
}

// Every licence or notice file at the package's top, or (when it ships none, as Alpine's
// packages do) a note of the licence its package.json declares.
function copyLicences(name, into) {
  const dir = packageDir(name);
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  fs.mkdirSync(into, { recursive: true });
  const found = fs.readdirSync(dir).filter((file) => LICENCE.test(file));
  for (const file of found) {
    fs.copyFileSync(path.join(dir, file), path.join(into, file));
  }
  if (found.length === 0) {
    const source = meta.repository?.url ?? meta.homepage ?? "";
    fs.writeFileSync(path.join(into, "LICENSE"),
      `${meta.name} ${meta.version}: licensed under ${meta.license} (per its package.json; ` +
      `the package ships no licence file). Source: ${source}\n`);
  }
  return meta.version;
}

fs.rmSync(vendor, { recursive: true, force: true });
const versions = {};
for (const [name, files] of Object.entries(FILES)) {
  const into = path.join(vendor, folderOf(name));
  for (const [from, to] of files) {
    fs.mkdirSync(path.dirname(path.join(into, to)), { recursive: true });
    fs.copyFileSync(path.join(packageDir(name), from), path.join(into, to));
  }
  versions[name] = copyLicences(name, into);
}

const jssip = path.join(vendor, "jssip");
const bundled = await build({
  entryPoints: [path.join(packageDir("jssip"), "lib", "JsSIP.js")],
  bundle: true, minify: true, format: "iife", globalName: "JsSIP", platform: "browser",
  target: "es2019", outfile: path.join(jssip, "jssip.min.js"), legalComments: "none",
  metafile: true, logLevel: "warning",
});
versions.jssip = copyLicences("jssip", jssip);
// The packages whose code is inside the bundle (debug, events, sdp-transform, ...).
const inside = new Set();
for (const input of Object.keys(bundled.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match && match[1] !== "jssip") inside.add(match[1]);
}
for (const name of [...inside].sort()) {
  versions[name] = copyLicences(name, path.join(jssip, "licenses", folderOf(name)));
}

fs.writeFileSync(path.join(vendor, "VERSIONS.json"), JSON.stringify(versions, null, 2) + "\n");
console.log(`setup: vendored ${Object.keys(versions).length} front-end packages into ` +
            path.relative(root, vendor));
