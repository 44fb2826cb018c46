import { TlsError } from './errors.ts';

/** One DER element: its identifier octet and the bounds of its contents within the input. */
export interface DerElement {
  /** The single identifier octet (class, constructed bit, tag number ≤ 30). */
  readonly tag: number;
  /** Offset of the first content byte. */
  readonly start: number;
  /** Offset one past the last content byte. */
  readonly end: number;
}

/** Universal and context-specific identifier octets the certificate readers use. */
export const DER_TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  SEQUENCE: 0x30,
  /** `[0] EXPLICIT`, constructed (TBSCertificate.version). */
  CONTEXT_0_CONSTRUCTED: 0xa0,
  /** `[3] EXPLICIT`, constructed (TBSCertificate.extensions). */
  CONTEXT_3_CONSTRUCTED: 0xa3,
} as const;

// Certificates are far below this; a longer length field can only be hostile or corrupt.
const MAX_LENGTH_OCTETS = 4;

/**
 * A strict reader over a DER byte range: definite lengths only, minimal length encodings, no
 * high tag numbers, no element running past its parent. Every violation throws
 * `TlsError('CERTIFICATE_MALFORMED')` naming the offset, never returns a partial result.
 */
export class DerReader {
  readonly #buf: Uint8Array;
  #pos: number;
  readonly #end: number;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    if (start < 0 || end > buf.length || start > end) {
      throw new TlsError(
        'CERTIFICATE_MALFORMED',
        `der range ${start}..${end} is outside a ${buf.length}-byte input`,
      );
    }
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  /** A reader over the contents of `el` (which must come from the same buffer). */
  static within(buf: Uint8Array, el: DerElement): DerReader {
    return new DerReader(buf, el.start, el.end);
  }

  get done(): boolean {
    return this.#pos >= this.#end;
  }

  /** The identifier octet of the next element, or undefined at the end; does not advance. */
  peekTag(): number | undefined {
    return this.done ? undefined : this.#byte(this.#pos);
  }

  /** Reads the next element of any tag. */
  next(): DerElement {
    const at = this.#pos;
    const tag = this.#byte(at);
    if ((tag & 0x1f) === 0x1f) {
      throw new TlsError('CERTIFICATE_MALFORMED', `der element at offset ${at} uses a multi-byte tag`);
    }
    let pos = at + 1;
    const first = this.#byte(pos++);
    let length: number;
    if (first < 0x80) {
      length = first;
    } else {
      const octets = first & 0x7f;
      if (octets === 0) {
        throw new TlsError('CERTIFICATE_MALFORMED', `der element at offset ${at} has an indefinite length`);
      }
      if (octets > MAX_LENGTH_OCTETS) {
        throw new TlsError(
          'CERTIFICATE_MALFORMED',
          `der element at offset ${at} has a ${octets}-octet length`,
        );
      }
      length = 0;
      for (let i = 0; i < octets; i++) length = length * 256 + this.#byte(pos++);
      // DER: the long form only when needed, and without leading zero octets.
      if (length < 0x80 || length < 256 ** (octets - 1)) {
        throw new TlsError('CERTIFICATE_MALFORMED', `der element at offset ${at} has a non-minimal length`);
      }
    }
    const end = pos + length;
    if (end > this.#end) {
      throw new TlsError(
        'CERTIFICATE_MALFORMED',
        `der element at offset ${at} claims ${length} bytes but only ${this.#end - pos} remain`,
      );
    }
    this.#pos = end;
    return { tag, start: pos, end };
  }

  /** Reads the next element and requires its identifier octet to be `tag`. */
  expect(tag: number, what: string): DerElement {
    const at = this.#pos;
    const el = this.next();
    if (el.tag !== tag) {
      throw new TlsError(
        'CERTIFICATE_MALFORMED',
        `expected ${what} (tag 0x${tag.toString(16)}) at offset ${at}, found tag 0x${el.tag.toString(16)}`,
      );
    }
    return el;
  }

  /** Requires that nothing follows; trailing bytes inside a structure are a malformation. */
  expectEnd(what: string): void {
    if (!this.done) {
      throw new TlsError('CERTIFICATE_MALFORMED', `unexpected bytes after ${what} at offset ${this.#pos}`);
    }
  }

  #byte(at: number): number {
    if (at >= this.#end) {
      throw new TlsError('CERTIFICATE_MALFORMED', `der input ends early at offset ${at}`);
    }
    return this.#buf[at] as number;
  }
}
