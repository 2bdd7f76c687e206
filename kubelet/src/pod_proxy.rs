//! `/podProxy/{namespace}/{pod}/{port}/{path…}`: one HTTP request carried
//! into a pod, for the apiserver's `pods/proxy` and `services/proxy`. The
//! apiserver does not need a route to the pod network (as kube-apiserver
//! does, or its Konnectivity agents): it asks the pod's kubelet, which
//! dials the port inside the pod's network namespace as port-forward does
//! ([`super::portforward::dial`]) and speaks HTTP/1.1 to it. Only pods this
//! kubelet runs are reached, never an address from the request; the
//! request loses its hop-by-hop headers, the answer streams back with its
//! status and headers. Upgrades (WebSocket through the proxy) are not
//! carried.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    header,
};
use hyper_util::rt::TokioIo;

use rudder_k8s::proxy::{DROPPED_HEADERS as DROPPED, KUBELET_ERROR_HEADER as OWN_ERROR};

use super::Shared;

type Body = BoxBody<Bytes, Infallible>;

/// How long the pod may take to answer with its status line and headers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(OWN_ERROR, header::HeaderValue::from_static("1"));
    r
}

/// Carries `req` to `port` of the pod; `rest` is the path inside the pod
/// (with its leading `/`).
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    port: &str,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Ok(port) = port.parse::<u16>().map(|p| p.max(1)) else {
        return text(StatusCode::BAD_REQUEST, format!("invalid port {port:?}"));
    };
    let netns = match super::portforward::pod_netns(shared, ns, pod, None).await {
        Ok((_, netns)) => netns,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let conn = match super::portforward::dial(netns, port).await {
        Ok(c) => c,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("error trying to reach pod {ns}/{pod} on port {port}: {e}"),
            );
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(conn)).await {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_GATEWAY, format!("HTTP to the pod: {e}")),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "pod proxy connection");
        }
    });
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method)
        .uri(format!("{rest}{query}"))
        .header(header::HOST, format!("localhost:{port}"));
    for (k, v) in &parts.headers {
        if !DROPPED.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(out)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, format!("the pod's answer: {e}")),
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "the pod did not answer in 60 s",
            );
        }
    };
    let (mut parts, body) = answer.into_parts();
    for h in DROPPED.iter().chain([&OWN_ERROR]) {
        parts.headers.remove(*h);
    }
    Response::from_parts(parts, streamed(body))
}

/// The pod's body as it comes; a broken stream ends it.
fn streamed(mut body: Incoming) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}
