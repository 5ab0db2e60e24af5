'use strict';
// A real Faye (npm `faye`) Bayeux *client* for cometd-tape tests, reporting over stdout.
//
//   node faye_client.js URL TRANSPORT CHANNEL [CHANNEL...]
//
// TRANSPORT is `websocket` or `long-polling`. Faye always handshakes over HTTP long-polling
// first; with `websocket` it then upgrades, with `long-polling` WebSocket is disabled.
// FAYE_CLIENT_TRACE=1 also reports every Bayeux message the client sends or receives.
//
// Every stdout line is one JSON object:
//   {"subscribed": [channels], "client_id": id, "connection_type": type, "t": ms, "wall": ms}
//                  once, when every subscription is confirmed
//   {"t": ms, "wall": ms, "channel": ch, "data": data, "id": id}
//                  one per delivered message ("id" is the Bayeux message id, when it had one)
//   {"event": "transport:up" | "transport:down" | "disconnected", "t": ms, "wall": ms, ...}
//   {"error": "text", "t": ms, "wall": ms}
//   {"wire": "out" | "in", "via": connection type, "t": ms, "wall": ms, "messages": [...]}
//                  only with FAYE_CLIENT_TRACE=1: one per HTTP request/response body or
//                  WebSocket frame, as Faye's transport sends or parses it
// "t" is process.hrtime in ms: CLOCK_MONOTONIC on Linux, the clock of Python's time.monotonic().
// "wall" is Date.now(). stdin EOF, SIGTERM or SIGINT: disconnect, then exit with status 0.

let faye;
try {
  faye = require('faye');
} catch (err) {
  process.stderr.write(`cannot load faye (${err.message}): run \`npm ci --prefix tests\`\n`);
  process.stdout.write(JSON.stringify({ error: 'faye not installed' }) + '\n');
  process.exit(3);
}

const TRANSPORTS = ['websocket', 'long-polling'];
const DISCONNECT_GRACE_MS = 2000;

const [url, transport, ...channels] = process.argv.slice(2);
if (!url || !TRANSPORTS.includes(transport) || channels.length === 0) {
  process.stderr.write('usage: node faye_client.js URL websocket|long-polling CHANNEL [CHANNEL...]\n');
  process.exit(2);
}
const trace = process.env.FAYE_CLIENT_TRACE === '1';

function now() {
  return { t: Number(process.hrtime.bigint()) / 1e6, wall: Date.now() };
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorText(err) {
  if (err && err.message) return err.message;
  if (err && err.code !== undefined) return `${err.code}: ${err.params || ''}`;
  return String(err);
}

const client = new faye.Client(url, { timeout: 60 });
client.disable('eventsource');
client.disable('callback-polling');
if (transport === 'long-polling') client.disable('websocket');

// Faye hands a subscriber only (channel, data); this extension sees the whole message just
// before it is delivered (synchronously), so the delivered line can carry the message id.
let lastIncoming = null;
client.addExtension({
  incoming(message, callback) {
    lastIncoming = message;
    callback(message);
  },
});

// Tracing hooks the transports, not extensions: Faye batches messages after the outgoing
// extensions ran, and only then adds advice {timeout: 0} to a /meta/connect that shares its
// batch with other messages. request() gets the batch as it goes on the wire.
if (trace) {
  const Transport = require('faye/src/transport/transport');
  for (const path of ['faye/src/transport/node_http', 'faye/src/transport/web_socket']) {
    const proto = require(path).prototype;
    const request = proto.request;
    proto.request = function (messages) {
      send({ wire: 'out', via: this.connectionType, ...now(), messages });
      return request.apply(this, arguments);
    };
  }
  const receive = Transport.prototype._receive;
  Transport.prototype._receive = function (replies) {
    if (replies) send({ wire: 'in', via: this.connectionType, ...now(), messages: [].concat(replies) });
    return receive.apply(this, arguments);
  };
}

client.on('transport:up', () => send({ event: 'transport:up', ...now() }));
client.on('transport:down', () => send({ event: 'transport:down', ...now() }));

function deliver(channel, data) {
  const line = { ...now(), channel, data };
  const message = lastIncoming;
  if (message && message.channel === channel && message.data === data && message.id !== undefined) {
    line.id = message.id;
  }
  send(line);
}

// A Faye Subscription's then() swallows failures unless given an errback, hence the wrapper.
const confirmed = channels.map(
  (channel) =>
    new Promise((resolve, reject) => {
      client
        .subscribe(channel)
        .withChannel(deliver)
        .then(resolve, (err) => reject(new Error(`subscribe to ${channel} failed: ${errorText(err)}`)));
    }),
);

Promise.all(confirmed).then(
  () =>
    send({
      subscribed: channels,
      client_id: client._dispatcher.clientId,
      connection_type: client._dispatcher.connectionType,
      ...now(),
    }),
  (err) => send({ error: errorText(err), ...now() }),
);

// ---------------------------------------------------------------------------------------------
// Shutdown: send /meta/disconnect (if connected), wait briefly for its reply, flush, exit 0.

let stopping = false;

function exit(status) {
  process.stdout.write('', () => process.exit(status));
}

function shutdown() {
  if (stopping) return;
  stopping = true;
  const promise = client.disconnect(); // undefined unless the client is connected
  if (!promise) {
    send({ event: 'disconnected', ok: false, reason: 'not connected', ...now() });
    exit(0);
    return;
  }
  const timer = setTimeout(() => {
    send({ event: 'disconnected', ok: false, reason: `no reply in ${DISCONNECT_GRACE_MS} ms`, ...now() });
    exit(0);
  }, DISCONNECT_GRACE_MS);
  promise.then(
    () => {
      clearTimeout(timer);
      send({ event: 'disconnected', ok: true, ...now() });
      exit(0);
    },
    (err) => {
      clearTimeout(timer);
      send({ event: 'disconnected', ok: false, reason: errorText(err), ...now() });
      exit(0);
    },
  );
}

process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume(); // stdin content is ignored; only its end matters
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('uncaughtException', (err) => {
  send({ error: `uncaught: ${err && err.stack ? err.stack : err}`, ...now() });
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  exit(1);
});
