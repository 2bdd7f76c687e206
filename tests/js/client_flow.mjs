// The official JavaScript client (@kubernetes/client-node) against
// `rudder server`: typed CRUD, 409 and 422 with their Status bodies, merge
// and JSON patches through setHeaderOptions, label-selected lists, a raw
// Watch seeing ADDED/MODIFIED/DELETED, and an informer (list, then watch)
// following creates, updates and deletes across the server ending its
// watches every few seconds. Run by tests/tests/control_js.rs
// with KUBECONFIG set; prints "js client flow: OK" at the end.

import assert from 'node:assert/strict';
import * as k8s from '@kubernetes/client-node';

const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const core = kc.makeApiClient(k8s.CoreV1Api);
const apps = kc.makeApiClient(k8s.AppsV1Api);
const NS = 'js-flow';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
async function refused(code, f) {
  try {
    await f();
  } catch (e) {
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.body}`);
    return typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
  }
  throw new Error(`expected ${code}, the call succeeded`);
}

await core.createNamespace({ body: { metadata: { name: NS } } });

// CRUD.
const cm = await core.createNamespacedConfigMap({
  namespace: NS,
  body: { metadata: { name: 'c1', labels: { app: 'js' } }, data: { a: '1' } },
});
assert.equal(cm.metadata.namespace, NS);
assert.ok(cm.metadata.uid && cm.metadata.resourceVersion);
const got = await core.readNamespacedConfigMap({ name: 'c1', namespace: NS });
assert.deepEqual(got.data, { a: '1' });
got.data.b = '2';
const replaced = await core.replaceNamespacedConfigMap({ name: 'c1', namespace: NS, body: got });
assert.notEqual(replaced.metadata.resourceVersion, got.metadata.resourceVersion);

// 409: the name is taken; a stale resourceVersion conflicts.
let st = await refused(409, () =>
  core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'c1' } } }),
);
assert.equal(st.kind, 'Status');
assert.equal(st.reason, 'AlreadyExists');
assert.equal(st.details.name, 'c1');
st = await refused(409, () => core.replaceNamespacedConfigMap({ name: 'c1', namespace: NS, body: got }));
assert.equal(st.reason, 'Conflict');

// 422: an invalid name, with its cause.
st = await refused(422, () =>
  core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'Not_Valid' } } }),
);
assert.equal(st.reason, 'Invalid');
assert.equal(st.details.causes[0].field, 'metadata.name');

// 404 on a missing object.
st = await refused(404, () => core.readNamespacedConfigMap({ name: 'nope', namespace: NS }));
assert.equal(st.reason, 'NotFound');

// Patches: merge and JSON patch, chosen by Content-Type.
const merged = await core.patchNamespacedConfigMap(
  { name: 'c1', namespace: NS, body: { data: { c: '3' } } },
  k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
);
assert.deepEqual(merged.data, { a: '1', b: '2', c: '3' });
const jsonPatched = await core.patchNamespacedConfigMap(
  { name: 'c1', namespace: NS, body: [{ op: 'remove', path: '/data/a' }] },
  k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
);
assert.deepEqual(jsonPatched.data, { b: '2', c: '3' });

// Lists with a label selector.
await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'c2' } } });
const list = await core.listNamespacedConfigMap({ namespace: NS, labelSelector: 'app=js' });
assert.deepEqual(list.items.map((i) => i.metadata.name), ['c1']);
assert.ok(list.metadata.resourceVersion);

// A raw watch from the list's version.
const seen = [];
const watch = new k8s.Watch(kc);
const req = await watch.watch(
  `/api/v1/namespaces/${NS}/configmaps`,
  // Its own timeout: the server's watches otherwise end within 2-4 s
  // (--min-request-timeout 2), which the informer below rides out.
  { resourceVersion: list.metadata.resourceVersion, labelSelector: 'app=js', timeoutSeconds: 60 },
  (type, obj) => seen.push(`${type} ${obj.metadata.name}`),
  (err) => {
    if (err && err.name !== 'AbortError') seen.push(`error ${err}`);
  },
);
await core.createNamespacedConfigMap({
  namespace: NS,
  body: { metadata: { name: 'c3', labels: { app: 'js' } } },
});
await core.patchNamespacedConfigMap(
  { name: 'c3', namespace: NS, body: { data: { x: 'y' } } },
  k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
);
await core.deleteNamespacedConfigMap({ name: 'c3', namespace: NS });
await until('the watch events', () => seen.length >= 3);
assert.deepEqual(seen, ['ADDED c3', 'MODIFIED c3', 'DELETED c3']);
req.abort();

// An informer over Deployments: list, then watch.
const events = [];
const informer = k8s.makeInformer(
  kc,
  `/apis/apps/v1/namespaces/${NS}/deployments`,
  () => apps.listNamespacedDeployment({ namespace: NS }),
);
informer.on('add', (d) => events.push(`add ${d.metadata.name}`));
informer.on('update', (d) => events.push(`update ${d.metadata.name} ${d.spec.replicas}`));
informer.on('delete', (d) => events.push(`delete ${d.metadata.name}`));
informer.on('error', (e) => events.push(`error ${e}`));
let connects = 0;
informer.on('connect', () => {
  connects += 1;
});
const deployment = (name) => ({
  metadata: { name },
  spec: {
    replicas: 1,
    selector: { matchLabels: { app: name } },
    template: {
      metadata: { labels: { app: name } },
      spec: { containers: [{ name: 'c', image: 'busybox' }] },
    },
  },
});
await apps.createNamespacedDeployment({ namespace: NS, body: deployment('before') });
await informer.start();
await until('the initial list', () => events.includes('add before'));
// The server ends each watch after 2-4 s; the informer watches again
// from where it was (list then watch), and misses nothing below.
await until('the informer to reconnect twice', () => connects >= 3, 20000);
await apps.createNamespacedDeployment({ namespace: NS, body: deployment('after') });
await until('the add', () => events.includes('add after'));
await apps.patchNamespacedDeploymentScale(
  { name: 'after', namespace: NS, body: { spec: { replicas: 3 } } },
  k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
);
await until('the update', () => events.includes('update after 3'));
await apps.deleteNamespacedDeployment({ name: 'after', namespace: NS });
await until('the delete', () => events.includes('delete after'));
assert.ok(!events.some((e) => e.startsWith('error')), events.join('\n'));
assert.deepEqual(
  informer.list(NS).map((d) => d.metadata.name),
  ['before'],
);
await informer.stop();

await core.deleteNamespace({ name: NS });
console.log('js client flow: OK');
