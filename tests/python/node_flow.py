"""The official Python client's streams against `rudder server` and a real
kubelet: exec over v5.channel.k8s.io (its default, with the stdin CLOSE
signal), over v4.channel.k8s.io and base64.channel.k8s.io, exit codes and
stderr, and
portforward() over the WebSocket channel protocol, several ports at once,
3 MiB intact, a refused port's error; attach to a container's own stdin
and stdout. Run by tests/tests/control_python.rs
with KUBECONFIG, NS and POD set; POD serves /www on 127.0.0.1:8080."""

import base64
import hashlib
import os
import sys
import time

from kubernetes import client, config
from kubernetes.stream import portforward, stream, ws_client

config.load_kube_config(os.environ["KUBECONFIG"])
v1 = client.CoreV1Api()
NS, POD = os.environ["NS"], os.environ["POD"]


def exec_(command, stdin=None):
    resp = stream(
        v1.connect_get_namespaced_pod_exec, POD, NS, command=command,
        stdin=stdin is not None, stdout=True, stderr=True, tty=False, _preload_content=False,
    )
    proto = resp.subprotocol
    if stdin is not None:
        resp.write_stdin(stdin)
        resp.close_channel(0)  # v5: end of input, `cat` sees EOF
    resp.run_forever(timeout=30)
    out, err = resp.read_stdout(), resp.read_stderr()
    code = resp.returncode
    resp.close()
    return proto, code, out, err


# exec, v5 (what the client offers first): stdin closed by the CLOSE signal.
proto, code, out, _ = exec_(["sh", "-c", "wc -c"], stdin="x" * 100_000)
assert proto == "v5.channel.k8s.io", proto
assert (code, out.strip()) == (0, "100000"), (code, out)
proto, code, out, err = exec_(["sh", "-c", "echo out; echo err >&2; exit 3"])
assert (code, out, err) == (3, "out\n", "err\n"), (code, out, err)

# exec, v4: the client names the protocol itself.
cfg = v1.api_client.configuration
url = ws_client.get_websocket_url(
    f"{cfg.host}/api/v1/namespaces/{NS}/pods/{POD}/exec",
    [("command", ["sh", "-c", "echo v4; exit 2"]), ("stdout", "true"), ("stderr", "true")],
)
headers = {"sec-websocket-protocol": "v4.channel.k8s.io"}
if cfg.api_key.get("authorization"):
    headers["authorization"] = cfg.get_api_key_with_prefix("authorization")
ws = ws_client.WSClient(cfg, url, headers, True)
assert ws.subprotocol == "v4.channel.k8s.io", ws.subprotocol
ws.run_forever(timeout=30)
assert (ws.read_stdout(), ws.returncode) == ("v4\n", 2), (ws.read_stdout(), ws.returncode)
ws.close()


# exec, base64.channel.k8s.io (text frames: channel digit, base64 data;
# before v4 the error channel carries a failure's message only).
url = ws_client.get_websocket_url(
    f"{cfg.host}/api/v1/namespaces/{NS}/pods/{POD}/exec",
    [("command", ["sh", "-c", "echo b64; exit 3"]), ("stdout", "true"), ("stderr", "true")],
)
headers["sec-websocket-protocol"] = "base64.channel.k8s.io"
ws = ws_client.WSClient(cfg, url, headers, True)
assert ws.subprotocol == "base64.channel.k8s.io", ws.subprotocol
got = {}
while True:
    op, data = ws.sock.recv_data()
    if op == 8:  # close
        break
    text = data.decode()
    got[text[0]] = got.get(text[0], b"") + base64.b64decode(text[1:])
ws.close()
assert got.get("1") == b"b64\n", got
assert b"non-zero exit code" in got.get("3", b"") and b"exit code 3" in got["3"], got


def fetch(sock, path):
    sock.setblocking(True)
    sock.settimeout(30)
    sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


# port-forward: two ports on one WebSocket, one served, one refused.
pf = portforward(v1.connect_get_namespaced_pod_portforward, POD, NS, ports="8080,9")
status, body = fetch(pf.socket(8080), "/index.html")
assert "200" in status and body == b"hello-from-the-pod\n", (status, body)
refused = pf.socket(9)
refused.setblocking(True)
refused.settimeout(30)
assert refused.recv(10) == b""  # closed once the kubelet's error came
err = pf.error(9) or ""
assert "error forwarding port 9" in err and "onnection refused" in err, err
assert pf.error(8080) is None, pf.error(8080)
pf.close()

# 3 MiB through the channel framing, byte for byte.
pf = portforward(v1.connect_get_namespaced_pod_portforward, POD, NS, ports="8080")
_, want = fetch(pf.socket(8080), "/big.sum")
pf.close()
pf = portforward(v1.connect_get_namespaced_pod_portforward, POD, NS, ports="8080")
status, big = fetch(pf.socket(8080), "/big")
pf.close()
assert "200" in status and len(big) == 3 * 1024 * 1024, (status, len(big))
assert hashlib.sha256(big).hexdigest() == want.split()[0].decode()

# attach: a container that keeps stdin open, joined over the WebSocket.
ATTACHED = f"{POD}-py-attach"
v1.create_namespaced_pod(NS, {
    "metadata": {"name": ATTACHED},
    "spec": {"containers": [{
        "name": "c", "image": "busybox:1.28", "stdin": True,
        "command": ["sh", "-c", 'while read l; do echo "py:$l"; done'],
    }]},
})
deadline = time.time() + 90
while v1.read_namespaced_pod(ATTACHED, NS).status.phase != "Running":
    assert time.time() < deadline, "the attach pod is not Running"
    time.sleep(0.25)
resp = stream(
    v1.connect_get_namespaced_pod_attach, ATTACHED, NS, container="c",
    stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
)
resp.write_stdin("over-python\n")
seen = ""
deadline = time.time() + 30
while "py:over-python" not in seen:
    assert time.time() < deadline, f"attach output: {seen!r}"
    resp.update(timeout=1)
    seen += resp.read_stdout() or ""
resp.close()

print("python node flow: OK")
sys.exit(0)
