"""A small admission webhook server for tests/tests/control_webhook.rs:
HTTPS on 127.0.0.1 (or the address given third) with the certificate and
key given, AdmissionReview v1.

  /validate  refuses objects labelled deny=true (403, with a message) and
             DELETEs of objects labelled protected=true; warns on the rest
             (and says which version it saw when the hook matched another
             version of the requested resource)
  /validate-exact  the same, its warning "checked exactly by test"
  /mutate    adds the label mutated=yes (a JSON patch)
  /slow      answers after 3 seconds
  /baduid    answers with another uid
  /convert   a CRD conversion webhook (ConversionReview, v1 or v1beta1):
             spec.size (a string, v1) <-> spec.replicas (an integer, v2),
             the annotation converted-to set to the version asked for;
             answers Failure for an object with spec.refuse set, and
             tries to rename every object (which must not stick)

Prints "listening <port>" once ready; runs until killed."""

import base64
import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key = sys.argv[1], sys.argv[2]
address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
seen = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = body["request"]
        path = self.path.split("?")[0]
        if path == "/convert":
            self.answer({"apiVersion": body["apiVersion"], "kind": "ConversionReview",
                         "response": convert(req)})
            return
        obj = req.get("object") or {}
        old = req.get("oldObject") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        old_labels = (old.get("metadata") or {}).get("labels") or {}
        resp = {"uid": req["uid"], "allowed": True}
        if path in ("/validate", "/validate-exact"):
            if labels.get("deny") == "true":
                resp = {"uid": req["uid"], "allowed": False,
                        "status": {"code": 403, "message": "denied by test"}}
            elif req["operation"] == "DELETE" and old_labels.get("protected") == "true":
                resp = {"uid": req["uid"], "allowed": False, "status": {"message": "protected"}}
            else:
                resp["warnings"] = ["checked exactly by test" if path == "/validate-exact" else "checked by test"]
                if req["kind"] != req["requestKind"]:
                    resp["warnings"].append("saw %s as %s for a %s request" % (
                        obj.get("apiVersion"), req["kind"]["version"], req["requestKind"]["version"]))
        elif path == "/mutate":
            ops = []
            if not labels:
                ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
            ops.append({"op": "add", "path": "/metadata/labels/mutated", "value": "yes"})
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        elif path == "/slow":
            time.sleep(3)
        elif path == "/baduid":
            resp["uid"] = "not-" + req["uid"]
        self.answer({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": resp})

    def answer(self, review):
        out = json.dumps(review).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the apiserver gave up waiting (/slow)


def convert(req):
    desired = req["desiredAPIVersion"]
    out = []
    for o in req["objects"]:
        spec = dict(o.get("spec") or {})
        if "refuse" in spec:
            return {"uid": req["uid"], "result": {"status": "Failure", "message": "refused by test"}}
        if desired.endswith("/v2") and "size" in spec:
            spec["replicas"] = int(spec.pop("size"))
        elif desired.endswith("/v1") and "replicas" in spec:
            spec["size"] = str(spec.pop("replicas"))
        meta = dict(o["metadata"])
        meta["name"] = "renamed-by-webhook"
        meta["annotations"] = dict(meta.get("annotations") or {}, **{"converted-to": desired})
        out.append(dict(o, apiVersion=desired, spec=spec, metadata=meta))
    return {"uid": req["uid"], "result": {"status": "Success"}, "convertedObjects": out}


server = ThreadingHTTPServer((address, 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
