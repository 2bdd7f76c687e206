"""The official Python client (`kubernetes` on PyPI) against `rudder server`:
CRUD, conflicts, validation errors, patches, scale, label selectors, watch,
watch resumption after 410 Gone, and the client's SharedInformer. Run by tests/tests/control_python.rs
with KUBECONFIG set; the server compacts its history every second."""

import os
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(os.environ["KUBECONFIG"])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "python"


def meta(name, **kw):
    return client.V1ObjectMeta(name=name, **kw)


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"want {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"want {code}, the call succeeded")


# CRUD
v1.create_namespace(client.V1Namespace(metadata=meta(NS)))
first = v1.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=meta("c1", labels={"app": "py"}), data={"a": "1"})
)
assert first.metadata.uid and first.metadata.resource_version
got = v1.read_namespaced_config_map("c1", NS)
assert got.data == {"a": "1"}, got.data
expect_status(409, v1.create_namespaced_config_map, NS, client.V1ConfigMap(metadata=meta("c1")))
got.data["a"] = "2"
updated = v1.replace_namespaced_config_map("c1", NS, got)
assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)
# A stale resourceVersion conflicts.
got.data["a"] = "3"
expect_status(409, v1.replace_namespaced_config_map, "c1", NS, got)
# Patches as the client sends them (merge/strategic for dicts, JSON patch for lists).
v1.patch_namespaced_config_map("c1", NS, {"data": {"b": "x"}})
v1.patch_namespaced_config_map("c1", NS, [{"op": "add", "path": "/data/c", "value": "y"}])
assert v1.read_namespaced_config_map("c1", NS).data == {"a": "2", "b": "x", "c": "y"}
# Validation: 422 with causes, nothing stored.
e = expect_status(422, v1.create_namespaced_config_map, NS, {"metadata": {"name": "Bad_Name"}})
assert "metadata.name" in e.body, e.body
# (The namespace also holds the cluster's root CA, put there by a controller.)
assert [c.metadata.name for c in v1.list_namespaced_config_map(NS).items if c.metadata.name != "kube-root-ca.crt"] == ["c1"]
expect_status(404, v1.read_namespaced_config_map, "missing", NS)

# Label selectors and a workload with the scale subresource.
v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("c2", labels={"app": "other"})))
names = [c.metadata.name for c in v1.list_namespaced_config_map(NS, label_selector="app in (py)").items]
assert names == ["c1"], names
dep = client.V1Deployment(
    metadata=meta("web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=meta(None, labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.25")]),
        ),
    ),
)
created = apps.create_namespaced_deployment(NS, dep)
assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment_scale("web", NS).spec.replicas == 3
assert apps.read_namespaced_deployment("web", NS).metadata.generation == 2

# Watch: a change made while watching is seen.
rv = v1.list_namespaced_config_map(NS).metadata.resource_version
threading.Timer(0.5, lambda: v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("live")))).start()
w = watch.Watch()
seen = None
for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=10):
    if ev["object"].metadata.name == "live":
        seen = ev["type"]
        w.stop()
assert seen == "ADDED", seen

# Resumption after 410: the first resourceVersion is compacted away.
for i in range(5):
    v1.patch_namespaced_config_map("c1", NS, {"data": {"n": str(i)}})
time.sleep(3)
v1.patch_namespaced_config_map("c1", NS, {"data": {"n": "last"}})
time.sleep(2)
expired = None
try:
    for ev in watch.Watch().stream(
        v1.list_namespaced_config_map, NS, resource_version=first.metadata.resource_version, timeout_seconds=5
    ):
        pass
except ApiException as e:
    expired = e.status
assert expired == 410, f"a watch from a compacted resourceVersion: want 410, got {expired}"
# The client's way back: list again, watch from the list's resourceVersion.
rv = v1.list_namespaced_config_map(NS).metadata.resource_version
threading.Timer(0.5, lambda: v1.delete_namespaced_config_map("c2", NS)).start()
seen = None
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=10):
    if ev["object"].metadata.name == "c2":
        seen = ev["type"]
        w.stop()
assert seen == "DELETED", seen

# The client's SharedInformer with a label selector: its cache follows
# creations, changes and deletions, through the 410s of a server that
# compacts every second (resync every 2 s ends each watch).
from kubernetes.informer import ADDED, DELETED, MODIFIED, SharedInformer

events = []
inf = SharedInformer(v1.list_namespaced_config_map, namespace=NS, label_selector="app=inf", resync_period=2)
for kind in (ADDED, MODIFIED, DELETED):
    inf.add_event_handler(kind, lambda o, k=kind: events.append((k, o.metadata.name)))
inf.start()


def until(what, check, secs=20):
    deadline = time.time() + secs
    while not check():
        assert time.time() < deadline, f"informer: {what} not within {secs} s; cache {inf.cache.list_keys()}, events {events}"
        time.sleep(0.1)


for n in ("i1", "i2"):
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta(n, labels={"app": "inf"}), data={"v": "0"}))
v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("other", labels={"app": "no"})))
until("two objects cached", lambda: sorted(inf.cache.list_keys()) == [f"{NS}/i1", f"{NS}/i2"])
v1.patch_namespaced_config_map("i1", NS, {"data": {"v": "1"}})
until("the change cached", lambda: inf.cache.get_by_key(f"{NS}/i1").data == {"v": "1"})
time.sleep(3)  # past a compaction and a resync
v1.delete_namespaced_config_map("i2", NS)
until("the deletion cached", lambda: inf.cache.list_keys() == [f"{NS}/i1"])
v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("i3", labels={"app": "inf"})))
until("a creation after the resync", lambda: f"{NS}/i3" in inf.cache.list_keys())
inf.stop()
assert ("DELETED", "i2") in events and ("ADDED", "i3") in events, events
assert all(name != "other" for _, name in events), events

# Deleting the namespace removes what is in it.
v1.delete_namespace(NS)
deadline = time.time() + 30
while True:
    try:
        v1.read_namespace(NS)
    except ApiException as e:
        assert e.status == 404
        break
    assert time.time() < deadline, "namespace still there after 30 s"
    time.sleep(0.2)
print("python client flow: OK")
sys.exit(0)
