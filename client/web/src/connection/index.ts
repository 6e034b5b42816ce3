export { Connection } from './connection.js';
export type * from './connection.js';
export { ConnectionError, ConvokeError, ProtocolError, TimeoutError } from './errors.js';
export { PushReader } from './pushes.js';
export { Session, type ByteStream, type HelloOptions, type SessionOptions } from './session.js';
export {
  defaultResetReason,
  type Progress,
  type ResetReason,
  type StreamOpener,
  type Transfer,
  type UploadFile,
} from './files.js';
export {
  connect,
  webTransportDialer,
  type ConnectOptions,
  type ConnectSettings,
  type WebTransportConstructor,
  type WebTransportLike,
} from './webtransport.js';
export { rotatingDialer, serverList, type ServerList } from './servers.js';
export { RESUME_WITHIN_MS } from './transfer_resume.js';
export { backoffDelay, finalReason, retrySafe, CLOSE, type ReconnectPolicy } from './reconnect.js';
export { Sequencer } from './resume.js';
