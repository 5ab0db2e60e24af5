'use strict';
// The CometD project's own JavaScript client (npm `cometd` 9 on `cometd-nodejs-client` 2) for
// cometd-tape tests, reporting everything it sees over stdout.
//
//   node cometd_client.js URL TRANSPORT CHANNEL [CHANNEL...]
//
// TRANSPORT is `websocket` or `long-polling`: every other transport is unregistered, so the
// client handshakes and connects over that one alone and never falls back. WebSocket comes from
// the `ws` package, which cometd-nodejs-client's adapt() installs as window.WebSocket.
// COMETD_CLIENT_CONFIG is a JSON object merged into cometd.configure() (maxNetworkDelay,
// backoffIncrement, maxBackoff, logLevel...). COMETD_CLIENT_TRACE=1 also reports every message
// the client sends or receives, as an extension sees it. CometD's own log goes to stderr.
//
// Subscriptions follow CometD's documented idiom: the client forgets its subscriptions at every
// handshake, so they are made (in one batch) in the /meta/handshake listener, on each success.
//
// Every stdout line is one JSON object, with "t" (process.hrtime in ms: CLOCK_MONOTONIC on
// Linux, the clock of Python's time.monotonic()) and "wall" (Date.now()):
//   {"subscribed": [channels], "client_id", "connection_type", "handshake": n}
//        each time every channel is confirmed after the n-th successful handshake (1, 2, ...)
//   {"channel", "data", "id"?}            one per delivered message ("id" when it had one)
//   {"event": "/meta/handshake" | "/meta/connect" | "/meta/disconnect" | "/meta/subscribe" |
//             "/meta/unsubscribe" | "/meta/unsuccessful", "channel", "successful", "error"?,
//    "advice"?, "client_id"?, "subscription"?, "reestablish"?, "failure"?, "state"}
//        one per reply the client hands its listener on that channel ("failure": the
//        transport's {reason, http_code, websocket_code, exception} when no reply came;
//        "state": the client's own getStatus() then)
//   {"event": "transport_failure", "channel", "cause", "action", "delay", "interval",
//    "failure"?}
//        the client's decision after a failed or unsuccessful meta message: action retry,
//        handshake or none, after delay + interval ms (onTransportFailure; interval: advice)
//   {"event": "transport_exception", "from", "to", "reason"?}   transport negotiation failed
//   {"event": "websocket", "what": "open" | "close" | "error", "code"?, "reason"?}
//        what each WebSocket the client opens goes through (its close code, from the `ws` socket)
//   {"event": "status", "status": "handshaken" | "rehandshaken" | "connected" | "broken" |
//             "disconnected"}        the documented connection-status idiom's changes, and
//        "disconnected" when the client gives up (a failure it does not retry)
//   {"event": "stopped", "ok", "reason"?}    at shutdown, after the client's /meta/disconnect
//   {"wire": "out" | "in", "via": transport, "message"}   only with COMETD_CLIENT_TRACE=1
//   {"error": "text"}
// stdin EOF, SIGTERM or SIGINT: disconnect, then exit with status 0.

const TRANSPORTS = ['websocket', 'long-polling'];
const DISCONNECT_GRACE_MS = 2000;

const [url, transport, ...channels] = process.argv.slice(2);
if (!url || !TRANSPORTS.includes(transport) || channels.length === 0) {
  process.stderr.write('usage: node cometd_client.js URL websocket|long-polling CHANNEL [CHANNEL...]\n');
  process.exit(2);
}
const trace = process.env.COMETD_CLIENT_TRACE === '1';

