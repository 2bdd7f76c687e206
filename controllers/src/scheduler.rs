//! The scheduler: Kubernetes' default filter and score plugins over a
//! cluster state built once per round from the informer cache (pods placed
//! in the round are added to it as they are placed, and pods bound but not
//! yet seen back are kept as "assumed").
//!
//! Filters: NodeUnschedulable, NodeName, NodeResourcesFit, NodeAffinity
//! (nodeSelector, required terms incl. `matchFields`), TaintToleration,
//! NodePorts, VolumeBinding (bound claims, volume node affinity),
//! PodTopologySpread (DoNotSchedule), InterPodAffinity (required affinity,
//! anti-affinity, and existing pods' anti-affinity). Scores with the
//! Kubernetes 1.33 weights: NodeResourcesFit least-allocated 1,
//! BalancedAllocation 1, NodeAffinity preferred 2, TaintToleration
//! (PreferNoSchedule) 3, PodTopologySpread (ScheduleAnyway and the default
//! hostname/zone constraints) 2, InterPodAffinity preferred 2. Ties are
//! broken at random. Preemption is [`super::preemption`]; the rounds over the
//! pending pods are [`super::schedule_round`].

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{
    Node, Pod, PodAffinityTerm, PodSpec, Taint, Toleration, TopologySpreadConstraint,
};
use rand::Rng;
use rudder_k8s::resources::HostPort;

use super::{
    cache::Snapshot,
    util::{self, Labels},
};

pub const COMPONENT: &str = "default-scheduler";

pub use super::schedule_round::{CHUNK, Round, round, wants};
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Requests counted for scoring when a container has none (Kubernetes'
/// `DefaultMilliCPURequest` and `DefaultMemoryRequest`), in milli-units.
const DEFAULT_CPU: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// A node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub node: Arc<Node>,
    pub labels: Arc<Labels>,
    taints: Arc<Vec<Taint>>,
    allocatable: Arc<BTreeMap<String, i128>>,
    requested: BTreeMap<String, i128>,
    /// (cpu, memory) with the defaults for containers without requests.
    nonzero: (i128, i128),
    pub pods: Vec<Arc<Pod>>,
    /// (protocol, hostIP, hostPort) in use.
    ports: Vec<HostPort>,
}

fn nonzero_requests(pod: &Pod) -> (i128, i128) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| {
            req.and_then(|r| r.get(k))
                .and_then(|q| util::quantity_milli(&q.0))
        };
        cpu += get("cpu").unwrap_or(DEFAULT_CPU);
        mem += get("memory").unwrap_or(DEFAULT_MEMORY);
    }
    (cpu, mem)
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    pod.spec
        .as_ref()
        .map(rudder_k8s::resources::host_ports)
        .unwrap_or_default()
}

/// What a round needs of a node that only changes with the node object.
#[derive(Debug)]
struct NodeBase {
    labels: Arc<Labels>,
    taints: Arc<Vec<Taint>>,
    allocatable: Arc<BTreeMap<String, i128>>,
}

