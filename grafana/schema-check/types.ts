// The shapes a dashboard file is checked against: Grafana's own published types from
// @grafana/schema, adapted only as far as JSON needs (string enums spelled as their values,
// options as saved, which Grafana merges over the panel's defaults). generate.mjs writes one
// module per dashboard that assigns each part of the file, as an object literal, to these types,
// so that tsc's excess-property checks reject a key that the schema does not have.
//
// Left open, as the schema leaves them: panel queries (`targets`), transformation options and
// matcher options. Three keys that Grafana writes but the schema lacks are added below, each
// marked: `__requires`, a query variable's `definition`, and a Prometheus annotation's own keys.
import type {
  AnnotationQuery,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
  VariableModel,
} from '@grafana/schema';

type IsAny<T> = 0 extends 1 & T ? true : false;

/**
 * T as it is written in JSON: a string enum becomes the union of its values (`LegendDisplayMode`
 * becomes `"list" | "table" | "hidden"`); numeric enums take their numbers as they are.
 * Everything else keeps its shape, its required and optional keys, and has no key added.
 */
export type FromJson<T> =
  IsAny<T> extends true
    ? T
    : T extends string
      ? `${T}`
      : T extends number | boolean | null | undefined
        ? T
        : T extends readonly (infer U)[]
          ? FromJson<U>[]
          : T extends object
            ? { [K in keyof T]: FromJson<T[K]> }
            : T;

/**
 * A panel's options or custom field config as saved: Grafana merges them over the plugin's
 * defaults (arrays are replaced, not merged), so any key may be left out, at any depth; but each
 * key that is there must be one of the schema's and hold a value of its type.
 */
export type Saved<T> =
  IsAny<T> extends true
    ? T
    : T extends readonly unknown[]
      ? FromJson<T>
      : T extends object
        ? { [K in keyof T]?: Saved<T[K]> }
        : FromJson<T>;

/** A panel type whose schema has no custom field config: `custom` must be empty. */
export type NoCustom = Record<string, 'this panel type has no custom field config'>;

/**
 * A panel of type `Type`, its `options` typed by that panel's `Options` and its
 * `fieldConfig.defaults.custom` by its `FieldConfig` (the schema's own `Panel` leaves both open).
 */
export type PanelOf<Type extends string, Options, Custom> = Omit<
  FromJson<Panel>,
  'type' | 'options' | 'fieldConfig'
> & {
  type: Type;
  options?: Saved<Options>;
  fieldConfig?: Omit<FromJson<FieldConfigSource>, 'defaults'> & {
    defaults: Omit<FromJson<FieldConfig>, 'custom'> & { custom?: Saved<Custom> };
  };
};

export type RowPanelJson = FromJson<RowPanel>;

/** One override property: a standard field config key (`unit`, `min`, `color`, …). */
export type StandardFieldConfig = FromJson<Omit<FieldConfig, 'custom'>>;

/**
 * The keys a Prometheus annotation keeps beside the schema's own (the schema leaves
 * data-source-specific keys out): Grafana's Prometheus annotation editor writes these and its
 * data source reads them. Not from @grafana/schema.
 */
export interface PrometheusAnnotationFields {
  expr: string;
  step: string;
  titleFormat: string;
  textFormat: string;
  tagKeys: string;
  useValueForTime: boolean;
}

/** `__requires`, which Grafana's export writes and its import reads. Not from @grafana/schema. */
export interface Requirement {
  type: 'grafana' | 'panel' | 'datasource';
  id: string;
  name: string;
  version: string;
}

/**
 * A query variable's query as Grafana shows it, which Grafana's own variable model
 * (`QueryVariableModel` in @grafana/data) has and writes. Not in @grafana/schema.
 */
export interface VariableDefinition {
  definition: string;
}

/** The dashboard without its panels (each panel is checked on its own, by its type). */
export type DashboardJson = Omit<FromJson<Dashboard>, 'panels' | 'annotations' | 'templating'> & {
  __requires?: Requirement[];
  annotations?: {
    list?: Array<FromJson<AnnotationQuery> & Partial<PrometheusAnnotationFields>>;
  };
  templating?: {
    list?: Array<FromJson<VariableModel> & Partial<VariableDefinition>>;
  };
};
