/**
 * Reading the seed's option objects: each call names the option it refuses and why (a
 * REQUEST_PARAMETER_ERROR, -3, as the broker would), before anything is sent.
 */

import { paramError } from './errors.js';

export type Options = Record<string, unknown>;

/** A bad value as an error message shows it: strings quoted and cut at 32 characters. */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 32 ? v.slice(0, 32) + '...' : v);
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

/** The options object itself. */
export function options(method: string, o: unknown): Options {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw paramError(`${method}: expected an options object, got ${show(o)}`);
  }
  return o as Options;
}

/** A required string option. */
export function str(method: string, o: Options, key: string): string {
  const v = o[key];
  if (typeof v !== 'string') {
    throw paramError(`${method}: ${key} must be a string, got ${show(v)}`);
  }
  return v;
}

/** An optional string option (`undefined` and `null` are absent). */
export function optStr(method: string, o: Options, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  return str(method, o, key);
}

/** A list of strings; `single` also takes one string as a list of one (the seed's `'a' || ['a', 'b']`). */
export function strs(method: string, o: Options, key: string, single = false, fallback?: string[]): string[] {
  const v = o[key];
  if (v === undefined && fallback) return fallback;
  if (single && typeof v === 'string') return [v];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw paramError(
      `${method}: ${key} must be ${single ? 'a string or ' : ''}an array of strings, got ${show(v)}`,
    );
  }
  return [...(v as string[])];
}

/** A u32 option, `fallback` when absent. */
export function u32(method: string, o: Options, key: string, fallback?: number): number {
  const v = o[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw paramError(`${method}: ${key} must be a whole number from 0 to 4294967295, got ${show(v)}`);
  }
  return v;
}

/** A boolean option, `fallback` when absent. */
export function flag(method: string, o: Options, key: string, fallback: boolean): boolean {
  const v = o[key] ?? fallback;
  if (typeof v !== 'boolean') throw paramError(`${method}: ${key} must be true or false, got ${show(v)}`);
  return v;
}

/** A string map option (member attributes). */
export function strMap(method: string, o: Options, key: string): Record<string, string> {
  const v = o[key];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw paramError(`${method}: ${key} must be an object of strings, got ${show(v)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw paramError(`${method}: ${key}.${k} must be a string, got ${show(x)}`);
    Object.defineProperty(out, k, { value: x, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** The group's `ext`: a string as is, anything else as JSON (the seed passes `{info: ...}`). */
export function ext(method: string, o: Options, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  try {
    const json = JSON.stringify(v);
    if (json !== undefined) return json;
  } catch {
    // fall through
  }
  throw paramError(`${method}: ${key} must be a string or a JSON value, got ${show(v)}`);
}
