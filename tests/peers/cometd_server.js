'use strict';
// The CometD project's own Node server (npm `cometd-nodejs-server`) for cometd-tape tests,
// driven over stdin/stdout as faye_server.js drives Faye.
//
//   node cometd_server.js [port]      (port 0 or none = a free port)
//
// Server options from the environment, in milliseconds: COMETD_TIMEOUT (how long a /meta/connect
// is held, default 30000), COMETD_MAX_INTERVAL (how long a session lives without a /meta/connect,
// default 10000), COMETD_SWEEP_PERIOD (how often expired sessions are swept, default 997).
//
// Listens on 127.0.0.1 with the Bayeux endpoint at /cometd (long-polling only: this server has no
// WebSocket transport), then prints one line {"ready": true, "port": N}. After that every stdin
// line is a JSON command carrying an "id", and every command gets exactly one JSON line back on
// stdout carrying the same "id". Commands: publish, stream, stream_wait, stream_stop, clients,
// wait_subscribed, configure (see tests/peers/cometd_server.py). stdin EOF exits with status 0.
// Nothing else is ever written to stdout.

const http = require('http');
const { listen, requireCount, send, serveCommands, waitSubscribed } = require('./peer_commands');

let cometd;
try {
  cometd = require('cometd-nodejs-server');
} catch (err) {
  process.stderr.write(`cannot load cometd-nodejs-server (${err.message}): run \`npm ci --prefix tests\`\n`);
  process.stdout.write(JSON.stringify({ ready: false, error: 'cometd-nodejs-server not installed' }) + '\n');
  process.exit(3);
}

const MOUNT = '/cometd';
const requestedPort = Number.parseInt(process.argv[2] || '0', 10);

if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`bad port: ${process.argv[2]}\n`);
  process.exit(2);
}

function envMs(name, dflt) {
  const text = process.env[name];
  if (text === undefined || text === '') return dflt;
  const value = Number.parseInt(text, 10);
  if (!Number.isInteger(value) || value < 0) {
    process.stderr.write(`bad ${name}: ${text}\n`);
    process.exit(2);
  }
  return value;
}

const server = cometd.createCometDServer({
  timeout: envMs('COMETD_TIMEOUT', 30000),
  maxInterval: envMs('COMETD_MAX_INTERVAL', 10000),
  sweepPeriod: envMs('COMETD_SWEEP_PERIOD', 997),
});

const httpServer = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === MOUNT || path.startsWith(MOUNT + '/')) {
    server.handle(req, res);
    return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
});

// ---------------------------------------------------------------------------------------------
// Sessions and subscriptions, from the server's own events.

let handshakes = 0;
let disconnects = 0;
let expired = 0;
const subscriptions = new Map(); // session id -> Set(channel)
const subscribeLog = []; // {session, channel, next_seq, t_ms}: next_seq = the channel's next seq
const waiters = new Set();
const nextSeq = new Map(); // channel -> the seq the next stream message on it will carry

server.addListener('sessionAdded', () => {
  handshakes += 1;
});

server.addListener('sessionRemoved', (session, timeout) => {
  if (timeout) expired += 1;
  else disconnects += 1;
  subscriptions.delete(session.id);
});

server.addListener('subscribed', (channel, session) => {
  if (!subscriptions.has(session.id)) subscriptions.set(session.id, new Set());
  subscriptions.get(session.id).add(channel.name);
  // Emitted before the reply is written: every message published from here on must reach it.
  subscribeLog.push({
    session: session.id,
    channel: channel.name,
    next_seq: nextSeq.has(channel.name) ? nextSeq.get(channel.name) : null,
    t_ms: Date.now(),
  });
  for (const waiter of [...waiters]) waiter.check();
});

server.addListener('unsubscribed', (channel, session) => {
  const subs = subscriptions.get(session.id);
  if (!subs) return;
  subs.delete(channel.name);
  if (subs.size === 0) subscriptions.delete(session.id);
});

function subscriptionsSnapshot() {
  const out = {};
  for (const [id, subs] of subscriptions) out[id] = [...subs].sort();
  return out;
}

