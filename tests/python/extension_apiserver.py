"""A small extension apiserver for tests/tests/control_aggregation.rs: the
group-version ext.example.com/v1 with one cluster-scoped kind, Flavor, over
HTTPS on the address given. It trusts the front proxy as extension servers
built on k8s.io/apiserver do: a client certificate from the CA given, with
the common name front-proxy-client, and then the user in X-Remote-User and
X-Remote-Group; each Flavor shows who asked in its annotations.

argv: cert key client-ca address. Prints "listening <port>" once ready."""

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, client_ca, address = sys.argv[1:5]
GV = "ext.example.com/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        out = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        peer = self.connection.getpeercert() or {}
        cn = [v for rdn in peer.get("subject", ()) for (k, v) in rdn if k == "commonName"]
        if cn != ["front-proxy-client"]:
            return self.answer(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "Unauthorized", "code": 401, "message": "no front proxy"})
        path = self.path.split("?")[0].rstrip("/")
        who = {"user": self.headers.get("X-Remote-User", ""),
               "groups": ",".join(self.headers.get_all("X-Remote-Group") or []),
               "client": cn[0]}
        flavor = {"apiVersion": GV, "kind": "Flavor",
                  "metadata": {"name": "vanilla", "annotations": who}}
        if path == "/apis/" + GV:
            return self.answer(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
                                     "resources": [{"name": "flavors", "singularName": "flavor",
                                                    "namespaced": False, "kind": "Flavor",
                                                    "verbs": ["get", "list"]}]})
        if path == "/apis/" + GV + "/flavors":
            return self.answer(200, {"kind": "FlavorList", "apiVersion": GV,
                                     "metadata": {"resourceVersion": "1"}, "items": [flavor]})
        if path == "/apis/" + GV + "/flavors/vanilla":
            return self.answer(200, flavor)
        return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": "not found"})


server = ThreadingHTTPServer((address, 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(client_ca)
ctx.verify_mode = ssl.CERT_OPTIONAL
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