function now() {
  return { t: Number(process.hrtime.bigint()) / 1e6, wall: Date.now() };
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function exit(code) {
  process.stdout.write('', () => process.exit(code));
}

function readConfig() {
  const text = process.env.COMETD_CLIENT_CONFIG;
  if (!text) return {};
  const config = JSON.parse(text);
  if (!config || typeof config !== 'object' || Array.isArray(config)) {
    throw new Error('COMETD_CLIENT_CONFIG must be a JSON object');
  }
  return config;
}

// stdout carries JSON lines only: CometD logs through window.console (info and debug would go to
// stdout), and the adapter's XMLHttpRequest through console.log.
function quietConsole() {
  const stderr = new console.Console(process.stderr);
  for (const level of ['log', 'info', 'debug', 'warn', 'error', 'trace']) {
    console[level] = stderr[level].bind(stderr);
  }
  global.window.console = console;
}

// A transport failure holds its conduit and the failed message (cyclic, large): keep the facts.
function failureFacts(failure) {
  if (!failure) return undefined;
  const facts = { connection_type: failure.connectionType };
  if (failure.reason !== undefined) facts.reason = String(failure.reason);
  if (failure.httpCode !== undefined) facts.http_code = failure.httpCode;
  if (failure.websocketCode !== undefined) facts.websocket_code = failure.websocketCode;
  if (failure.exception !== undefined) facts.exception = String(failure.exception);
  return facts;
}

function metaLine(listener, message, cometd) {
  const line = { event: listener, ...now(), channel: message.channel, successful: message.successful === true };
  if (message.error !== undefined) line.error = message.error;
  if (message.advice !== undefined) line.advice = message.advice;
  if (message.clientId !== undefined) line.client_id = message.clientId;
  if (message.subscription !== undefined) line.subscription = message.subscription;
  if (message.reestablish !== undefined) line.reestablish = message.reestablish;
  if (message.failure !== undefined) line.failure = failureFacts(message.failure);
  line.state = cometd.getStatus();
  return line;
}

// Status lines, only when the status changes.
let lastStatus = null;
function status(value) {
  if (value !== lastStatus) send({ event: 'status', ...now(), status: value });
  lastStatus = value;
}

function report(cometd) {
  for (const channel of ['/meta/handshake', '/meta/connect', '/meta/disconnect', '/meta/subscribe',
    '/meta/unsubscribe', '/meta/unsuccessful']) {
    cometd.addListener(channel, (message) => send(metaLine(channel, message, cometd)));
  }
  // Wrapped on the instance: the client calls this.onTransportFailure() with its decision.
  const decide = cometd.onTransportFailure.bind(cometd);
  cometd.onTransportFailure = (message, failureInfo, handler) =>
    decide(message, failureInfo, (info) => {
      send({
        event: 'transport_failure', ...now(), channel: message.channel, cause: info.cause,
        action: info.action, delay: info.delay || 0, interval: cometd.getAdvice().interval || 0,
        failure: failureFacts(message.failure),
      });
      handler(info);
      if (cometd.isDisconnected()) status('disconnected'); // it gave up (action none)
    });
  cometd.onTransportException = (failure, from, to) =>
    send({ event: 'transport_exception', ...now(), from, to, reason: failure && failure.reason });
}

// The connection-status idiom of CometD's documentation, on /meta/connect and /meta/handshake.
function watchStatus(cometd) {
  let connected = false;
  cometd.addListener('/meta/handshake', (message) => {
    if (message.successful) status(message.reestablish ? 'rehandshaken' : 'handshaken');
  });
  cometd.addListener('/meta/connect', (message) => {
    if (cometd.isDisconnected()) {
      connected = false;
      status('disconnected');
      return;
    }
    const was = connected;
    connected = message.successful === true;
    if (!was && connected) status('connected');
    else if (was && !connected) status('broken');
  });
  cometd.addListener('/meta/disconnect', (message) => {
    if (message.successful) {
      connected = false;
      status('disconnected');
    }
  });
}

function deliver(message) {
  const line = { ...now(), channel: message.channel, data: message.data };
  if (message.id !== undefined) line.id = message.id;
  send(line);
}

// Subscribe to every channel after each successful handshake, in one batch (one request).
function subscribeOnHandshake(cometd) {
  let handshakes = 0;
  cometd.addListener('/meta/handshake', (reply) => {
    if (!reply.successful) return;
    const handshake = ++handshakes;
    const pending = new Set(channels);
    let failed = false;
    const confirm = (answer) => {
      if (failed || handshake !== handshakes) return;
      if (!answer.successful) {
        failed = true;
        send({ error: `subscribe to ${answer.subscription} failed: ${answer.error || 'no reply'}`, ...now() });
        return;
      }
      pending.delete(answer.subscription);
      if (pending.size > 0) return;
      send({
        subscribed: channels, client_id: cometd.getClientId(),
        connection_type: cometd.getTransport().type, handshake, ...now(),
      });
    };
    cometd.batch(() => {
      for (const channel of channels) cometd.subscribe(channel, deliver, confirm);
    });
  });
}

// CometD's WebSocket transport reports a failed upgrade as close 1000 "Error": report what the
// `ws` socket itself saw, each time the transport opens one.
function watchWebSockets() {
  const Base = global.window.WebSocket;
  global.window.WebSocket = class extends Base {
    constructor(...args) {
      super(...args);
      this.on('open', () => send({ event: 'websocket', ...now(), what: 'open' }));
      this.on('error', (err) => send({ event: 'websocket', ...now(), what: 'error', reason: err.message }));
      this.on('close', (code, reason) =>
        send({ event: 'websocket', ...now(), what: 'close', code, reason: String(reason) }));
    }
  };
}

function traceExtension(cometd) {
  const via = () => (cometd.getTransport() ? cometd.getTransport().type : null);
  return {
    outgoing(message) {
      send({ wire: 'out', via: via(), ...now(), message });
      return message;
    },
    incoming(message) {
      send({ wire: 'in', via: via(), ...now(), message });
      return message;
    },
  };
}

function only(cometd, type) {
  for (const other of cometd.getTransportTypes()) {
    if (other !== type) cometd.unregisterTransport(other);
  }
  if (!cometd.findTransport(type)) throw new Error(`this client has no ${type} transport`);
}

// ---------------------------------------------------------------------------------------------
// Shutdown: send /meta/disconnect (unless disconnected), wait briefly for its reply, exit 0.

function shutdown(cometd) {
  let stopping = false;
  return () => {
    if (stopping) return;
    stopping = true;
    if (!cometd || cometd.isDisconnected()) {
      send({ event: 'stopped', ...now(), ok: false, reason: 'not connected' });
      exit(0);
      return;
    }
    const timer = setTimeout(() => {
      send({ event: 'stopped', ...now(), ok: false, reason: `no reply in ${DISCONNECT_GRACE_MS} ms` });
      exit(0);
    }, DISCONNECT_GRACE_MS);
    cometd.disconnect((reply) => {
      clearTimeout(timer);
      const line = { event: 'stopped', ...now(), ok: reply.successful === true };
      if (!reply.successful) line.reason = reply.error || JSON.stringify(failureFacts(reply.failure));
      send(line);
      exit(0);
    });
  };
}

function onExit(stop) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume(); // stdin content is ignored; only its end matters
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

process.on('uncaughtException', (err) => {
  send({ error: `uncaught: ${err && err.stack ? err.stack : err}`, ...now() });
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  exit(1);
});

async function main() {
  let adapt, CometD;
  try {
    ({ adapt } = await import('cometd-nodejs-client'));
    ({ CometD } = await import('cometd'));
  } catch (err) {
    process.stderr.write(`cannot load cometd (${err.message}): run \`npm ci --prefix tests\`\n`);
    send({ error: 'cometd or cometd-nodejs-client not installed' });
    exit(3);
    return;
  }
  adapt();
  quietConsole();
  watchWebSockets();
  const cometd = new CometD();
  only(cometd, transport);
  cometd.configure({ ...readConfig(), url });
  if (trace) cometd.registerExtension('trace', traceExtension(cometd));
  report(cometd);
  watchStatus(cometd);
  subscribeOnHandshake(cometd);
  onExit(shutdown(cometd));
  cometd.handshake();
}

main().catch((err) => {
  send({ error: err && err.message ? err.message : String(err), ...now() });
  exit(1);
});