impl NodeBase {
    fn of(node: &Node) -> Self {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(|a| {
                a.iter()
                    .filter_map(|(k, v)| Some((k.clone(), util::quantity_milli(&v.0)?)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            labels: Arc::new(util::labels(&node.metadata).clone()),
            taints: Arc::new(
                node.spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default(),
            ),
            allocatable: Arc::new(allocatable),
        }
    }
}

/// What a round needs of a pod's spec: its requests (as NodeResourcesFit
/// counts them and with the scoring defaults) and host ports.
#[derive(Debug)]
struct PodFacts {
    requests: BTreeMap<String, i128>,
    nonzero: (i128, i128),
    ports: Vec<HostPort>,
}

impl PodFacts {
    fn of(pod: &Pod) -> Self {
        Self {
            requests: util::pod_requests(pod),
            nonzero: nonzero_requests(pod),
            ports: host_ports(pod),
        }
    }
}

/// Parsed nodes (by name and resourceVersion) and pods (by uid: a pod's
/// resources and ports do not change) kept from one round to the next, so
/// a round over a big cluster does not parse every quantity again.
#[derive(Debug, Default)]
pub struct BuildCache {
    nodes: HashMap<String, (String, Arc<NodeBase>)>,
    pods: HashMap<String, Arc<PodFacts>>,
}

impl NodeInfo {
    fn new(node: Arc<Node>, base: &NodeBase) -> Self {
        Self {
            name: util::name(&node.metadata).to_owned(),
            labels: base.labels.clone(),
            taints: base.taints.clone(),
            allocatable: base.allocatable.clone(),
            node,
            requested: BTreeMap::new(),
            nonzero: (0, 0),
            pods: Vec::new(),
            ports: Vec::new(),
        }
    }

    fn add(&mut self, pod: Arc<Pod>, facts: &PodFacts) {
        for (k, v) in &facts.requests {
            match self.requested.get_mut(k) {
                Some(total) => *total += v,
                None => {
                    self.requested.insert(k.clone(), *v);
                }
            }
        }
        self.nonzero.0 += facts.nonzero.0;
        self.nonzero.1 += facts.nonzero.1;
        self.ports.extend(facts.ports.iter().cloned());
        self.pods.push(pod);
    }

    /// The node with nothing placed on it (for preemption's trials).
    pub(super) fn emptied(&self) -> Self {
        Self {
            requested: BTreeMap::new(),
            nonzero: (0, 0),
            pods: Vec::new(),
            ports: Vec::new(),
            ..self.clone()
        }
    }

    /// Places one more pod (for preemption's trials).
    pub(super) fn add_pod(&mut self, pod: Arc<Pod>) {
        let facts = PodFacts::of(&pod);
        self.add(pod, &facts);
    }

    fn unschedulable(&self) -> bool {
        self.node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    }
}

/// The cluster as the scheduler sees it in one round.
#[derive(Debug)]
pub struct ClusterState {
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pvcs: HashMap<(String, String), Arc<k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
    pvs: HashMap<String, Arc<k8s_openapi::api::core::v1::PersistentVolume>>,
    /// Placed pods with required anti-affinity terms, with their node.
    anti_pods: Vec<(usize, Arc<Pod>)>,
    /// Live pods per controller uid, per (hostname | zone, value), for the
    /// default topology spread score.
    owner_counts: HashMap<String, HashMap<(&'static str, String), i64>>,
    /// Where the next pod's node search starts (Kubernetes'
    /// `nextStartNodeIndex`), so searches that stop early spread out.
    next_start: Cell<usize>,
    /// The lowest priority of a placed pod (`i32::MAX` with none): a pod
    /// at or below it has nobody to preempt.
    pub(super) lowest_priority: i32,
}

/// Below this many nodes every node is checked; above, the search stops
/// after finding this share of them feasible (Kubernetes' adaptive
/// `percentageOfNodesToScore`: 50 % minus 1 % per 125 nodes, at least
/// 5 %, at least 100 nodes).
const MIN_FEASIBLE_NODES: usize = 100;

/// How many feasible nodes to look for among `total`.
pub fn feasible_nodes_to_find(total: usize) -> usize {
    if total < MIN_FEASIBLE_NODES {
        return total;
    }
    let pct = 50usize.saturating_sub(total / 125).max(5);
    (total * pct / 100).max(MIN_FEASIBLE_NODES)
}

impl ClusterState {
    /// Builds the state from the cache, with `assumed` pods (uid → node)
    /// placed where they were bound.
    pub fn build(snap: &Snapshot, assumed: &HashMap<String, String>) -> Self {
        Self::build_with(snap, assumed, &mut BuildCache::default())
    }

    /// [`ClusterState::build`], reusing what `cache` parsed in earlier
    /// rounds (and keeping it up to date).
    pub fn build_with(
        snap: &Snapshot,
        assumed: &HashMap<String, String>,
        cache: &mut BuildCache,
    ) -> Self {
        if cache.nodes.len() > snap.nodes.len() {
            // Nodes went away: forget them.
            cache
                .nodes
                .retain(|name, _| snap.nodes.contains_key(&(String::new(), name.clone())));
        }
        let nodes: Vec<NodeInfo> = snap
            .nodes
            .values()
            .map(|n| {
                let name = util::name(&n.metadata);
                let rv = n.metadata.resource_version.as_deref().unwrap_or("");
                let base = match cache.nodes.get(name) {
                    Some((cached_rv, b)) if cached_rv == rv => b.clone(),
                    _ => {
                        let b = Arc::new(NodeBase::of(n));
                        cache
                            .nodes
                            .insert(name.to_owned(), (rv.to_owned(), b.clone()));
                        b
                    }
                };
                NodeInfo::new(n.clone(), &base)
            })
            .collect();
        if cache.pods.len() > 2 * snap.pods.len() + 1024 {
            let live: HashSet<&str> = snap.pods.values().map(|p| util::uid(&p.metadata)).collect();
            cache.pods.retain(|uid, _| live.contains(uid.as_str()));
        }
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut st = Self {
            nodes,
            index,
            pvcs: snap
                .pvcs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pvs: snap
                .pvs
                .iter()
                .map(|((_, n), v)| (n.clone(), v.clone()))
                .collect(),
            anti_pods: Vec::new(),
            owner_counts: HashMap::new(),
            next_start: Cell::new(0),
            lowest_priority: i32::MAX,
        };
        for pod in snap.pods.values() {
            if util::is_terminal(pod) {
                continue;
            }
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .or_else(|| assumed.get(util::uid(&pod.metadata)).map(String::as_str));
            if let Some(i) = node.and_then(|n| st.index.get(n).copied()) {
                let uid = util::uid(&pod.metadata);
                // Looked up before inserting: most pods are known, and the
                // entry API would allocate their key every round.
                let facts = match cache.pods.get(uid) {
                    Some(f) => f.clone(),
                    None => {
                        let f = Arc::new(PodFacts::of(pod));
                        cache.pods.insert(uid.to_owned(), f.clone());
                        f
                    }
                };
                st.place(i, pod.clone(), &facts);
            }
        }
        st
    }

    fn place(&mut self, i: usize, pod: Arc<Pod>, facts: &PodFacts) {
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        self.lowest_priority = self.lowest_priority.min(priority);
        if !required_terms(&pod, true).is_empty() {
            self.anti_pods.push((i, pod.clone()));
        }
        if let Some(owner) = util::controller_of(&pod.metadata)
            && !util::is_terminating(&pod)
        {
            let counts = self.owner_counts.entry(owner.uid.clone()).or_default();
            for key in [HOSTNAME, ZONE] {
                if let Some(v) = self.nodes[i].labels.get(key) {
                    *counts.entry((key, v.clone())).or_default() += 1;
                }
            }
        }
        self.nodes[i].add(pod, facts);
    }

    /// Places a pod on a node for the rest of the round.
    pub fn assume(&mut self, pod: Arc<Pod>, node: &str) {
        if let Some(i) = self.index.get(node).copied() {
            let facts = PodFacts::of(&pod);
            self.place(i, pod, &facts);
        }
    }
}

/// The scheduler's decision for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    Unschedulable(String),
}

fn effective_constraint_pods<'a>(
    st: &'a ClusterState,
    pod: &'a Pod,
    sel: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> impl Iterator<Item = (&'a NodeInfo, &'a Arc<Pod>)> + 'a {
    let ns = util::namespace(&pod.metadata);
    st.nodes.iter().flat_map(move |n| {
        n.pods
            .iter()
            .filter(move |p| {
                util::namespace(&p.metadata) == ns
                    && !util::is_terminating(p)
                    && util::selector_matches(sel, util::labels(&p.metadata))
            })
            .map(move |p| (n, p))
    })
}

/// Counts of matching pods per topology value over the eligible nodes.
fn spread_counts(
    st: &ClusterState,
    pod: &Pod,
    c: &TopologySpreadConstraint,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    let sel = c.label_selector.clone().unwrap_or_default();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    for n in &st.nodes {
        let honour_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
        let honour_taints = c.node_taints_policy.as_deref() == Some("Honor");
        if honour_affinity && !util::pod_fits_node_affinity(pod, &n.name, &n.labels) {
            continue;
        }
        if honour_taints
            && util::untolerated(&n.taints, tolerations, &["NoSchedule", "NoExecute"]).is_some()
        {
            continue;
        }
        if let Some(v) = n.labels.get(&c.topology_key) {
            counts.entry(v.clone()).or_insert(0);
        }
    }
    for (n, _) in effective_constraint_pods(st, pod, &sel) {
        if let Some(v) = n.labels.get(&c.topology_key)
            && let Some(e) = counts.get_mut(v)
        {
            *e += 1;
        }
    }
    counts
}

fn term_namespaces(pod: &Pod, t: &PodAffinityTerm) -> Vec<String> {
    match t.namespaces.as_ref().filter(|n| !n.is_empty()) {
        Some(ns) => ns.clone(),
        None => vec![util::namespace(&pod.metadata).to_owned()],
    }
}

fn term_matches_pod(owner: &Pod, t: &PodAffinityTerm, other: &Pod) -> bool {
    if util::is_terminating(other) {
        return false;
    }
    // A namespaceSelector widens the namespaces; without namespace labels
    // in the cache, an empty one (all namespaces) is honoured.
    let all_ns = t
        .namespace_selector
        .as_ref()
        .is_some_and(util::selector_is_empty);
    if !all_ns && !term_namespaces(owner, t).contains(&util::namespace(&other.metadata).to_owned())
    {
        return false;
    }
    t.label_selector
        .as_ref()
        .is_some_and(|s| util::selector_matches(s, util::labels(&other.metadata)))
}

fn required_terms(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    }
    .unwrap_or(&[])
}

/// The topology values (of `key`) of the nodes holding pods that match
/// `t`, and whether any pod matches at all.
fn matching_domains(st: &ClusterState, pod: &Pod, t: &PodAffinityTerm) -> (HashSet<String>, bool) {
    let mut values = HashSet::new();
    let mut any = false;
    for n in &st.nodes {
        if n.pods.iter().any(|o| term_matches_pod(pod, t, o)) {
            any = true;
            if let Some(v) = n.labels.get(&t.topology_key) {
                values.insert(v.clone());
            }
        }
    }
    (values, any)
}

/// A hard (DoNotSchedule) spread constraint, counted once per pod.
struct HardSpread {
    key: String,
    counts: BTreeMap<String, i64>,
    min: i64,
    self_match: i64,
    max_skew: i64,
}

/// A required pod-affinity term of the pod, evaluated once.
struct AffinityTerm {
    key: String,
    values: HashSet<String>,
    first_of_group: bool,
}

/// What the filters and scores need of one pod, computed once per pod
/// (Kubernetes' PreFilter/PreScore state) so that each node costs little.
pub(super) struct PodCtx<'a> {
    pod: &'a Pod,
    tolerations: &'a [Toleration],
    node_name: Option<&'a str>,
    requests: BTreeMap<String, i128>,
    nonzero: (i128, i128),
    ports: Vec<HostPort>,
    volume_affinity: Vec<&'a k8s_openapi::api::core::v1::NodeSelector>,
    hard_spread: Vec<HardSpread>,
    /// (key, value) domains where existing pods' anti-affinity keeps it out.
    forbidden: Vec<(String, String)>,
    affinity: Vec<AffinityTerm>,
    anti: Vec<(String, HashSet<String>)>,
    /// ScheduleAnyway constraints: (key, counts, weight).
    soft_spread: Vec<(String, BTreeMap<String, i64>, f64)>,
    /// The controller's uid, for the default spread (no constraints given).
    default_spread: Option<&'a HashMap<(&'static str, String), i64>>,
    /// Preferred (anti-)affinity: (weight, key, value → matching pods).
    preferred: Vec<(f64, String, HashMap<String, i64>)>,
    prefer_no_schedule_tolerations: Vec<&'a Toleration>,
}

