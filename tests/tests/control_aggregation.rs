//! API aggregation against `rudder server` with the stock kubectl: an
//! extension apiserver (tests/python/extension_apiserver.py, which trusts
//! the front proxy's client certificate from the cluster CA and the user
//! in X-Remote-User/X-Remote-Group) registered by an APIService behind a
//! Service; its group in discovery and `kubectl get`, the caller's
//! identity carried, RBAC applied in front, `Available` following the
//! backend, refused APIServices, and the built-in metrics.k8s.io unmoved.

mod support;

use support::{
    kube::{Kubectl, Server, kubectl_at, newest, token_kubeconfig},
    tls::{certificates, host_address, python_server, service_at},
};

fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    support::kube::wait_until(what, secs, String::new, f);
}

#[test]
fn an_extension_apiserver_serves_its_group_through_an_apiservice() {
    let dir = rudder_test_harness::TempDir::new();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "nobody-token,nobody,2001,\"\"\n").unwrap();
    let server = Server::start_in(dir, &["--token-file", tokens.to_str().unwrap()]);
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let d = server.dir.path();
    let ca = certificates(d, &["ext.default.svc"]);
    let host = host_address();
    let (cert, key, client_ca) = (d.join("tls.crt"), d.join("tls.key"), d.join("pki/ca.crt"));
    let (_ext, port) = python_server(
        "extension_apiserver.py",
        &[
            cert.as_os_str(),
            key.as_os_str(),
            client_ca.as_os_str(),
            host.as_ref(),
        ],
    );
    // The front proxy's trust is published for extension servers.
    let published = k.ok(&[
        "get",
        "configmap",
        "extension-apiserver-authentication",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.data.requestheader-allowed-names}",
    ]);
    assert_eq!(published, r#"["front-proxy-client"]"#);
    k.apply(&["apply", "-f", "-"], &service_at("ext", &host, port));
    k.apply(
        &["apply", "-f", "-"],
        &format!("apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1.ext.example.com}}\nspec: {{group: ext.example.com, version: v1, groupPriorityMinimum: 1000, versionPriority: 15, caBundle: {ca}, service: {{namespace: default, name: ext}}}}\n"),
    );
    wait_for("the APIService to be available", 15, || {
        k.ok(&[
            "get",
            "apiservice",
            "v1.ext.example.com",
            "-o",
            "jsonpath={.status.conditions[0].status}",
        ]) == "True"
    });
    let listed = k.ok(&["get", "apiservices"]);
    assert!(
        listed.contains("v1.ext.example.com") && listed.contains("default/ext"),
        "{listed}"
    );
    let resources = k.ok(&["api-resources", "--api-group=ext.example.com"]);
    assert!(
        resources.contains("flavors") && resources.contains("Flavor"),
        "{resources}"
    );
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "flavors", "-o", "json"])).unwrap();
    let who = &got["items"][0]["metadata"]["annotations"];
    assert_eq!(who["user"], "kubernetes-admin", "{got}");
    assert!(
        who["groups"]
            .as_str()
            .unwrap_or("")
            .contains("system:masters"),
        "{got}"
    );
    assert_eq!(who["client"], "front-proxy-client", "{got}");
    assert!(k.ok(&["get", "flavor", "vanilla"]).contains("vanilla"));
    // RBAC applies in front: a user with no grant is stopped here.
    let nobody = token_kubeconfig(&server, "nobody", "nobody-token");
    let (ok, out) = kubectl_at(&k.bin, &nobody, &["get", "flavors"]);
    assert!(
        !ok && (out.contains("Forbidden") || out.contains("forbidden")),
        "{out}"
    );
    // The built-in metrics group is still served here.
    k.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
    // The backend gone: Available turns False and requests get a 503.
    k.ok(&["delete", "endpointslice", "ext-1"]);
    wait_for("the APIService to be unavailable", 30, || {
        k.ok(&[
            "get",
            "apiservice",
            "v1.ext.example.com",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ]) == "MissingEndpoints"
    });
    let out = k.fails(&["get", "--raw", "/apis/ext.example.com/v1/flavors"], None);
    assert!(
        out.contains("ServiceUnavailable") || out.contains("unable to handle the request"),
        "{out}"
    );
}

#[test]
fn bad_apiservices_are_refused() {
    let server = Server::start();
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    let out = k.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v2.ext.example.com}\nspec: {group: ext.example.com, version: v1, groupPriorityMinimum: 30000, versionPriority: 15, insecureSkipTLSVerify: true, caBundle: Zm9v, service: {namespace: default, name: ext}}\n"),
    );
    for want in [
        r#"metadata.name: Invalid value: "v2.ext.example.com""#,
        "spec.groupPriorityMinimum: Invalid value: 30000",
        "spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    k.fails(&["get", "apiservice", "v2.ext.example.com"], None);
}
