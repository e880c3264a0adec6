// The Cuirass log channel (cuirass.md §1.9), one import for both ends: the
// receiver (server), the upload (worker) and what they share.

export {
  logFileName,
  LogProtocolError,
  LogTimeoutError,
} from "./log_header.ts";
export {
  corruptionMarker,
  endedEarlyMarker,
  type LogReceiver,
  type LogReceiverOptions,
  startLogReceiver,
  truncationMarker,
} from "./log_receiver.ts";
export {
  type LogUpload,
  type LogUploadOptions,
  openLogUpload,
} from "./log_upload.ts";