static NO_SPEC: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);

impl<'a> PodCtx<'a> {
    pub(super) fn new(st: &'a ClusterState, pod: &'a Pod) -> Self {
        let spec = pod.spec.as_ref().unwrap_or(&NO_SPEC);
        let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
        let volume_affinity = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .filter_map(|c| {
                let pvc = st.pvcs.get(&(
                    util::namespace(&pod.metadata).to_owned(),
                    c.claim_name.clone(),
                ))?;
                let pv = st.pvs.get(pvc.spec.as_ref()?.volume_name.as_ref()?)?;
                pv.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref()
            })
            .collect();
        let hard_spread =
            spec.topology_spread_constraints
                .iter()
                .flatten()
                .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
                .map(|c| {
                    let counts = spread_counts(st, pod, c);
                    HardSpread {
                        key: c.topology_key.clone(),
                        min: counts.values().copied().min().unwrap_or(0),
                        counts,
                        self_match: i64::from(c.label_selector.as_ref().is_some_and(|s| {
                            util::selector_matches(s, util::labels(&pod.metadata))
                        })),
                        max_skew: i64::from(c.max_skew),
                    }
                })
                .collect();
        let mut forbidden = Vec::new();
        for (i, other) in &st.anti_pods {
            for t in required_terms(other, true) {
                if term_matches_pod(other, t, pod)
                    && let Some(v) = st.nodes[*i].labels.get(&t.topology_key)
                {
                    forbidden.push((t.topology_key.clone(), v.clone()));
                }
            }
        }
        let affinity = required_terms(pod, false)
            .iter()
            .map(|t| {
                let (values, any) = matching_domains(st, pod, t);
                AffinityTerm {
                    key: t.topology_key.clone(),
                    values,
                    // The first pod of a group that selects itself may go
                    // anywhere the topology key exists.
                    first_of_group: !any && term_matches_pod(pod, t, pod),
                }
            })
            .collect();
        let anti = required_terms(pod, true)
            .iter()
            .map(|t| (t.topology_key.clone(), matching_domains(st, pod, t).0))
            .collect();
        let soft: Vec<&TopologySpreadConstraint> = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .filter(|c| c.when_unsatisfiable == "ScheduleAnyway")
            .collect();
        let soft_spread = soft
            .iter()
            .map(|c| {
                let counts = spread_counts(st, pod, c);
                #[expect(clippy::cast_precision_loss, reason = "domain counts are small")]
                let weight = (counts.len() as f64 + 2.0).ln();
                (c.topology_key.clone(), counts, weight)
            })
            .collect();
        let default_spread = if soft.is_empty() {
            util::controller_of(&pod.metadata).map(|o| {
                static EMPTY: std::sync::LazyLock<HashMap<(&'static str, String), i64>> =
                    std::sync::LazyLock::new(HashMap::new);
                st.owner_counts.get(&o.uid).unwrap_or(&EMPTY)
            })
        } else {
            None
        };
        let mut preferred = Vec::new();
        if let Some(a) = spec.affinity.as_ref() {
            let terms = a
                .pod_affinity
                .iter()
                .flat_map(|p| {
                    p.preferred_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                })
                .map(|w| (f64::from(w.weight), &w.pod_affinity_term))
                .chain(
                    a.pod_anti_affinity
                        .iter()
                        .flat_map(|p| {
                            p.preferred_during_scheduling_ignored_during_execution
                                .iter()
                                .flatten()
                        })
                        .map(|w| (-f64::from(w.weight), &w.pod_affinity_term)),
                );
            for (w, t) in terms {
                let mut per: HashMap<String, i64> = HashMap::new();
                for n in &st.nodes {
                    let Some(v) = n.labels.get(&t.topology_key) else {
                        continue;
                    };
                    let c = n
                        .pods
                        .iter()
                        .filter(|o| term_matches_pod(pod, t, o))
                        .count();
                    if c > 0 {
                        *per.entry(v.clone()).or_default() += i64::try_from(c).unwrap_or(i64::MAX);
                    }
                }
                preferred.push((w, t.topology_key.clone(), per));
            }
        }
        Self {
            pod,
            tolerations,
            node_name: spec.node_name.as_deref(),
            requests: util::pod_requests(pod),
            nonzero: nonzero_requests(pod),
            ports: host_ports(pod),
            volume_affinity,
            hard_spread,
            forbidden,
            affinity,
            anti,
            soft_spread,
            default_spread,
            preferred,
            prefer_no_schedule_tolerations: tolerations
                .iter()
                .filter(|t| {
                    t.effect
                        .as_deref()
                        .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
                })
                .collect(),
        }
    }
}

/// Runs the filters for one node; the reasons it fails.
pub(super) fn filter(cx: &PodCtx<'_>, n: &NodeInfo) -> Vec<String> {
    // NodeUnschedulable
    if n.unschedulable() {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !cx.tolerations.iter().any(|x| util::tolerates(x, &t)) {
            return vec!["node(s) were unschedulable".into()];
        }
    }
    // NodeName
    if let Some(want) = cx.node_name
        && want != n.name
    {
        return vec!["node(s) didn't match the requested node name".into()];
    }
    // TaintToleration
    if let Some(t) = util::untolerated(&n.taints, cx.tolerations, &["NoSchedule", "NoExecute"]) {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )];
    }
    // NodeAffinity
    if !util::pod_fits_node_affinity(cx.pod, &n.name, &n.labels) {
        return vec!["node(s) didn't match Pod's node affinity/selector".into()];
    }
    // NodePorts
    if cx
        .ports
        .iter()
        .any(|mine| n.ports.iter().any(|theirs| mine.conflicts(theirs)))
    {
        return vec!["node(s) didn't have free ports for the requested pod ports".into()];
    }
    // NodeResourcesFit
    let mut reasons = Vec::new();
    let max_pods = n.allocatable.get("pods").copied().unwrap_or(110_000);
    if (n.pods.len() as i128 + 1) * 1000 > max_pods {
        reasons.push("Too many pods".into());
    }
    for (r, need) in &cx.requests {
        if *need == 0 {
            continue;
        }
        let have = n.allocatable.get(r).copied().unwrap_or(0);
        let used = n.requested.get(r).copied().unwrap_or(0);
        if used + need > have {
            reasons.push(format!("Insufficient {r}"));
        }
    }
    if !reasons.is_empty() {
        return reasons;
    }
    // VolumeBinding: volume node affinity of bound claims.
    if cx
        .volume_affinity
        .iter()
        .any(|req| !util::node_selector_matches(req, &n.name, &n.labels))
    {
        return vec!["node(s) had volume node affinity conflict".into()];
    }
    // PodTopologySpread (hard constraints)
    for c in &cx.hard_spread {
        let Some(value) = n.labels.get(&c.key) else {
            return vec![
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .into(),
            ];
        };
        let here = c.counts.get(value).copied().unwrap_or(0) + c.self_match;
        if here - c.min > c.max_skew {
            return vec!["node(s) didn't match pod topology spread constraints".into()];
        }
    }
    // InterPodAffinity: existing pods' required anti-affinity.
    if cx.forbidden.iter().any(|(k, v)| n.labels.get(k) == Some(v)) {
        return vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()];
    }
    // The pod's own required affinity and anti-affinity.
    for t in &cx.affinity {
        let value = n.labels.get(&t.key);
        let here = value.is_some_and(|v| t.values.contains(v));
        if !(here || (t.first_of_group && value.is_some())) {
            return vec!["node(s) didn't match pod affinity rules".into()];
        }
    }
    for (key, values) in &cx.anti {
        if n.labels.get(key).is_some_and(|v| values.contains(v)) {
            return vec!["node(s) didn't match pod anti-affinity rules".into()];
        }
    }
    Vec::new()
}

