// The official JavaScript client's streams against `rudder server` and a
// real kubelet: Exec over the WebSocket channel protocol it negotiates
// (v5.channel.k8s.io, stdin ended by the CLOSE signal) with exit codes and
// stderr in the Status callback, PortForward behind a local TCP listener
// (the client's documented pattern) carrying 3 MiB intact, and Log
// following a container; Cp into a pod; Attach to a container's own stdin and stdout.
// Run by tests/tests/control_js.rs with KUBECONFIG,
// NS and POD set; POD serves /www on 127.0.0.1:8080. Prints "js node flow:
// OK" at the end.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { PassThrough, Readable, Writable } from 'node:stream';
import * as k8s from '@kubernetes/client-node';

const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const { NS, POD } = process.env;

function sink() {
  const chunks = [];
  const w = new Writable({
    write(chunk, _enc, done) {
      chunks.push(Buffer.from(chunk));
      done();
    },
  });
  w.text = () => Buffer.concat(chunks).toString();
  return w;
}

async function exec(command, input) {
  const out = sink();
  const err = sink();
  let status;
  const stdin = input === undefined ? null : Readable.from([Buffer.from(input)]);
  const ws = await new k8s.Exec(kc).exec(NS, POD, 'web', command, out, err, stdin, false, (s) => {
    status = s;
  });
  const protocol = ws.protocol;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`exec ${command} timed out`)), 30000);
    ws.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return { protocol, status, out: out.text(), err: err.text() };
}

// stdin ended by v5's CLOSE: `wc -c` sees the end of its input.
let r = await exec(['sh', '-c', 'wc -c'], 'x'.repeat(100000));
assert.equal(r.protocol, 'v5.channel.k8s.io');
assert.equal(r.out.trim(), '100000');
assert.equal(r.status.status, 'Success');
// A failing command: its stderr, and its exit code in the Status.
r = await exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
assert.equal(r.out, 'out\n');
assert.equal(r.err, 'err\n');
assert.equal(r.status.status, 'Failure');
assert.equal(r.status.reason, 'NonZeroExitCode');
const code = r.status.details.causes.find((c) => c.reason === 'ExitCode');
assert.equal(code.message, '3');

// Port-forward behind a local listener, one WebSocket per connection.
const forward = new k8s.PortForward(kc);
const server = net.createServer((socket) => {
  forward.portForward(NS, POD, [8080], socket, null, socket).catch((e) => socket.destroy(e));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;

async function fetchBody(path) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { connection: 'close' },
  });
  assert.equal(res.status, 200, path);
  return Buffer.from(await res.arrayBuffer());
}
assert.equal((await fetchBody('/index.html')).toString(), 'hello-from-the-pod\n');
const big = await fetchBody('/big');
assert.equal(big.length, 3 * 1024 * 1024);
const sum = (await fetchBody('/big.sum')).toString().split(' ')[0];
assert.equal(crypto.createHash('sha256').update(big).digest('hex'), sum);
server.close();

// Logs, followed: a line written after the stream opened arrives.
const logs = new PassThrough();
let text = '';
logs.on('data', (d) => {
  text += d.toString();
});
const abort = await new k8s.Log(kc).log(NS, POD, 'web', logs, { follow: true });
await exec(['sh', '-c', 'echo from-exec-to-log > /proc/1/fd/1']);
const end = Date.now() + 20000;
while (!text.includes('from-exec-to-log')) {
  assert.ok(Date.now() < end, `log line not seen: ${JSON.stringify(text)}`);
  await new Promise((res) => setTimeout(res, 100));
}
abort.abort();

// Copy into the pod (tar over exec with stdin and stderr but no stdout),
// byte for byte. The client packs a local directory and does not wait for
// the exec to end, so the file is awaited in the pod. (Its cpFromPod asks
// the pod for a gzip archive that it then reads as plain tar, whatever the
// server: not exercised.)
const fs = await import('node:fs');
const os = await import('node:os');
const path = await import('node:path');
const local = fs.mkdtempSync(path.join(os.tmpdir(), 'js-cp-'));
const blob = crypto.randomBytes(300 * 1024);
fs.writeFileSync(path.join(local, 'blob.bin'), blob);
await new k8s.Cp(kc).cpToPod(NS, POD, 'web', local, '/tmp');
const want = crypto.createHash('sha256').update(blob).digest('hex');
const copied = Date.now() + 30000;
for (;;) {
  r = await exec(['sh', '-c', 'sha256sum /tmp/blob.bin 2>/dev/null']);
  if (r.out.split(' ')[0] === want) break;
  assert.ok(Date.now() < copied, `the copied file: ${JSON.stringify(r)}`);
  await new Promise((res) => setTimeout(res, 200));
}
fs.rmSync(local, { recursive: true });

// Attach: a container that keeps stdin open, joined over the WebSocket.
const core = kc.makeApiClient(k8s.CoreV1Api);
const ATTACHED = `${POD}-attach`;
await core.createNamespacedPod({
  namespace: NS,
  body: {
    metadata: { name: ATTACHED },
    spec: {
      containers: [{
        name: 'c',
        image: 'busybox:1.28',
        stdin: true,
        command: ['sh', '-c', 'while read l; do echo "js:$l"; done'],
      }],
    },
  },
});
const running = Date.now() + 90000;
for (;;) {
  const p = await core.readNamespacedPod({ name: ATTACHED, namespace: NS });
  if (p.status?.phase === 'Running') break;
  assert.ok(Date.now() < running, `${ATTACHED} not Running: ${JSON.stringify(p.status)}`);
  await new Promise((res) => setTimeout(res, 250));
}
const attachOut = sink();
const attachIn = new PassThrough();
const ws = await new k8s.Attach(kc).attach(NS, ATTACHED, 'c', attachOut, null, attachIn, false);
attachIn.write('over-the-websocket\n');
const seen = Date.now() + 30000;
while (!attachOut.text().includes('js:over-the-websocket')) {
  assert.ok(Date.now() < seen, `attach output: ${JSON.stringify(attachOut.text())}`);
  await new Promise((res) => setTimeout(res, 100));
}
ws.close();

console.log('js node flow: OK');
