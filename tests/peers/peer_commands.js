'use strict';
// What every Node test peer shares (tests/peers/node_peer.py drives them): JSON lines on stdout,
// commands read from stdin and answered by id, listening with a retry while a restart races
// the old socket, and the `wait_subscribed` command over the peer's own subscription map.

const readline = require('readline');

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function requireCount(value, name) {
  if (!Number.isInteger(value) || value < 0) throw new Error(`"${name}" must be an integer >= 0`);
  return value;
}

// Answer each command line with {id, ok, ...} from handlers[cmd.cmd], until stdin closes.
function serveCommands(handlers) {
  async function handleLine(line) {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      send({ id: null, ok: false, error: `bad JSON: ${err.message}` });
      return;
    }
    const id = cmd && typeof cmd === 'object' && 'id' in cmd ? cmd.id : null;
    const name = cmd && typeof cmd === 'object' ? cmd.cmd : undefined;
    const handler = typeof name === 'string' && Object.hasOwn(handlers, name) ? handlers[name] : null;
    if (!handler) {
      send({ id: id, ok: false, error: `unknown command: ${JSON.stringify(name)}` });
      return;
    }
    try {
      const answer = await handler(cmd);
      send(Object.assign({ id: id, ok: true }, answer));
    } catch (err) {
      send({ id: id, ok: false, error: err && err.message ? err.message : String(err) });
    }
  }
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    handleLine(line);
  });
  rl.on('close', () => process.exit(0));
}

// Listen on 127.0.0.1:port (retrying EADDRINUSE for ~2 s when a fixed port is being reused),
// then call onListening; a server that cannot listen says so and exits 1.
function listen(server, port, onListening, attempt = 0) {
  server.once('error', (err) => {
    if (err.code === 'EADDRINUSE' && port !== 0 && attempt < 40) {
      setTimeout(() => listen(server, port, onListening, attempt + 1), 50);
      return;
    }
    send({ ready: false, error: `${err.code || ''} ${err.message}`.trim() });
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => {
    server.removeAllListeners('error');
    server.on('error', (err) => process.stderr.write(`http server error: ${err.message}\n`));
    onListening();
  });
}

// The wait_subscribed command: resolves once `count` sessions are subscribed to every one of
// `channels`. `peer` gives subscribedTo(channels), subscriptionsSnapshot(), the waiters set
// (each waiter's check() is called by the peer when subscriptions change) and what it calls
// its sessions ("clients", "sessions").
function waitSubscribed(cmd, peer) {
  const channels = cmd.channels;
  if (!Array.isArray(channels) || channels.length === 0 || !channels.every((c) => typeof c === 'string')) {
    throw new Error('"channels" must be a non-empty list of channel names');
  }
  const count = cmd.count === undefined ? 1 : requireCount(cmd.count, 'count');
  const timeoutMs = cmd.timeout_ms === undefined ? 10000 : requireCount(cmd.timeout_ms, 'timeout_ms');
  return new Promise((resolve) => {
    const waiter = {
      check() {
        const n = peer.subscribedTo(channels);
        if (n >= count) this.finish({ ok: true, subscribed: n });
      },
      finish(answer) {
        clearTimeout(this.timer);
        peer.waiters.delete(this);
        resolve(answer);
      },
    };
    waiter.timer = setTimeout(() => {
      waiter.finish({
        ok: false,
        error: `timeout after ${timeoutMs} ms: ${peer.subscribedTo(channels)} of ${count} ${peer.what} subscribed to ${channels.join(', ')}`,
        subscriptions: peer.subscriptionsSnapshot(),
      });
    }, timeoutMs);
    peer.waiters.add(waiter);
    waiter.check();
  });
}

module.exports = { send, requireCount, serveCommands, listen, waitSubscribed };
