'use strict';
// loopback-preload.cjs: loaded with `node -r ./loopback-preload.cjs main.js`.
//
// kinesis-mock has no option for the address it listens on (it listens on the
// wildcard address). This preload wraps `net.Server.prototype.listen` (which
// `tls`, `http`, `https` and `http2` servers inherit) so that every TCP
// listener of the process binds the loopback address instead, whatever host
// the caller asked for. Unix-socket paths and inherited handles are left as
// they are.
//
// Each listener that comes up is reported on stderr as one line,
//
//   loopback-preload: bound 127.0.0.1:PORT
//   loopback-preload: failed 127.0.0.1:PORT CODE
//
// which the test bed reads from the child's log to know that the server got
// the port it was given (and not that some other process holds it).

const net = require('net');

const LOOPBACK = '127.0.0.1';

function report(line) {
  process.stderr.write(`loopback-preload: ${line}\n`);
}

// Turns the many shapes of `listen(...)` arguments into `[options, callback]`
// with the host forced to loopback, or `null` for shapes that are not TCP
// (a Unix socket path, a handle or file descriptor).
function loopbackArgs(args) {
  const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
  const rest = callback ? args.slice(0, -1) : args.slice();
  const first = rest[0];

  if (first !== null && typeof first === 'object') {
    if (first.path !== undefined || first.fd !== undefined || first._handle !== undefined ||
        first.handle !== undefined) {
      return null;
    }
    return [{ ...first, host: LOOPBACK, ipv6Only: false }, callback];
  }
  if (typeof first === 'string' && !/^\d+$/.test(first)) {
    return null; // listen(path, ...): a Unix socket.
  }
  // listen([port[, host[, backlog]]][, callback])
  const options = { port: first === undefined || first === null ? 0 : Number(first), host: LOOPBACK };
  const backlog = typeof rest[1] === 'number' ? rest[1] : rest[2];
  if (typeof backlog === 'number') {
    options.backlog = backlog;
  }
  return [options, callback];
}

const originalListen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const forced = loopbackArgs(args);
  if (forced === null) {
    return originalListen.apply(this, args);
  }
  const [options, callback] = forced;
  const onListening = () => {
    this.removeListener('error', onError);
    const address = this.address();
    report(`bound ${address.address}:${address.port}`);
  };
  const onError = (err) => {
    this.removeListener('listening', onListening);
    report(`failed ${LOOPBACK}:${options.port} ${err && err.code}`);
    if (this.listenerCount('error') === 0) {
      throw err; // Nobody else listens: behave as an unhandled 'error' would.
    }
  };
  this.once('listening', onListening);
  this.once('error', onError);
  return callback ? originalListen.call(this, options, callback) : originalListen.call(this, options);
};
