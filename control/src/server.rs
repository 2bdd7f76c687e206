//! `rudder server`: the store, the apiserver, the scheduler and the
//! controllers in one process.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    api::{self, ApiConfig, ApiState, auth::Tokens, pki::Pki},
    store::{
        Store,
        etcd::EtcdStore,
        raft::{RaftConfig, RaftStore},
    },
};

/// The Service ranges of [`ServerConfig::services`] (the apiserver's
/// allocation rules keep the type).
pub use crate::api::admission::ServiceRanges;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Names and addresses the serving certificate covers, and the address
    /// written into the admin kubeconfig (the first one).
    pub hosts: Vec<String>,
    pub pki_dir: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub token_file: Option<PathBuf>,
    pub services: ServiceRanges,
    pub member_id: u64,
    pub peer_listen: SocketAddr,
    pub initial_members: BTreeMap<u64, String>,
    pub join: bool,
    /// How much watch history is kept (kube-apiserver compacts every 5 min).
    pub compaction_interval: Duration,
    /// Run the garbage collector, the scheduler and the controllers.
    pub controllers: bool,
    /// The pod network nodes get their podCIDRs from, and the prefix
    /// length of each.
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub node_cidr_mask: u8,
    /// `--node-monitor-grace-period` in seconds.
    pub node_monitor_grace_seconds: i64,
    /// How often HorizontalPodAutoscalers are evaluated.
    pub hpa_sync_period: Duration,
    /// For tests: seconds added to the controllers' clock, read from here.
    pub clock_offset_file: Option<PathBuf>,
    /// Keep the data in this external etcd cluster instead of the embedded
    /// Raft store (the member/peer settings are then unused).
    pub etcd: Option<crate::store::etcd::EtcdConfig>,
    /// Serve the cluster DNS on this address (UDP and TCP), behind the
    /// `kube-system/kube-dns` Service on `cluster_dns_ip`.
    pub dns_listen: Option<SocketAddr>,
    /// Upstream resolvers; empty: /etc/resolv.conf's.
    pub dns_upstreams: Vec<SocketAddr>,
    /// The clients (besides the pod and service networks) names outside
    /// the cluster are resolved for; empty: loopback and private ranges.
    pub dns_forward_for: Vec<crate::dns::forward::Cidr>,
    pub cluster_dns_ip: std::net::Ipv4Addr,
    pub cluster_domain: String,
    /// `--max-requests-inflight`, `--max-mutating-requests-inflight`.
    pub max_inflight: usize,
    pub max_mutating_inflight: usize,
    /// `--min-request-timeout`.
    pub min_request_timeout: Duration,
    pub pod_security: api::pod_security::PodSecurityConfig,
    /// The embedded store's quota (`--quota-backend-bytes`).
    pub quota_backend_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::raft::RaftStoreError),
    #[error(transparent)]
    Etcd(#[from] crate::store::etcd::EtcdConfigError),
    #[error("the store did not become ready: {0}")]
    NotReady(crate::store::StoreError),
    #[error(transparent)]
    Pki(#[from] api::pki::PkiError),
    #[error(transparent)]
    Tokens(#[from] api::auth::TokenFileError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating the default objects: {0}")]
    Bootstrap(String),
    #[error("the controllers' API client: {0}")]
    Client(String),
}

/// A running server.
pub struct Server {
    pub store: Arc<dyn Store>,
    /// The embedded store, when it is the one in use.
    raft: Option<Arc<RaftStore>>,
    pub addr: SocketAddr,
    pub state: Arc<ApiState>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("embedded_store", &self.raft.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    pub async fn start(cfg: ServerConfig) -> Result<Self, ServerError> {
        let mut renewed = Vec::new();
        let (store, raft) = open_store(&cfg, &mut renewed).await?;

        let pki = Arc::new(Pki::load_or_create(&cfg.pki_dir, &cfg.hosts)?);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let host = cfg
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        let server_url = format!("https://{host}:{}", addr.port());
        // Written on first start, again when its certificate nears its
        // end (the CA's lasts ten years, the others one; checked hourly
        // while running), and when it trusts another CA than this server's.
        let admin = api::pki::rotation::AdminKubeconfig {
            path: cfg.admin_kubeconfig.clone(),
            server: server_url.clone(),
        };
        admin.renew_if_due(&pki)?;
        let tokens = match &cfg.token_file {
            Some(p) => Tokens::load(p)?,
            None => Tokens::default(),
        };
        let state = ApiState::new(
            store.clone(),
            ApiConfig {
                services: cfg.services.clone(),
                service_accounts: Some(Arc::new(
                    api::satoken::Signer::load_or_create(&cfg.pki_dir)
                        .map_err(|e| ServerError::Bootstrap(e.to_string()))?,
                )),
                tokens,
                pki: Some(pki.clone()),
                advertise: format!("{host}:{}", addr.port()),
                max_inflight: cfg.max_inflight,
                max_mutating_inflight: cfg.max_mutating_inflight,
                min_request_timeout: cfg.min_request_timeout,
                pod_security: cfg.pod_security.clone(),
            },
        );
        api::bootstrap(&state)
            .await
            .map_err(|e| ServerError::Bootstrap(e.message))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let rbac_revision = state
            .authz
            .load(store.as_ref())
            .await
            .map_err(|e| ServerError::Bootstrap(format!("loading RBAC objects: {e}")))?;
        tasks.push(tokio::spawn(state.authz.clone().follow(
            store.clone(),
            rbac_revision,
            stop_rx.clone(),
        )));
        api::crd::controller::load(&state).await;
        api::webhook::load(&state).await;
        api::aggregator::controller::start(&state).await;
        tasks.push(tokio::spawn(api::aggregator::controller::run(
            state.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(api::webhook::follow(
            state.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(api::crd::controller::run(
            state.clone(),
            stop_rx.clone(),
        )));
        let serving = pki.serving_identity()?;
        renewed.push(serving.clone());
        tasks.push(tokio::spawn(api::pki::rotation::keep_fresh(
            pki.clone(),
            renewed,
            Some(admin),
            stop_rx.clone(),
        )));
        let tls = pki.server_config(serving)?;
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(api::serve(
            state.clone(),
            listener,
            tls,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
        if cfg.controllers {
            let client = controller_client(&pki, addr).await?;
            let identity = format!("{host}:{}_{}", addr.port(), uuid::Uuid::new_v4());
            tasks.extend(start_controllers(
                &cfg, &state, &pki, client, identity, &stop_rx,
            ));
        }
        if let Some(listen) = cfg.dns_listen {
            let client = controller_client(&pki, addr).await?;
            tasks.push(start_dns(&cfg, &state, listen, client, stop_rx.clone()).await?);
        }
        tasks.push(tokio::spawn(compactor(
            store.clone(),
            cfg.compaction_interval,
            stop_rx,
        )));
        tracing::info!(%server_url, "apiserver serving");
        Ok(Self {
            store,
            raft,
            addr,
            state,
            stop,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(raft) = self.raft {
            raft.shutdown().await;
        }
    }
}

/// Waits up to a minute for an external store to answer.
async fn wait_store(store: &dyn Store) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.health().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ServerError::NotReady(e));
            }
            Err(e) => {
                tracing::info!(error = %e, "waiting for the store");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A client for the in-process controllers: the apiserver on loopback,
/// as `system:kube-controller-manager`, with a certificate from the cluster CA.
async fn controller_client(pki: &Pki, addr: SocketAddr) -> Result<kube::Client, ServerError> {
    let ip = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        }
    } else {
        addr.ip()
    };
    let url = format!("https://{}", SocketAddr::new(ip, addr.port()));
    let kc = pki.kubeconfig(&url, "system:kube-controller-manager", &["system:masters"])?;
    let kc =
        kube::config::Kubeconfig::from_yaml(&kc).map_err(|e| ServerError::Client(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ServerError::Client(e.to_string()))?;
    // The serving certificate names `localhost`, not every address.
    config.tls_server_name = Some("localhost".into());
    kube::Client::try_from(config).map_err(|e| ServerError::Client(e.to_string()))
}

/// Compacts the store's history every `interval` to the revision seen one
/// interval ago, as kube-apiserver does with etcd.
async fn compactor(
    store: Arc<dyn Store>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut previous = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(rev) = previous
            && let Err(e) = store.compact(rev).await
        {
            tracing::warn!(error = %e, revision = rev, "compaction failed");
        }
        previous = store.current_revision().await.ok();
    }
}

/// The store: the external etcd when configured, else this member of the
/// embedded Raft store (its peer certificate pushed to `renewed`), ready
/// for requests.
async fn open_store(
    cfg: &ServerConfig,
    renewed: &mut Vec<Arc<api::pki::rotation::Rotating>>,
) -> Result<(Arc<dyn Store>, Option<Arc<RaftStore>>), ServerError> {
    Ok(match &cfg.etcd {
        Some(etcd) => {
            let store = Arc::new(EtcdStore::connect(etcd).await?);
            tracing::info!(endpoints = ?etcd.endpoints, "using the external etcd store");
            wait_store(store.as_ref()).await?;
            (store, None)
        }
        None => {
            let mut raft = RaftConfig::single(cfg.data_dir.join("store"), cfg.peer_listen);
            // The peer port speaks mutual TLS with member certificates
            // of the cluster CA (every member must have the same CA).
            let (server, client, member) =
                Pki::load_or_create(&cfg.pki_dir, &cfg.hosts)?.peer_tls(cfg.member_id)?;
            renewed.push(member);
            raft.tls = Some(crate::store::raft::PeerTls { server, client });
            raft.quota_bytes = cfg.quota_backend_bytes;
            raft.id = cfg.member_id;
            raft.initial_members = cfg.initial_members.clone();
            raft.join = cfg.join;
            let store = Arc::new(RaftStore::open(raft).await?);
            tracing::info!(member = cfg.member_id, peer = %store.peer_addr(), "store member started; waiting for a leader");
            store
                .wait_ready(Duration::from_secs(60))
                .await
                .map_err(ServerError::NotReady)?;
            (store.clone(), Some(store))
        }
    })
}

/// The controllers and the scheduler (clients of the API like any other),
/// and the apiserver's own loops (quota, certificate requests).
fn start_controllers(
    cfg: &ServerConfig,
    state: &Arc<ApiState>,
    pki: &Arc<Pki>,
    client: kube::Client,
    identity: String,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let cc = crate::controllers::ControllerConfig {
        clock: crate::controllers::ops::Clock {
            offset_file: cfg.clock_offset_file.clone(),
        },
        nodes: crate::controllers::nodes::NodeConfig {
            grace_seconds: cfg.node_monitor_grace_seconds,
            cluster_cidr: Some(cfg.cluster_cidr),
            node_mask: cfg.node_cidr_mask,
        },
        ca_pem: Some(pki.ca_cert_pem.clone()),
        identity,
        hpa_sync_period: cfg.hpa_sync_period,
    };
    vec![
        tokio::spawn(crate::controllers::run_controllers(
            client,
            cc,
            stop_rx.clone(),
        )),
        tokio::spawn(api::quota::run(
            state.clone(),
            Duration::from_secs(5),
            stop_rx.clone(),
        )),
        tokio::spawn(api::csr::run(
            state.clone(),
            pki.clone(),
            Duration::from_secs(300),
            stop_rx.clone(),
        )),
    ]
}

/// The kube-dns Service and the cluster DNS serving it, bound before this
/// returns so that a taken port fails the start with its reason.
async fn start_dns(
    cfg: &ServerConfig,
    state: &Arc<ApiState>,
    listen: SocketAddr,
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    api::cluster_dns_service(state, cfg.cluster_dns_ip, listen)
        .await
        .map_err(|e| ServerError::Bootstrap(format!("the kube-dns Service: {}", e.message)))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut exclude = vec![cfg.cluster_dns_ip];
    if let std::net::IpAddr::V4(v4) = listen.ip() {
        exclude.push(v4);
    }
    let dcfg = crate::dns::DnsConfig {
        listen,
        domain: cfg.cluster_domain.clone(),
        service_cidr: cfg.services.cidr,
        upstreams: if cfg.dns_upstreams.is_empty() {
            crate::dns::upstreams_from_resolv_conf(&host_resolv, &exclude)
        } else {
            cfg.dns_upstreams.clone()
        },
        forward_for: {
            // The pod and service networks, and what the operator
            // named (or loopback and the private ranges).
            let mut nets = vec![
                (cfg.cluster_cidr.0.into(), cfg.cluster_cidr.1),
                (cfg.services.cidr.0.into(), cfg.services.cidr.1),
            ];
            nets.extend(if cfg.dns_forward_for.is_empty() {
                crate::dns::forward::default_networks()
            } else {
                cfg.dns_forward_for.clone()
            });
            nets
        },
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::dns::run(client, dcfg, stop, Some(ready_tx)).await {
            tracing::error!(error = %e, "cluster DNS stopped");
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(task),
        Ok(Err(msg)) => Err(ServerError::Bootstrap(msg)),
        Err(_) => Err(ServerError::Bootstrap(
            "the cluster DNS did not start".into(),
        )),
    }
}
