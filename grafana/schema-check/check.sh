#!/usr/bin/env bash
# Checks the Grafana dashboards in grafana/dashboards/ against Grafana's own published types
# (@grafana/schema, the version pinned in package-lock.json) with tsc in strict mode: each
# dashboard becomes a TypeScript module of object literals (generate.mjs), so a key the schema
# does not have, an enum value it does not list or a value of the wrong type fails. Then it
# proves the check is not vacuous: copies of the dashboard with one such mistake each
# (mutants.mjs) must each fail with the error that names the mistake.
#
# Needs node and npm; the packages come from the lockfile through npm's cache in
# ~/.cache/power-monitord/npm, so a second run works offline.
set -euo pipefail
cd "$(dirname "$0")"

npm ci --cache "$HOME/.cache/power-monitord/npm" --prefer-offline --no-audit --no-fund
tsc=(node node_modules/typescript/bin/tsc)
echo "typescript $("${tsc[@]}" --version | cut -d' ' -f2)," \
  "@grafana/schema $(node -p "require('./node_modules/@grafana/schema/package.json').version")"

rm -rf generated
dashboards=(../dashboards/*.json)
for dashboard in "${dashboards[@]}"; do
  node generate.mjs "$dashboard" "generated/$(basename "$dashboard" .json).ts"
done
if ! "${tsc[@]}" -p tsconfig.json; then
  echo "schema-check: the lines above are in grafana/schema-check/generated/, where a comment" \
    "above each panel names it" >&2
  exit 1
fi
echo "schema-check: ${#dashboards[@]} dashboard(s) type-check against @grafana/schema"

# The mutants: tsc must fail on them, each with its own expected error.
node mutants.mjs write ../dashboards/power-monitord.json generated/mutants
if "${tsc[@]}" -p tsconfig.mutants.json >generated/mutants.out; then
  echo "schema-check: the mutants type-checked, so the check catches nothing" >&2
  exit 1
fi
node mutants.mjs verify generated/mutants generated/mutants.out
