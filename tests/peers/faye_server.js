'use strict';
// A real Faye (npm `faye`) Bayeux server for cometd-tape tests, driven over stdin/stdout.
//
//   node faye_server.js [port]      (port 0 or none = a free port; FAYE_TIMEOUT = seconds, default 60)
//   FAYE_TLS_CERT, FAYE_TLS_KEY: serve HTTPS with them; FAYE_TLS_CLIENT_CA: and require a client
//   certificate signed by that CA
//   FAYE_REPLAY=1: the Salesforce-style replay extension (see installReplay below)
//
// Listens on 127.0.0.1 with the Bayeux endpoint mounted at /cometd, then prints one line
// {"ready": true, "port": N}. After that every stdin line is a JSON command carrying an "id",
// and every command gets exactly one JSON line back on stdout carrying the same "id".
// Commands: publish, gws, blast, pace, clients, wait_subscribed (see tests/peers/faye.py),
// kill_sessions, and with FAYE_REPLAY=1 replay_history.
// stdin EOF exits with status 0. Nothing else is ever written to stdout.

const fs = require('fs');
const http = require('http');
const https = require('https');
const { listen, requireCount, send, serveCommands, waitSubscribed } = require('./peer_commands');

let faye;
try {
  faye = require('faye');
} catch (err) {
  process.stderr.write(`cannot load faye (${err.message}): run \`npm ci --prefix tests\`\n`);
  process.stdout.write(JSON.stringify({ ready: false, error: 'faye not installed' }) + '\n');
  process.exit(3);
}

const MOUNT = '/cometd';
const requestedPort = Number.parseInt(process.argv[2] || '0', 10);
const timeout = Number.parseFloat(process.env.FAYE_TIMEOUT || '60');

if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`bad port: ${process.argv[2]}\n`);
  process.exit(2);
}
if (!(timeout > 0)) {
  process.stderr.write(`bad FAYE_TIMEOUT: ${process.env.FAYE_TIMEOUT}\n`);
  process.exit(2);
}

const bayeux = new faye.NodeAdapter({ mount: MOUNT, timeout: timeout });
function notFound(req, res) {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
}
// HTTPS when FAYE_TLS_CERT and FAYE_TLS_KEY name PEM files; with FAYE_TLS_CLIENT_CA too, every
// client must present a certificate signed by that CA (mutual TLS).
let server;
if (process.env.FAYE_TLS_CERT) {
  const tls = {
    cert: fs.readFileSync(process.env.FAYE_TLS_CERT),
    key: fs.readFileSync(process.env.FAYE_TLS_KEY),
  };
  if (process.env.FAYE_TLS_CLIENT_CA) {
    tls.ca = fs.readFileSync(process.env.FAYE_TLS_CLIENT_CA);
    tls.requestCert = true;
    tls.rejectUnauthorized = true;
  }
  server = https.createServer(tls, notFound);
} else {
  server = http.createServer(notFound);
}
bayeux.attach(server);

// ---------------------------------------------------------------------------------------------
// Client and subscription tracking (Faye's server events). The in-process publishing client
// (bayeux.getClient()) handshakes too; it is excluded from every count.

const client = bayeux.getClient();
let ready = false;
let internalIdAtStart = null;
let handshakes = 0;
let disconnects = 0;
const live = new Set();
const subscriptions = new Map(); // clientId -> Set(channel)
const waiters = new Set();

function isInternal(clientId) {
  const current = client._dispatcher && client._dispatcher.clientId;
  return clientId === internalIdAtStart || (current && clientId === current);
}

bayeux.on('handshake', (clientId) => {
  if (!ready && internalIdAtStart === null) {
    internalIdAtStart = clientId;
    return;
  }
  if (isInternal(clientId)) return;
  handshakes += 1;
  live.add(clientId);
});

bayeux.on('disconnect', (clientId) => {
  if (isInternal(clientId)) return;
  if (live.delete(clientId)) disconnects += 1;
  subscriptions.delete(clientId);
});

