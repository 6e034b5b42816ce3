/**
 * A small description language for the wire types, and the encoder and decoder compiled
 * from it. Each Rust type of `protocol/src/` has one schema in wire.ts, written in the same
 * field and variant order as the Rust declaration (bincode's order); `Infer<S>` gives the
 * TypeScript type of its values, so the schema is the single source of both.
 *
 * Value conventions (client/web/README.md): camelCase field names; u64 as a decimal
 * string; u32 and i64 as numbers; bytes as `Uint8Array`; `Option` as `null`; maps as plain
 * objects (keys written in UTF-8 byte order, as a Rust `BTreeMap` does); enums with fields
 * as objects tagged by the family's key; unit enums as strings; `ErrorCode` as the SDK's
 * number; `Result` as `{ ok: true, value }` or `{ ok: false, error }`.
 */

import { CodecError } from './errors.js';
import { Reader } from './reader.js';
import { show, utf8Bytes, Writer } from './writer.js';

export type Schema =
  | { readonly t: 'bool' }
  | { readonly t: 'u32' }
  | { readonly t: 'u64' }
  | { readonly t: 'i64' }
  | { readonly t: 'string' }
  | { readonly t: 'bytes' }
  | { readonly t: 'code'; readonly codes: readonly (readonly [number, string])[] }
  | { readonly t: 'opt'; readonly of: Schema }
  | { readonly t: 'vec'; readonly of: Schema }
  | { readonly t: 'map'; readonly of: Schema }
  | { readonly t: 'struct'; readonly name: string; readonly fields: Fields }
  | {
      readonly t: 'enum';
      readonly name: string;
      readonly tag: string;
      readonly variants: { readonly [variant: string]: Fields };
    }
  | { readonly t: 'names'; readonly name: string; readonly names: readonly string[] }
  | { readonly t: 'result'; readonly ok: Schema; readonly err: Schema };

export type Fields = { readonly [field: string]: Schema };

export const bool = { t: 'bool' } as const;
export const u32 = { t: 'u32' } as const;
export const u64 = { t: 'u64' } as const;
export const i64 = { t: 'i64' } as const;
export const string = { t: 'string' } as const;
export const bytes = { t: 'bytes' } as const;

export const opt = <const S extends Schema>(of: S) => ({ t: 'opt', of }) as const;
export const vec = <const S extends Schema>(of: S) => ({ t: 'vec', of }) as const;
export const map = <const S extends Schema>(of: S) => ({ t: 'map', of }) as const;
export const struct = <const F extends Fields>(name: string, fields: F) =>
  ({ t: 'struct', name, fields }) as const;
export const enumOf = <const T extends string, const V extends { readonly [v: string]: Fields }>(
  name: string,
  tag: T,
  variants: V,
) => ({ t: 'enum', name, tag, variants }) as const;
export const names = <const N extends readonly string[]>(name: string, list: N) =>
  ({ t: 'names', name, names: list }) as const;
export const result = <const O extends Schema, const E extends Schema>(ok: O, err: E) =>
  ({ t: 'result', ok, err }) as const;

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** The TypeScript type of the values of schema `S`. */
export type Infer<S> = S extends { t: 'bool' }
  ? boolean
  : S extends { t: 'u32' } | { t: 'i64' } | { t: 'code' }
    ? number
    : S extends { t: 'u64' } | { t: 'string' }
      ? string
      : S extends { t: 'bytes' }
        ? Uint8Array
        : S extends { t: 'opt'; of: infer X }
          ? Infer<X> | null
          : S extends { t: 'vec'; of: infer X }
            ? Infer<X>[]
            : S extends { t: 'map'; of: infer X }
              ? Record<string, Infer<X>>
              : S extends { t: 'struct'; fields: infer F }
                ? { -readonly [K in keyof F]: Infer<F[K]> }
                : S extends { t: 'enum'; tag: infer T extends string; variants: infer V }
                  ? {
                      [K in keyof V]: Simplify<
                        { [P in T]: K } & { -readonly [F in keyof V[K]]: Infer<V[K][F]> }
                      >;
                    }[keyof V]
                  : S extends { t: 'names'; names: readonly (infer N)[] }
                    ? N
                    : S extends { t: 'result'; ok: infer O; err: infer E }
                      ? { ok: true; value: Infer<O> } | { ok: false; error: Infer<E> }
                      : never;

