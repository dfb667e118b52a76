'use strict';
// Loaded with NODE_OPTIONS=--require: listens on the IPC channel the way PM2's
// process container does, which keeps the event loop alive.
process.on('message', () => {});