/// Checks that apply to the pod whatever the node (PreFilter).
fn prefilter(st: &ClusterState, pod: &Pod) -> Option<String> {
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(c) = &v.persistent_volume_claim else {
            continue;
        };
        let key = (
            util::namespace(&pod.metadata).to_owned(),
            c.claim_name.clone(),
        );
        let Some(pvc) = st.pvcs.get(&key) else {
            return Some(format!(
                "persistentvolumeclaim \"{}\" not found",
                c.claim_name
            ));
        };
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            return Some("pod has unbound immediate PersistentVolumeClaims".into());
        }
    }
    None
}

/// Topology spread score: the explicit ScheduleAnyway constraints, or
/// Kubernetes' system defaults (hostname weight 1, zone 0.5) for pods with
/// a controller, counting the pods of the same controller. Lower is better.
#[expect(clippy::cast_precision_loss, reason = "pod counts are small")]
fn spread_score_raw(cx: &PodCtx<'_>, n: &NodeInfo) -> f64 {
    if let Some(counts) = cx.default_spread {
        let mut total = 0.0;
        for (key, weight) in [(HOSTNAME, 1.0), (ZONE, 0.5)] {
            let Some(v) = n.labels.get(key) else { continue };
            let c = counts.get(&(key, v.clone())).copied().unwrap_or(0);
            total += weight * c as f64;
        }
        return total;
    }
    let mut total = 0.0;
    for (key, counts, weight) in &cx.soft_spread {
        let Some(v) = n.labels.get(key) else {
            continue;
        };
        total += counts.get(v).copied().unwrap_or(0) as f64 * weight;
    }
    total
}