bayeux.on('subscribe', (clientId, channel) => {
  if (isInternal(clientId)) return;
  if (!subscriptions.has(clientId)) subscriptions.set(clientId, new Set());
  subscriptions.get(clientId).add(channel);
  for (const waiter of [...waiters]) waiter.check();
});

bayeux.on('unsubscribe', (clientId, channel) => {
  const subs = subscriptions.get(clientId);
  if (!subs) return;
  subs.delete(channel);
  if (subs.size === 0) subscriptions.delete(clientId);
});

function subscriptionsSnapshot() {
  const out = {};
  for (const [clientId, subs] of subscriptions) out[clientId] = [...subs].sort();
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
// The Salesforce-style replay extension (FAYE_REPLAY=1), as Salesforce's Streaming API behaves:
// every successful handshake reply says ext.replay: true; every event published through the
// server (the `publish` command: not `blast --via engine` or `pace`, which skip extensions) gets
// data.event.replayId = 1, 2, 3... per channel and is retained; a /meta/subscribe carrying
// ext.replay {channel: id} gets, for each channel it names, the retained events after id (-2:
// all of them; -1 or none: nothing retained), queued before anything published later.

const replay = { history: new Map(), pending: new Map(), resent: 0 };

function retainedAfter(channel, from) {
  if (from === -1 || from === undefined) return [];
  return (replay.history.get(channel) || []).filter((m) => from === -2 || m.data.event.replayId > from);
}

function installReplay() {
  const memory = bayeux._server._engine._engine; // the in-memory engine: per-client queues
  bayeux.addExtension({
    incoming(message, callback) {
      const channel = message.channel;
      if (channel === '/meta/subscribe' && message.ext && message.ext.replay) {
        for (const name of [].concat(message.subscription || [])) {
          replay.pending.set(`${message.clientId} ${name}`, message.ext.replay[name]);
        }
      } else if (!channel.startsWith('/meta/') && message.data && typeof message.data === 'object') {
        const list = replay.history.get(channel) || [];
        replay.history.set(channel, list);
        message.data.event = Object.assign({}, message.data.event, { replayId: list.length + 1 });
        list.push({ channel: channel, data: message.data, id: message.id });
      }
      callback(message);
    },
    outgoing(message, callback) {
      if (message.channel === '/meta/handshake' && message.successful) {
        message.ext = Object.assign({}, message.ext, { replay: true });
      } else if (message.channel === '/meta/subscribe') {
        for (const name of [].concat(message.subscription || [])) {
          const key = `${message.clientId} ${name}`;
          const from = replay.pending.get(key);
          replay.pending.delete(key);
          const retained = message.successful ? retainedAfter(name, from) : [];
          if (retained.length === 0) continue;
          // Synchronous since the subscription was made: nothing published in between.
          if (!memory._messages.has(message.clientId)) memory._messages.set(message.clientId, []);
          for (const m of retained) memory._messages.get(message.clientId).push(Object.assign({}, m));
          replay.resent += retained.length;
          memory.emptyQueue(message.clientId);
        }
      }
      callback(message);
    },
  });
}

if (process.env.FAYE_REPLAY === '1') installReplay();

// ---------------------------------------------------------------------------------------------
// Publishing. Every publish is issued synchronously, in order, through one client: Faye's
// in-process transport keeps that order, so each subscriber sees the messages in call order.
// A Faye Publication's then() swallows failures unless given an errback, hence the wrapper.

function publishOne(channel, data) {
  return new Promise((resolve, reject) => {
    client.publish(channel, data).then(resolve, (err) => {
      reject(new Error(`publish to ${channel} failed: ${err && err.message ? err.message : err}`));
    });
  });
}

async function publishAll(pairs) {
  // pairs: array of [channel, data]
  const started = process.hrtime.bigint();
  const promises = new Array(pairs.length);
  for (let i = 0; i < pairs.length; i += 1) promises[i] = publishOne(pairs[i][0], pairs[i][1]);
  await Promise.all(promises);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

// Straight into Faye's engine, the path a publish from any remote client takes once the server
// has accepted it: no in-process client round trip (~27 us a message measured here, which capped
// a blast at ~36k msg/s with nobody listening). Chunks of 100 per event-loop turn, so Faye flushes
// to subscribers while publishing goes on, as a busy server would.
async function publishViaEngine(pairs) {
  const engine = bayeux._server._engine;
  const started = process.hrtime.bigint();
  for (let i = 0; i < pairs.length; i += 1) {
    engine.publish({ channel: pairs[i][0], data: pairs[i][1] });
    if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
  }
  return Number(process.hrtime.bigint() - started) / 1e6;
}

const DEVICE_ID = 'c259da54-7c22-4a43-9440-77a92facc86b';
const OUTBOUND = '/v2/me/outbound';
const INTERNAL = '/me/internal';

function gwsPair(i) {
  const campaign = `Campaign${i % 7}`;
  return [
    [
      OUTBOUND,
      {
        record: {
          devicePath: `/devices/${DEVICE_ID}`,
          callingList: 'CallingList1',
          applicationId: 134,
          recordHandle: i,
          campaignName: campaign,
        },
        notificationType: 'DoNotCallAcknowledge',
        messageType: 'OutboundRecordMessage',
        referenceId: String(i),
      },
    ],
    [
      INTERNAL,
      {
        metrics: {
          eventProcessing: {
            serverGenerationTimestamp: Date.now(),
            nodeProcessingTimeNanos: 4352048 + i,
            serverProcessingTimeTotalMs: 5,
          },
        },
        userData: {
          GSW_APPLICATION_ID: 134,
          GSW_RECORD_HANDLE: i,
          GSW_USER_EVENT: 'DoNotCallAcknowledge',
          GSW_CALLING_LIST: 'CallingList1',
          GSW_CAMPAIGN_NAME: campaign,
          GSW_PHONE: `300${i}`,
        },
        deviceId: DEVICE_ID,
        messageType: 'DeviceUserEventMessage',
      },
    ],
  ];
}

function requireChannel(cmd) {
  if (typeof cmd.channel !== 'string' || !cmd.channel.startsWith('/')) {
    throw new Error('"channel" must be a channel name starting with "/"');
  }
  return cmd.channel;
}

// ---------------------------------------------------------------------------------------------
// Commands

const handlers = {
  async publish(cmd) {
    const channel = requireChannel(cmd);
    if (!Array.isArray(cmd.data)) throw new Error('"data" must be a list of messages');
    const elapsed = await publishAll(cmd.data.map((d) => [channel, d]));
    return { published: cmd.data.length, elapsed_ms: elapsed };
  },

  async gws(cmd) {
    const count = requireCount(cmd.count, 'count');
    const start = cmd.start === undefined ? 0 : requireCount(cmd.start, 'start');
    const pairs = [];
    for (let i = start; i < start + count; i += 1) pairs.push(...gwsPair(i));
    const elapsed = await publishAll(pairs);
    return { published: pairs.length, elapsed_ms: elapsed };
  },

  async blast(cmd) {
    const channel = requireChannel(cmd);
    const count = requireCount(cmd.count, 'count');
    const size = cmd.size === undefined ? 500 : requireCount(cmd.size, 'size');
    const pairs = new Array(count);
    for (let i = 0; i < count; i += 1) {
      const overhead = JSON.stringify({ seq: i, pad: '' }).length;
      pairs[i] = [channel, { seq: i, pad: 'x'.repeat(Math.max(0, size - overhead)) }];
    }
    // When publishing began, on the clock Python's time.monotonic() reads (CLOCK_MONOTONIC on
    // Linux): a benchmark measures a subscriber's rate from there, not from building `pairs`.
    const startedNs = process.hrtime.bigint();
    const elapsed = cmd.via === 'engine' ? await publishViaEngine(pairs) : await publishAll(pairs);
    return {
      published: count,
      started_monotonic_ns: Number(startedNs),
      elapsed_ms: elapsed,
      msg_per_s: elapsed > 0 ? Math.round((count * 1000) / elapsed) : null,
    };
  },

  // A steady feed for load benchmarks: GWS pairs i = start, start + 1, ... (referenceId
  // String(i)) at `rate` pairs a second for `duration_ms`, pair i due at i / rate s after the
  // start. A timer every `tick_ms` (default 5) publishes every pair due by then, against that
  // absolute clock (no drift), straight into the engine as publishViaEngine does, so every
  // subscriber gets the same message rate. Answers once done, with how late the timer ran at worst.
  pace(cmd) {
    const rate = cmd.rate;
    if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
      throw new Error('"rate" must be a number of pairs a second > 0');
    }
    const durationMs = requireCount(cmd.duration_ms, 'duration_ms');
    const start = cmd.start === undefined ? 0 : requireCount(cmd.start, 'start');
    const tickMs = cmd.tick_ms === undefined ? 5 : requireCount(cmd.tick_ms, 'tick_ms');
    if (tickMs < 1) throw new Error('"tick_ms" must be >= 1');
    const total = Math.ceil((durationMs / 1000) * rate); // pairs due before the end
    const engine = bayeux._server._engine;
    const startedNs = process.hrtime.bigint();
    let sent = 0;
    let maxLagMs = 0;
    return new Promise((resolve) => {
      const tick = () => {
        const elapsedMs = Number(process.hrtime.bigint() - startedNs) / 1e6;
        const due = Math.min(total, Math.floor((elapsedMs / 1000) * rate) + 1);
        if (sent < due) maxLagMs = Math.max(maxLagMs, elapsedMs - (sent * 1000) / rate);
        for (; sent < due; sent += 1) {
          for (const [channel, data] of gwsPair(start + sent)) engine.publish({ channel, data });
        }
        if (sent >= total || elapsedMs >= durationMs) {
          clearInterval(timer);
          resolve({
            published: sent * 2,
            pairs: sent,
            started_monotonic_ns: Number(startedNs),
            elapsed_ms: Number(process.hrtime.bigint() - startedNs) / 1e6,
            max_lag_ms: maxLagMs,
          });
        }
      };
      const timer = setInterval(tick, tickMs);
      tick();
    });
  },

  async clients() {
    return {
      handshakes: handshakes,
      disconnects: disconnects,
      clients: live.size,
      subscriptions: subscriptionsSnapshot(),
    };
  },

  wait_subscribed(cmd) {
    return waitSubscribed(cmd, { subscribedTo, subscriptionsSnapshot, waiters, what: 'clients' });
  },

  // End every client's session server-side, as an expiry does: its held connect is answered
  // (long-polling) or its WebSocket closed, and its next message gets 401 unknown client.
  kill_sessions() {
    const killed = [...live];
    for (const clientId of killed) bayeux._server._engine.destroyClient(clientId);
    return { killed: killed.length };
  },

  replay_history(cmd) {
    if (process.env.FAYE_REPLAY !== '1') throw new Error('replay is off: set FAYE_REPLAY=1');
    const channel = requireChannel(cmd);
    return { retained: (replay.history.get(channel) || []).length, resent: replay.resent };
  },
};

// ---------------------------------------------------------------------------------------------
// Start: listen (retrying briefly if a restart races the old socket), warm up the in-process
// client so its handshake is not counted, then announce readiness and read commands.

async function onListening() {
  await publishOne('/harness/warmup', { warmup: true });
  ready = true;
  send({ ready: true, port: server.address().port });
  serveCommands(handlers);
}

listen(server, requestedPort, onListening);
