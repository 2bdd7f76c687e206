//! The proxy daemon run in a test's node namespace, following a real
//! `rudder server`.

use rudder_dataplane::service::Acceleration;
use rudder_test_harness::NetNs;

/// Runs the proxy daemon (eBPF, NodePorts on `up0` only, no socket hooks)
/// in `node` while `f` runs, then stops it.
pub(crate) fn with_daemon(
    node: &NetNs,
    server: &super::kube::Server,
    pins: &std::path::Path,
    acceleration: Acceleration,
    f: impl FnOnce(),
) {
    let mut cfg = rudder_proxy::daemon::ProxyConfig::new("node-1");
    cfg.mode = rudder_proxy::daemon::ProxyMode::Ebpf;
    cfg.pin_dir = pins.to_path_buf();
    cfg.node_interfaces = Some(vec!["up0".into()]);
    cfg.acceleration = acceleration;
    cfg.host_services = false;
    cfg.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 10249)));
    cfg.healthz_addr = None;
    let kubeconfig = server.kubeconfig();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|s| {
        let daemon = s.spawn(|| {
            node.run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                            .await
                            .unwrap();
                        let client = kube::Client::try_from(config).unwrap();
                        let (_rescan, rx) = rudder_host::Rescan::channel();
                        tokio::select! {
                            r = rudder_proxy::daemon::run(client, cfg, rx) => panic!("the proxy stopped: {r:?}"),
                            _ = stopped => {}
                        }
                    });
            });
        });
        f();
        stop.send(()).unwrap();
        daemon.join().unwrap();
    });
}

/// A selectorless NodePort Service `name` (port 80 → 8080 on `node_port`,
/// with `annotations` as a flow mapping, `{}` for none) and its slice, to
/// a pod at 10.244.9.10 on another node.
pub(crate) fn node_port_service(name: &str, node_port: u16, annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations: {annotations}
spec:
  type: NodePort
  ports: [{{port: 80, targetPort: 8080, nodePort: {node_port}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: "", port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["10.244.9.10"]
  conditions: {{ready: true}}
  nodeName: node-2
"#
    )
}
