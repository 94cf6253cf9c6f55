// Proves the check is not vacuous: copies of a dashboard, each with one mistake of a kind the
// check exists to catch, must each fail to type-check with the error that names the mistake.
//
//   node mutants.mjs write DASHBOARD.json DIR      one DIR/<name>.ts per mutant
//   node mutants.mjs verify DIR TSC_OUTPUT         each mutant has its expected error
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { generate } from './generate.mjs';

const panels = (d) => d.panels.flatMap((p) => (p.type === 'row' ? p.panels ?? [] : [p]));

/** The first panel that passes `test`; a dashboard without one fails loudly. */
function first(d, what, test) {
  const panel = panels(d).find(test);
  if (panel === undefined) throw new Error(`no ${what} in the dashboard to mutate`);
  return panel;
}

const timeseries = (d) => first(d, 'timeseries panel', (p) => p.type === 'timeseries');
const legend = (d) => first(d, 'panel with a legend', (p) => p.options?.legend).options.legend;
const custom = (d) =>
  first(d, 'panel with a custom field config', (p) => p.fieldConfig?.defaults?.custom)
    .fieldConfig.defaults.custom;
const ofType = (type) => (d) => first(d, `${type} panel`, (p) => p.type === type);

function rename(object, from, to) {
  if (!(from in object)) throw new Error(`no key ${from} to rename`);
  object[to] = object[from];
  delete object[from];
}

function addOverride(panel, property) {
  panel.fieldConfig ??= { defaults: {}, overrides: [] };
  panel.fieldConfig.overrides.push({ matcher: { id: 'byName', options: 'x' }, properties: [property] });
}

// name: [what the mistake is, what tsc must say about it, how to make it]
const MUTANTS = {
  'option-key-misspelled': [
    "a panel option's key misspelled (tooltip as tootip)",
    /error TS2353: .*'"tootip"' does not exist/,
    (d) => rename(timeseries(d).options, 'tooltip', 'tootip'),
  ],
  'legend-display-mode': [
    'legend.displayMode "tabel"',
    /error TS2820: Type '"tabel"' is not assignable to type '.*"table"/,
    (d) => (legend(d).displayMode = 'tabel'),
  ],
  'option-wrong-type': [
    'a stat panel\'s reduceOptions.values as the string "false"',
    /error TS2322: Type 'string' is not assignable to type 'boolean/,
    (d) => (ofType('stat')(d).options.reduceOptions.values = 'false'),
  ],
  'stat-enum': [
    'a stat panel\'s colorMode "values"',
    /error TS2820: Type '"values"' is not assignable/,
    (d) => (ofType('stat')(d).options.colorMode = 'values'),
  ],
  'bargauge-enum': [
    'a bar gauge\'s displayMode "gradiant"',
    /error TS2820: Type '"gradiant"' is not assignable/,
    (d) => (ofType('bargauge')(d).options.displayMode = 'gradiant'),
  ],
  'table-option-type': [
    'a table\'s sortBy desc as "yes"',
    /error TS2322: Type 'string' is not assignable to type 'boolean/,
    (d) => (ofType('table')(d).options.sortBy = [{ displayName: 'x', desc: 'yes' }]),
  ],
  'state-timeline-enum': [
    'a state timeline\'s showValue "nevr"',
    /error TS2820: Type '"nevr"' is not assignable/,
    (d) => (ofType('state-timeline')(d).options.showValue = 'nevr'),
  ],
  'custom-key-misspelled': [
    'a custom field config key misspelled (fillOpacity as fillOpactiy)',
    /error TS2353: .*'"fillOpactiy"' does not exist/,
    (d) => rename(custom(d), 'fillOpacity', 'fillOpactiy'),
  ],
  'custom-wrong-type': [
    'custom.lineWidth as the string "1"',
    /error TS2322: Type 'string' is not assignable to type 'number'/,
    (d) => (custom(d).lineWidth = '1'),
  ],
  'custom-where-none': [
    'a custom field config on a stat panel, whose schema has none',
    /has no custom field config/,
    (d) => (ofType('stat')(d).fieldConfig.defaults.custom = { lineWidth: 1 }),
  ],
  'override-custom-enum': [
    'an override setting custom.axisPlacement to "rigth"',
    /error TS2820: Type '"rigth"' is not assignable/,
    (d) => addOverride(timeseries(d), { id: 'custom.axisPlacement', value: 'rigth' }),
  ],
  'override-standard-key': [
    'an override setting "unitt"',
    /error TS2353: .*'"unitt"' does not exist/,
    (d) => addOverride(timeseries(d), { id: 'unitt', value: 'watt' }),
  ],
  'threshold-mode': [
    'thresholds mode "absolut"',
    /error TS2820: Type '"absolut"' is not assignable/,
    (d) =>
      (first(d, 'panel with thresholds', (p) => p.fieldConfig?.defaults?.thresholds)
        .fieldConfig.defaults.thresholds.mode = 'absolut'),
  ],
  'panel-type-misspelled': [
    'a panel type "timeseris"',
    /error TS2820: Type '"timeseris"' is not assignable to type 'KnownPanelType'/,
    (d) => (timeseries(d).type = 'timeseris'),
  ],
  'panel-key-misspelled': [
    'a panel key misspelled (gridPos as gridpos)',
    /error TS2353: .*'"gridpos"' does not exist/,
    (d) => rename(timeseries(d), 'gridPos', 'gridpos'),
  ],
  'dashboard-enum': [
    'graphTooltip 3 (Grafana has 0, 1 and 2)',
    /error TS2322: Type '3' is not assignable to type 'DashboardCursorSync/,
    (d) => (d.graphTooltip = 3),
  ],
  'variable-key-misspelled': [
    'a variable key misspelled (includeAll as inclueAll)',
    /error TS2353: .*'"inclueAll"' does not exist/,
    (d) => rename(d.templating.list[0], 'includeAll', 'inclueAll'),
  ],
  'annotation-key-misspelled': [
    'an annotation key misspelled (iconColor as iconColour)',
    /error TS2353: .*'"iconColour"' does not exist/,
    (d) => rename(d.annotations.list[d.annotations.list.length - 1], 'iconColor', 'iconColour'),
  ],
};

