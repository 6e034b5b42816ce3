/** Convoke's web SDK. The codec is the base; the connection is built on it. */
export * from './codec/index.js';