#[expect(clippy::cast_precision_loss, reason = "pod counts are small")]
fn preferred_affinity_raw(cx: &PodCtx<'_>, n: &NodeInfo) -> f64 {
    cx.preferred
        .iter()
        .map(|(w, key, per)| {
            n.labels
                .get(key)
                .and_then(|v| per.get(v))
                .map_or(0.0, |c| w * *c as f64)
        })
        .sum()
}

fn node_affinity_raw(pod: &Pod, n: &NodeInfo) -> f64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| util::node_term_matches(&p.preference, &n.name, &n.labels))
        .map(|p| f64::from(p.weight))
        .sum()
}

#[expect(clippy::cast_precision_loss, reason = "taint counts are small")]
fn taint_raw(cx: &PodCtx<'_>, n: &NodeInfo) -> f64 {
    n.taints
        .iter()
        .filter(|t| {
            t.effect == "PreferNoSchedule"
                && !cx
                    .prefer_no_schedule_tolerations
                    .iter()
                    .any(|x| util::tolerates(x, t))
        })
        .count() as f64
}

#[expect(
    clippy::cast_precision_loss,
    reason = "milli-unit amounts fit f64 well enough for scores"
)]
fn resource_scores(cx: &PodCtx<'_>, n: &NodeInfo) -> (f64, f64) {
    let (pc, pm) = cx.nonzero;
    let frac = |used: i128, alloc: Option<&i128>| match alloc {
        Some(a) if *a > 0 => (used as f64 / *a as f64).min(1.0),
        _ => 1.0,
    };
    let fc = frac(n.nonzero.0 + pc, n.allocatable.get("cpu"));
    let fm = frac(n.nonzero.1 + pm, n.allocatable.get("memory"));
    let least = ((1.0 - fc) + (1.0 - fm)) / 2.0 * 100.0;
    let balanced = (1.0 - (fc - fm).abs() / 2.0) * 100.0;
    (least, balanced)
}

