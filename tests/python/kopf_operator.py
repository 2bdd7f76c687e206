"""An operator written with kopf (the Python operator framework on PyPI),
run against `rudder server` by tests/tests/control_kopf.rs.

For each CronTab (stable.example.com/v1) it creates a Deployment and a
Service owned by it, writes the result to the object's status and keeps the
Deployment's image in step on updates; its finalizer holds a deletion until
the operator has recorded it. kopf serves its admission webhooks itself and
manages their configurations (`kopf-hooks.example.com`): the validating one
refuses images named `forbidden`, the mutating one labels the object.

Environment: KUBECONFIG, HOOK_PORT, HOOK_CERT, HOOK_KEY, HOOK_CA."""

import os

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "stable.example.com", "v1", "crontabs"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = "example.com/kopf-cleanup"
    settings.watching.server_timeout = 30
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1",
        port=int(os.environ["HOOK_PORT"]),
        host="127.0.0.1",
        certfile=os.environ["HOOK_CERT"],
        pkeyfile=os.environ["HOOK_KEY"],
        cafile=os.environ["HOOK_CA"],
    )
    settings.admission.managed = "kopf-hooks.example.com"


def deployment(name, image):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}},
    }


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_fn(spec, name, namespace, logger, **_):
    image = spec.get("image", "busybox")
    dep = deployment(f"{name}-app", image)
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": f"{name}-svc"},
           "spec": {"selector": {"app": f"{name}-app"}, "ports": [{"port": 80}]}}
    kopf.adopt(dep)
    kopf.adopt(svc)
    kubernetes.client.AppsV1Api().create_namespaced_deployment(namespace, dep)
    kubernetes.client.CoreV1Api().create_namespaced_service(namespace, svc)
    logger.info("created the deployment and service of %s", name)
    return {"deployment": dep["metadata"]["name"], "service": svc["metadata"]["name"]}


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.image")
def image_fn(new, name, namespace, **_):
    kubernetes.client.AppsV1Api().patch_namespaced_deployment(
        f"{name}-app", namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": new}]}}}})
    return {"image": new}


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_fn(name, namespace, **_):
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        namespace, {"metadata": {"name": f"{name}-deleted"}, "data": {"by": "kopf"}})


@kopf.on.validate(GROUP, VERSION, PLURAL)
def check_fn(spec, **_):
    if spec.get("image") == "forbidden":
        raise kopf.AdmissionError("the image 'forbidden' is not allowed", code=422)


@kopf.on.mutate(GROUP, VERSION, PLURAL)
def label_fn(patch, **_):
    patch.metadata.setdefault("labels", {})["mutated-by"] = "kopf"
