/**
 * Convoke's web SDK: the wire codec, and the connection built on it (the seed's group
 * calls over any bidirectional byte stream).
 */
export * from './codec/index.js';
export * from './connection/index.js';