function subscribedTo(channels) {
  let n = 0;
  for (const subs of subscriptions.values()) {
    if (channels.every((c) => subs.has(c))) n += 1;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Publishing: channel.publish(null, data) is what the server does with any message a remote
// client publishes once accepted; each subscriber's queue keeps the order of the calls. A channel
// is looked up by name for every publish: the server's sweeper drops a channel without
// subscribers (every sweepPeriod), and a channel object kept from before would publish to no one.

function channelFor(name) {
  return server.getServerChannel(name) || server.createServerChannel(name);
}

function publishOne(channel, data) {
  return new Promise((resolve, reject) => {
    channel.publish(null, data, (failure) => {
      if (failure) reject(new Error(`publish to ${channel.name} failed: ${failure.message || failure}`));
      else resolve();
    });
  });
}

// Sequence-numbered streams: message k of a stream carries {seq: start + k, t_ms}, due k / rate s
// after the stream started (an absolute clock, checked every tick_ms), until `count` (if given)
// or stream_stop. Streams answer stream_wait/stream_stop with what they published.
const streams = new Map();
let streamIds = 0;

function streamSummary(stream) {
  return {
    stream: stream.id,
    channel: stream.name,
    published: stream.sent,
    first_seq: stream.start,
    next_seq: stream.start + stream.sent,
    elapsed_ms: Number(process.hrtime.bigint() - stream.startedNs) / 1e6,
    max_lag_ms: stream.maxLagMs,
    done: stream.done,
  };
}

function startStream(name, rate, start, count, size, tickMs) {
  const stream = {
    id: ++streamIds,
    name: name,
    start: start,
    sent: 0,
    startedNs: process.hrtime.bigint(),
    maxLagMs: 0,
    done: false,
    waiters: [],
  };
  const pad = size > 0 ? 'x'.repeat(size) : undefined;
  const finish = () => {
    clearInterval(stream.timer);
    stream.done = true;
    for (const resolve of stream.waiters.splice(0)) resolve(streamSummary(stream));
  };
  const tick = () => {
    const elapsedMs = Number(process.hrtime.bigint() - stream.startedNs) / 1e6;
    let due = Math.floor((elapsedMs / 1000) * rate) + 1;
    if (count !== null) due = Math.min(due, count);
    if (stream.sent < due) stream.maxLagMs = Math.max(stream.maxLagMs, elapsedMs - (stream.sent * 1000) / rate);
    // Looked up on every tick, as the server does for a remote publish: its sweeper removes a
    // channel nobody subscribes to, and a later subscribe makes a new one.
    const channel = due > stream.sent ? channelFor(name) : null;
    for (; stream.sent < due; stream.sent += 1) {
      const seq = start + stream.sent;
      nextSeq.set(name, seq + 1);
      const data = { seq: seq, t_ms: Date.now() };
      if (pad !== undefined) data.pad = pad;
      channel.publish(null, data);
    }
    if (count !== null && stream.sent >= count) finish();
  };
  stream.finish = finish;
  nextSeq.set(name, start);
  streams.set(stream.id, stream);
  stream.timer = setInterval(tick, tickMs);
  tick();
  return stream;
}

function requireChannel(cmd) {
  if (typeof cmd.channel !== 'string' || !cmd.channel.startsWith('/') || cmd.channel.startsWith('/meta/')) {
    throw new Error('"channel" must be a broadcast channel name starting with "/"');
  }
  return cmd.channel;
}

function requireStream(cmd) {
  const stream = streams.get(cmd.stream);
  if (!stream) throw new Error(`no stream ${JSON.stringify(cmd.stream)}`);
  return stream;
}

// ---------------------------------------------------------------------------------------------
// Commands

const OPTIONS = ['timeout', 'maxInterval', 'sweepPeriod', 'interval'];

const handlers = {
  async publish(cmd) {
    const channel = channelFor(requireChannel(cmd));
    if (!Array.isArray(cmd.data)) throw new Error('"data" must be a list of messages');
    for (const data of cmd.data) await publishOne(channel, data);
    return { published: cmd.data.length };
  },

  stream(cmd) {
    const name = requireChannel(cmd);
    const rate = cmd.rate;
    if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
      throw new Error('"rate" must be a number of messages a second > 0');
    }
    const start = cmd.start === undefined ? 0 : requireCount(cmd.start, 'start');
    const count = cmd.count === undefined || cmd.count === null ? null : requireCount(cmd.count, 'count');
    const size = cmd.size === undefined ? 0 : requireCount(cmd.size, 'size');
    const tickMs = cmd.tick_ms === undefined ? 5 : requireCount(cmd.tick_ms, 'tick_ms');
    if (tickMs < 1) throw new Error('"tick_ms" must be >= 1');
    for (const other of streams.values()) {
      if (!other.done && other.name === name) throw new Error(`a stream already runs on ${name}`);
    }
    return streamSummary(startStream(name, rate, start, count, size, tickMs));
  },

  stream_wait(cmd) {
    const stream = requireStream(cmd);
    if (stream.done) return streamSummary(stream);
    return new Promise((resolve) => stream.waiters.push(resolve));
  },

  stream_stop(cmd) {
    const stream = requireStream(cmd);
    if (!stream.done) stream.finish();
    return streamSummary(stream);
  },

  clients() {
    return {
      handshakes: handshakes,
      disconnects: disconnects,
      expired: expired,
      subscriptions: subscriptionsSnapshot(),
      subscribe_log: subscribeLog,
      options: Object.fromEntries(OPTIONS.map((k) => [k, server.options[k]])),
    };
  },

  // Server options are read on every use, so a change applies to the next connect or sweep.
  configure(cmd) {
    for (const key of Object.keys(cmd)) {
      if (key === 'cmd' || key === 'id') continue;
      if (!OPTIONS.includes(key)) throw new Error(`unknown option ${JSON.stringify(key)}`);
      server.options[key] = requireCount(cmd[key], key);
    }
    return { options: Object.fromEntries(OPTIONS.map((k) => [k, server.options[k]])) };
  },

  wait_subscribed(cmd) {
    return waitSubscribed(cmd, { subscribedTo, subscriptionsSnapshot, waiters, what: 'sessions' });
  },
};

// ---------------------------------------------------------------------------------------------
// Start: listen (retrying briefly if a restart races the old socket), announce, read commands.

function onListening() {
  send({ ready: true, port: httpServer.address().port });
  serveCommands(handlers);
}

listen(httpServer, requestedPort, onListening);
