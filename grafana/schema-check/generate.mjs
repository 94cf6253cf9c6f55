// Writes a TypeScript module that assigns a Grafana dashboard file, part by part, as object
// literals to the types of @grafana/schema (see types.ts), for tsc to check.
//
//   node generate.mjs DASHBOARD.json OUT.ts
//
// The dashboard's own keys are checked as `DashboardJson`; each panel, nested ones in collapsed
// rows too, as `PanelOf<type, Options, FieldConfig>` of its panel type's schema; each override
// property as the standard field config or, for `custom.*`, as the panel type's FieldConfig.
// A panel type that has no schema here fails to type-check (its `type` is not a known one).
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const composable = join(here, 'node_modules/@grafana/schema/dist/esm/raw/composable');

// Grafana's panel plugin ids and the folder of each one's schema in @grafana/schema.
const PANEL_SCHEMAS = {
  annolist: 'annotationslist',
  barchart: 'barchart',
  bargauge: 'bargauge',
  candlestick: 'candlestick',
  canvas: 'canvas',
  dashlist: 'dashboardlist',
  datagrid: 'datagrid',
  debug: 'debug',
  gauge: 'gauge',
  geomap: 'geomap',
  heatmap: 'heatmap',
  histogram: 'histogram',
  logs: 'logs',
  news: 'news',
  nodeGraph: 'nodegraph',
  piechart: 'piechart',
  stat: 'stat',
  'state-timeline': 'statetimeline',
  'status-history': 'statushistory',
  table: 'table',
  text: 'text',
  timeseries: 'timeseries',
  trend: 'trend',
  xychart: 'xychart',
};

/** The schema module of a panel type: import path, and whether it has a custom FieldConfig. */
function panelSchema(type) {
  const folder = PANEL_SCHEMAS[type];
  if (folder === undefined) return undefined;
  const dir = join(composable, folder, 'panelcfg/x');
  const file = readdirSync(dir).find((f) => f.endsWith('_types.gen.d.ts'));
  if (file === undefined) throw new Error(`no schema types in ${dir}`);
  const text = readFileSync(join(dir, file), 'utf8');
  if (!/^export interface Options\b/m.test(text)) throw new Error(`${file} has no Options`);
  const spec = `@grafana/schema/dist/esm/raw/composable/${folder}/panelcfg/x/${file.replace(/\.d\.ts$/, '.js')}`;
  return { spec, hasFieldConfig: /^export interface FieldConfig\b/m.test(text) };
}

const ident = (type) => 'panel_' + type.replace(/[^A-Za-z0-9]/g, '_');
const literal = (value) => JSON.stringify(value, null, 2);

/** `custom.lineStyle` with value v as `{ lineStyle: v }`. */
function nested(path, value) {
  return path.split('.').reduceRight((inner, key) => ({ [key]: inner }), value);
}

export function generate(dashboard, source, outFile) {
  if (typeof dashboard !== 'object' || dashboard === null || Array.isArray(dashboard)) {
    throw new Error(`${source}: not a JSON object`);
  }
  const imports = new Map();
  const out = [];
  const typesPath = relative(dirname(outFile), join(here, 'types')).replace(/^(?!\.)/, './');

  const { panels = [], ...rest } = dashboard;
  out.push(`// The dashboard's own keys; its panels follow, one by one.`);
  out.push(`export const dashboard: DashboardJson = ${literal(rest)};`);

  const all = [];
  for (const panel of panels) {
    all.push(panel);
    if (panel && panel.type === 'row' && Array.isArray(panel.panels)) all.push(...panel.panels);
  }

  all.forEach((panel, n) => {
    const name = `panel${n}`;
    const title = JSON.stringify(panel?.title ?? '').replace(/\*\//g, '* /');
    out.push('');
    out.push(`/* panels[${n}]: id ${panel?.id}, ${JSON.stringify(panel?.type)}, ${title} */`);
    if (panel && panel.type === 'row') {
      // A collapsed row's panels are checked above and below as panels of their own.
      const row = Array.isArray(panel.panels) ? { ...panel, panels: [] } : panel;
      out.push(`export const ${name}: RowPanelJson = ${literal(row)};`);
      return;
    }
    const schema = panel && typeof panel.type === 'string' ? panelSchema(panel.type) : undefined;
    let options = 'Record<string, unknown>';
    let custom = 'Record<string, unknown>';
    let type = 'KnownPanelType';
    if (schema) {
      const alias = ident(panel.type);
      imports.set(alias, schema.spec);
      options = `${alias}.Options`;
      custom = schema.hasFieldConfig ? `${alias}.FieldConfig` : 'NoCustom';
      type = JSON.stringify(panel.type);
    }
    out.push(`export const ${name}: PanelOf<${type}, ${options}, ${custom}> = ${literal(panel)};`);

    const overrides = panel?.fieldConfig?.overrides;
    if (!Array.isArray(overrides)) return;
    overrides.forEach((override, i) => {
      const properties = override?.properties;
      if (!Array.isArray(properties)) return;
      properties.forEach((property, j) => {
        if (typeof property?.id !== 'string') return;
        const id = property.id;
        const constName = `${name}_override${i}_property${j}`;
        out.push(`/* override ${i}, property ${j}: ${JSON.stringify(id).replace(/\*\//g, '* /')} */`);
        if (id.startsWith('custom.')) {
          const value = literal(nested(id.slice('custom.'.length), property.value));
          out.push(`export const ${constName}: Saved<${custom}> = ${value};`);
        } else {
          out.push(`export const ${constName}: StandardFieldConfig = ${literal(nested(id, property.value))};`);
        }
      });
    });
  });

  const known = ['row', ...Object.keys(PANEL_SCHEMAS)].map((t) => JSON.stringify(t)).join(' | ');
  const head = [
    `// Generated by grafana/schema-check/generate.mjs from ${source}; do not edit.`,
    `import type { DashboardJson, NoCustom, PanelOf, RowPanelJson, Saved, StandardFieldConfig } from '${typesPath}';`,
    ...[...imports].map(([alias, spec]) => `import type * as ${alias} from '${spec}';`),
    '',
    `/** The panel types that have a schema here. */`,
    `type KnownPanelType = ${known};`,
    '',
  ];
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, [...head, ...out, ''].join('\n'));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [input, outFile] = process.argv.slice(2);
  if (!input || !outFile) {
    console.error('usage: node generate.mjs DASHBOARD.json OUT.ts');
    process.exit(2);
  }
  generate(JSON.parse(readFileSync(input, 'utf8')), input, resolve(outFile));
}