/// Scales raw scores to 0..=100 (higher raw is better unless `reverse`).
fn normalize(raw: &[f64], reverse: bool) -> Vec<f64> {
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let min = raw.iter().copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|r| {
            if (max - min).abs() < f64::EPSILON {
                100.0
            } else if reverse {
                (max - r) / (max - min) * 100.0
            } else {
                (r - min) / (max - min) * 100.0
            }
        })
        .collect()
}

/// Decides where a pod goes: filters the nodes (from a rotating start,
/// stopping once [`feasible_nodes_to_find`] fit), then scores those.
pub fn schedule(st: &ClusterState, pod: &Pod, rng: &mut impl Rng) -> Decision {
    if st.nodes.is_empty() {
        return Decision::Unschedulable("no nodes available to schedule pods".into());
    }
    let total = st.nodes.len();
    if let Some(reason) = prefilter(st, pod) {
        return Decision::Unschedulable(format!("0/{total} nodes are available: {reason}."));
    }
    let cx = PodCtx::new(st, pod);
    let want = feasible_nodes_to_find(total);
    let start = st.next_start.get() % total;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    let mut processed = 0;
    for k in 0..total {
        let n = &st.nodes[(start + k) % total];
        processed += 1;
        let r = filter(&cx, n);
        if r.is_empty() {
            feasible.push(n);
            if feasible.len() >= want {
                break;
            }
        } else {
            for x in r {
                *reasons.entry(x).or_default() += 1;
            }
        }
    }
    st.next_start.set((start + processed) % total);
    if feasible.is_empty() {
        let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        parts.sort();
        return Decision::Unschedulable(format!(
            "0/{total} nodes are available: {}.",
            parts.join(", ")
        ));
    }
    let res: Vec<(f64, f64)> = feasible.iter().map(|n| resource_scores(&cx, n)).collect();
    let na = normalize(
        &feasible
            .iter()
            .map(|n| node_affinity_raw(pod, n))
            .collect::<Vec<_>>(),
        false,
    );
    let tt = normalize(
        &feasible
            .iter()
            .map(|n| taint_raw(&cx, n))
            .collect::<Vec<_>>(),
        true,
    );
    let ts = normalize(
        &feasible
            .iter()
            .map(|n| spread_score_raw(&cx, n))
            .collect::<Vec<_>>(),
        true,
    );
    let ipa = normalize(
        &feasible
            .iter()
            .map(|n| preferred_affinity_raw(&cx, n))
            .collect::<Vec<_>>(),
        false,
    );
    let scores: Vec<f64> = (0..feasible.len())
        .map(|i| res[i].0 + res[i].1 + 2.0 * na[i] + 3.0 * tt[i] + 2.0 * ts[i] + 2.0 * ipa[i])
        .collect();
    let best = scores.iter().copied().fold(f64::MIN, f64::max);
    let top: Vec<usize> = (0..feasible.len())
        .filter(|i| (scores[*i] - best).abs() < 1e-6)
        .collect();
    let pick = top[rng.random_range(0..top.len())];
    Decision::Bind(feasible[pick].name.clone())
}
