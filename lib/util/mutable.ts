/**
 * `T` without `readonly`: for building a frame field by field (optional fields set only when
 * present), which per-message code does instead of spreading one object into another.
 */
export type Mutable<T> = { -readonly [K in keyof T]: T[K] };
