// Builds src/main.tsx into ../airflow_hoop/plugins/static/hoop-ui.js: one ES module that
// Airflow's UI import()s (react_apps bundle_url). React, ReactDOM, React Router and Chakra UI
// are NOT bundled: they are the host page's own (globalThis.React, ...), so the views share
// Airflow's theme, router and colour mode, and the bundle stays small.
// `node build.mjs --check` fails when the committed bundle differs from a fresh build (CI).
import { build } from "esbuild";
import { readFileSync } from "node:fs";

const OUT = "../airflow_hoop/plugins/static/hoop-ui.js";
const GLOBALS = {
  react: "React",
  "react/jsx-runtime": "ReactJSXRuntime",
  "react-dom": "ReactDOM",
  "react-router-dom": "ReactRouterDOM",
  "@chakra-ui/react": "ChakraUI",
};

const hostGlobals = {
  name: "host-globals",
  setup(b) {
    const filter = new RegExp(`^(${Object.keys(GLOBALS).map((k) => k.replace("/", "\\/")).join("|")})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: "host" }));
    b.onLoad({ filter: /.*/, namespace: "host" }, (args) => ({
      contents: `module.exports = globalThis[${JSON.stringify(GLOBALS[args.path])}];`,
      loader: "js",
    }));
  },
};

const check = process.argv.includes("--check");
const result = await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  jsx: "automatic",
  legalComments: "none",
  plugins: [hostGlobals],
  write: !check,
  outfile: OUT,
});
if (check) {
  const fresh = result.outputFiles[0].text;
  const committed = readFileSync(OUT, "utf8");
  if (fresh !== committed) {
    console.error(`${OUT} is stale: run \`make ui-build\` and commit it`);
    process.exit(1);
  }
  console.log(`${OUT} is current`);
}