/** The compiled pair for one schema. */
export interface Codec<T> {
  decode(r: Reader): T;
  encode(w: Writer, v: T): void;
}

/** Rethrows `e` located at `segment` (a codec error), or as is. */
function within(e: unknown, segment: string): never {
  throw e instanceof CodecError ? e.within(segment) : e;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function badValue(detail: string): never {
  throw new CodecError('badValue', detail);
}

/** An own data property, even for a key such as `__proto__`. */
function put(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** UTF-8 byte order, the order of a Rust `BTreeMap<String, _>`. */
function byteOrder(a: [Uint8Array, unknown], b: [Uint8Array, unknown]): number {
  const x = a[0];
  const y = b[0];
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    if (x[i] !== y[i]) return x[i]! - y[i]!;
  }
  return x.length - y.length;
}

type Field = readonly [name: string, codec: Codec<unknown>];

function compileFields(fields: Fields): Field[] {
  return Object.entries(fields).map(([k, s]) => [k, build(s)] as const);
}

function decodeFields(r: Reader, fields: Field[], out: Record<string, unknown>): void {
  for (const [k, c] of fields) {
    try {
      out[k] = c.decode(r);
    } catch (e) {
      within(e, `.${k}`);
    }
  }
}

function encodeFields(
  w: Writer,
  fields: Field[],
  v: Record<string, unknown>,
  what: string,
  skip?: string,
): void {
  for (const key of Object.keys(v)) {
    if (key !== skip && !fields.some(([k]) => k === key)) {
      badValue(`${what} has no field ${JSON.stringify(key)} (its fields: ${fields.map(([k]) => k).join(', ') || 'none'})`);
    }
  }
  for (const [k, c] of fields) {
    try {
      c.encode(w, v[k]);
    } catch (e) {
      within(e, `.${k}`);
    }
  }
}

/** Compiles a schema into its decoder and encoder. */
export function compile<S extends Schema>(schema: S): Codec<Infer<S>> {
  return build(schema) as Codec<Infer<S>>;
}

function build(schema: Schema): Codec<unknown> {
  switch (schema.t) {
    case 'bool':
      return { decode: (r) => r.bool(), encode: (w, v) => w.bool(v) };
    case 'u32':
      return { decode: (r) => r.u32(), encode: (w, v) => w.u32(v) };
    case 'u64':
      return { decode: (r) => r.u64(), encode: (w, v) => w.u64(v) };
    case 'i64':
      return { decode: (r) => r.i64(), encode: (w, v) => w.i64(v) };
    case 'string':
      return { decode: (r) => r.string(), encode: (w, v) => w.string(v) };
    case 'bytes':
      return { decode: (r) => r.bytesVec(), encode: (w, v) => w.bytes(v) };
    case 'code': {
      const codes = schema.codes;
      return {
        decode: (r) => codes[r.variant('ErrorCode', codes.length)]![0],
        encode: (w, v) => {
          const i = codes.findIndex(([c]) => c === v);
          if (i < 0) badValue(`${show(v)} is not an error code (known: ${codes.map(([c]) => c).join(', ')})`);
          w.varint(i);
        },
      };
    }
    case 'opt': {
      const of = build(schema.of);
      return {
        decode: (r) => (r.option() ? of.decode(r) : null),
        encode: (w, v) => {
          if (v === null || v === undefined) {
            w.byte(0);
          } else {
            w.byte(1);
            of.encode(w, v);
          }
        },
      };
    }
    case 'vec': {
      const of = build(schema.of);
      return {
        decode: (r) => {
          const n = r.len('list');
          const out = new Array<unknown>(n);
          for (let i = 0; i < n; i++) {
            try {
              out[i] = of.decode(r);
            } catch (e) {
              within(e, `[${i}]`);
            }
          }
          return out;
        },
        encode: (w, v) => {
          if (!Array.isArray(v)) badValue(`expected an array, got ${show(v)}`);
          w.varint(v.length);
          v.forEach((item, i) => {
            try {
              of.encode(w, item);
            } catch (e) {
              within(e, `[${i}]`);
            }
          });
        },
      };
    }
    case 'map': {
      const of = build(schema.of);
      return {
        decode: (r) => {
          // A key and a value take at least one byte each.
          const n = r.len('map', 2);
          const out: Record<string, unknown> = {};
          for (let i = 0; i < n; i++) {
            const start = r.pos;
            let k: string;
            try {
              k = r.string();
            } catch (e) {
              within(e, `{key ${i}}`);
            }
            if (Object.prototype.hasOwnProperty.call(out, k)) {
              r.fail('duplicateKey', `map has the key ${show(k)} twice`, start);
            }
            try {
              put(out, k, of.decode(r));
            } catch (e) {
              within(e, `[${JSON.stringify(k)}]`);
            }
          }
          return out;
        },
        encode: (w, v) => {
          let entries: [string, unknown][];
          if (v instanceof Map) {
            entries = [...v.entries()];
            for (const [k] of entries) {
              if (typeof k !== 'string') badValue(`map key ${show(k)} is not a string`);
            }
          } else if (isObject(v)) {
            entries = Object.entries(v);
          } else {
            return badValue(`expected an object (a map), got ${show(v)}`);
          }
          const keyed = entries.map(([k, x]) => {
            let key: Uint8Array;
            try {
              key = utf8Bytes(k);
            } catch (e) {
              within(e, `{key ${show(k)}}`);
            }
            return [key, [k, x]] as [Uint8Array, [string, unknown]];
          });
          keyed.sort(byteOrder);
          w.varint(keyed.length);
          for (const [key, [k, x]] of keyed) {
            w.varint(key.length);
            w.raw(key);
            try {
              of.encode(w, x);
            } catch (e) {
              within(e, `[${JSON.stringify(k)}]`);
            }
          }
        },
      };
    }
    case 'struct': {
      const fields = compileFields(schema.fields);
      const name = schema.name;
      return {
        decode: (r) => {
          const out: Record<string, unknown> = {};
          decodeFields(r, fields, out);
          return out;
        },
        encode: (w, v) => {
          if (!isObject(v)) badValue(`expected a ${name} object, got ${show(v)}`);
          encodeFields(w, fields, v, name);
        },
      };
    }
    case 'enum': {
      const { name, tag } = schema;
      const variants = Object.entries(schema.variants).map(
        ([v, fields]) => [v, compileFields(fields)] as const,
      );
      const index = new Map(variants.map(([v], i) => [v, i]));
      return {
        decode: (r) => {
          const i = r.variant(name, variants.length);
          const [v, fields] = variants[i]!;
          const out: Record<string, unknown> = { [tag]: v };
          try {
            decodeFields(r, fields, out);
          } catch (e) {
            within(e, `(${v})`);
          }
          return out;
        },
        encode: (w, v) => {
          if (!isObject(v)) badValue(`expected a ${name} object, got ${show(v)}`);
          const which = v[tag];
          const i = typeof which === 'string' ? index.get(which) : undefined;
          if (i === undefined) {
            badValue(`${name} has no ${tag} ${show(which)}`);
          }
          w.varint(i);
          try {
            encodeFields(w, variants[i]![1], v, `${name} ${which as string}`, tag);
          } catch (e) {
            within(e, `(${which as string})`);
          }
        },
      };
    }
    case 'names': {
      const { name, names: list } = schema;
      return {
        decode: (r) => list[r.variant(name, list.length)],
        encode: (w, v) => {
          const i = list.indexOf(v as string);
          if (typeof v !== 'string' || i < 0) {
            badValue(`${show(v)} is not a ${name} (one of: ${list.join(', ')})`);
          }
          w.varint(i);
        },
      };
    }
    case 'result': {
      const ok = build(schema.ok);
      const err = build(schema.err);
      return {
        decode: (r) => {
          const i = r.variant('Result', 2);
          try {
            return i === 0 ? { ok: true, value: ok.decode(r) } : { ok: false, error: err.decode(r) };
          } catch (e) {
            return within(e, i === 0 ? '.value' : '.error');
          }
        },
        encode: (w, v) => {
          if (!isObject(v) || typeof v.ok !== 'boolean') {
            badValue(`expected { ok: true, value } or { ok: false, error }, got ${show(v)}`);
          }
          const extra = Object.keys(v).filter((k) => k !== 'ok' && k !== (v.ok ? 'value' : 'error'));
          if (extra.length > 0) badValue(`a result with ok: ${v.ok} has no field ${extra[0]}`);
          w.varint(v.ok ? 0 : 1);
          try {
            if (v.ok) ok.encode(w, v.value);
            else err.encode(w, v.error);
          } catch (e) {
            within(e, v.ok ? '.value' : '.error');
          }
        },
      };
    }
  }
}
