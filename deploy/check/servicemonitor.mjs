// The ServiceMonitor objects on stdin (a JSON list of {file, object}) against prometheus-operator's
// CRD schema, as @kubernetes-models/prometheus-operator ships it compiled to a validator: types,
// required fields, enums and formats. Like the API server, it does not reject unknown fields (a
// CRD's schema does not forbid them; the server prunes them). Argument: the node_modules folder
// that scripts/setup filled.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules] = process.argv.slice(2);
if (!modules) {
  console.error("usage: node servicemonitor.mjs NODE_MODULES < objects.json");
  process.exit(2);
}
// A file path rather than the package name: the package is installed outside this folder.
const model = join(
  modules,
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
);
const { ServiceMonitor } = await import(pathToFileURL(model).href);
const items = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, object } of items) {
  const name = `servicemonitor/${object.metadata?.name}`;
  try {
    new ServiceMonitor(object).validate();
    console.log(`INFO ${file} passed for resource ${name} against monitoring.coreos.com/v1`);
  } catch (e) {
    failed += 1;
    console.log(`ERROR ${file} did not validate for resource ${name}: ${e.message}`);
  }
}
process.exit(failed > 0 ? 1 : 0);