const [command, ...args] = process.argv.slice(2);
if (command === 'write' && args.length === 2) {
  const [input, dir] = args;
  const text = readFileSync(input, 'utf8');
  rmSync(dir, { recursive: true, force: true });
  for (const [name, [, , mutate]] of Object.entries(MUTANTS)) {
    const dashboard = JSON.parse(text);
    mutate(dashboard);
    if (JSON.stringify(dashboard) === JSON.stringify(JSON.parse(text))) {
      throw new Error(`mutant ${name} changed nothing`);
    }
    generate(dashboard, `${input} with ${MUTANTS[name][0]}`, resolve(dir, `${name}.ts`));
  }
} else if (command === 'verify' && args.length === 2) {
  const [dir, outputFile] = args;
  // tsc's plain output: `path(line,col): error TSnnnn: message`, continued on indented lines.
  const errors = [];
  for (const line of readFileSync(outputFile, 'utf8').split('\n')) {
    if (/^\S.*\(\d+,\d+\): error TS\d+/.test(line)) errors.push(line);
    else if (line.startsWith(' ') && errors.length > 0) errors[errors.length - 1] += '\n' + line;
  }
  const files = new Set(readdirSync(dir).filter((f) => f.endsWith('.ts')));
  let passed = 0;
  let failed = 0;
  for (const [name, [what, expected]] of Object.entries(MUTANTS)) {
    const file = `${name}.ts`;
    const own = errors.filter((e) => e.split('(')[0].endsWith(`/${file}`) || e.startsWith(`${file}(`));
    const hit = own.find((e) => expected.test(e));
    if (files.has(file) && hit) {
      passed += 1;
      const message = hit.split('\n')[0].replace(/^.*?: error /, 'error ');
      console.log(`caught: ${what}\n    ${message.length > 160 ? message.slice(0, 157) + '...' : message}`);
    } else {
      failed += 1;
      console.log(`MISSED: ${what}: no error matching ${expected} in ${join(dir, file)}`);
      for (const e of own) console.log(`    ${e}`);
    }
  }
  const stray = errors.filter((e) => !Object.keys(MUTANTS).some((n) => e.includes(`${n}.ts(`)));
  for (const e of stray) console.log(`error outside the mutants: ${e}`);
  console.log(`schema-check mutants: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && stray.length === 0 ? 0 : 1);
} else {
  console.error('usage: node mutants.mjs write DASHBOARD.json DIR | verify DIR TSC_OUTPUT');
  process.exit(2);
}
