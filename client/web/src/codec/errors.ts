/**
 * The one error the codec throws: what is wrong, where in the value (`path`) and where in
 * the bytes (`offset`), so a malformed frame is reported, never silently misread.
 */

/** What kind of malformation was found. */
export type CodecErrorKind =
  /** The bytes end before the value does. */
  | 'truncated'
  /** A frame's length prefix (or an encoded body) is over the limit in force. */
  | 'tooLarge'
  /** An enum tag, option tag or result tag with no such variant. */
  | 'badVariant'
  /** A string's bytes are not UTF-8 (decoding), or a string is not well-formed UTF-16 (encoding). */
  | 'badUtf8'
  /** A varint in a form wider than its type allows, or a reserved marker byte. */
  | 'varintOverflow'
  /** A bool byte other than 0 or 1. */
  | 'badBool'
  /** A frame body with bytes left after its value. */
  | 'trailing'
  /** A number JS cannot hold exactly (an i64 beyond 2^53 - 1), or out of its type's range. */
  | 'outOfRange'
  /** A value of the wrong shape given to the encoder. */
  | 'badValue'
  /** A map with the same key twice. */
  | 'duplicateKey';

export class CodecError extends Error {
  override name = 'CodecError';

  constructor(
    readonly kind: CodecErrorKind,
    /** What is wrong, without the location. */
    readonly detail: string,
    /** The path inside the value, e.g. `.request.groupId` (filled in as the error unwinds). */
    readonly path: string = '',
    /** Byte offset in the frame body where the problem was found (-1 when encoding). */
    readonly offset: number = -1,
    /** The type being decoded or encoded, e.g. `ServerFrame`. */
    readonly type: string = '',
  ) {
    super(CodecError.describe(kind, detail, path, offset, type));
  }

  /** The same error located one level further out (`segment` goes in front of the path). */
  within(segment: string): CodecError {
    return new CodecError(this.kind, this.detail, segment + this.path, this.offset, this.type);
  }

  /** The same error naming the type it happened in. */
  inType(type: string): CodecError {
    return new CodecError(this.kind, this.detail, this.path, this.offset, type);
  }

  private static describe(
    kind: CodecErrorKind,
    detail: string,
    path: string,
    offset: number,
    type: string,
  ): string {
    const where = type + path;
    const at = offset >= 0 ? ` (at byte ${offset})` : '';
    return `${where ? where + ': ' : ''}${detail}${at} [${kind}]`;
  }
}

/** Prefixes `segment` to the path of a codec error thrown by `f`. */
export function at<T>(segment: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof CodecError ? e.within(segment) : e;
  }
}
