"""The official Python client (`kubernetes` on PyPI) with a custom kind on
`rudder server`: a CRD created through ApiextensionsV1Api, then custom
objects through CustomObjectsApi (create, list, watch, patch, the status and
scale subresources, a 422 with causes), and the CRD deleted with its
objects. Run by tests/tests/control_crd.rs with KUBECONFIG set."""

import os
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(os.environ["KUBECONFIG"])
ext = client.ApiextensionsV1Api()
custom = client.CustomObjectsApi()
GROUP, VERSION, PLURAL, NS = "python.example.com", "v1", "widgets", "default"

crd = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "kind": "Widget"},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 0, "default": 1},
                    "color": {"type": "string"}}},
                "status": {"type": "object", "properties": {"size": {"type": "integer"}}}}}},
        }],
    },
}
ext.create_custom_resource_definition(crd)
deadline = time.time() + 10
while True:
    got = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    conds = {c.type: c.status for c in (got.status.conditions or [])}
    if conds.get("Established") == "True":
        break
    assert time.time() < deadline, got.status
    time.sleep(0.05)
assert got.status.accepted_names.kind == "Widget", got.status
assert got.status.stored_versions == ["v1"], got.status

events = []
started = threading.Event()


def watcher():
    w = watch.Watch()
    started.set()
    for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, timeout_seconds=20):
        events.append((ev["type"], ev["object"]["metadata"]["name"]))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
started.wait()
time.sleep(0.3)

w1 = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
    "metadata": {"name": "w1"}, "spec": {"color": "red"}})
assert w1["spec"] == {"color": "red", "size": 1}, w1
listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
assert listed["kind"] == "WidgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["w1"], listed
custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1", {"spec": {"color": "blue"}})
custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "w1", {"status": {"size": 4}})
got = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1")
assert got["spec"]["color"] == "blue" and got["status"] == {"size": 4}, got
custom.patch_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "w1", {"spec": {"replicas": 7}})
scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "w1")
assert scale["spec"]["replicas"] == 7 and scale["status"]["replicas"] == 4, scale

try:
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": -1}})
    raise AssertionError("a negative size was accepted")
except ApiException as e:
    assert e.status == 422, e.body
    assert "spec.size in body should be greater than or equal to 0" in e.body, e.body

custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w1")
t.join(timeout=20)
kinds = [k for k, _ in events]
assert kinds[:1] == ["ADDED"] and "MODIFIED" in kinds and kinds[-1] == "DELETED", events

ext.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
deadline = time.time() + 10
while True:
    try:
        ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    except ApiException as e:
        assert e.status == 404, e.body
        break
    assert time.time() < deadline, "the CRD did not go"
    time.sleep(0.05)
try:
    custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    raise AssertionError("the kind is still served")
except ApiException as e:
    assert e.status == 404, e.body
print("python crd flow: OK")
