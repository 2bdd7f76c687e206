//! `watch`: a store watch from the requested version as kube-apiserver
//! streams it (JSON lines, or a Table per event), with bookmarks and
//! `410 Expired` for compacted versions.

use super::*;

/// One watch event line, `{"type":…,"object":…}` in kube-apiserver's
/// field order.
fn watch_line(ty: &str, object: &[u8]) -> bytes::Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":");
    line.extend_from_slice(&serde_json::to_vec(ty).expect("serialisable"));
    line.extend_from_slice(b",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line.into()
}

/// A watch: newline-delimited JSON events, streamed.
pub async fn watch(
    st: Arc<ApiState>,
    t: Target,
    headers: HeaderMap,
    q: Query,
) -> Result<Response, ApiError> {
    let r = t.resource;
    let sel = selectors(r, &q)?;
    let as_table = wants_table(&headers);
    let include = include_object(&q);
    let bookmarks = rudder_k8s::query::is_true(q.get("allowWatchBookmarks").map(String::as_str));
    let timeout = match q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|t| *t > 0)
    {
        Some(t) => t as f64,
        None => {
            let min = match st.config.min_request_timeout.as_secs_f64() {
                0.0 => 1800.0,
                m => m,
            };
            min * (1.0 + rand::random::<f64>())
        }
    };
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    // Initial state for "" and "0": synthetic ADDED events.
    let (initial, from) = if rv.is_empty() || rv == "0" {
        let mut lq = q.clone();
        lq.remove("resourceVersion");
        lq.remove("limit");
        lq.remove("continue");
        let (items, rev, _) = list_objects(&st, &t, &lq).await?;
        (items, rev + 1)
    } else {
        (Vec::new(), parse_rv(&rv)? + 1)
    };
    let frame = move |ty: &str, obj: &Value| -> bytes::Bytes {
        let object = if as_table && ty != "BOOKMARK" && ty != "ERROR" {
            serde_json::to_vec(&table::table(
                r,
                std::slice::from_ref(obj),
                json!({}),
                include,
                true,
            ))
        } else {
            serde_json::to_vec(obj)
        };
        watch_line(ty, &object.expect("serialisable"))
    };
    let stream = st.store.watch(t.prefix(), from).await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e @ StoreError::Compacted { .. }) => {
            // As kube-apiserver: a 200 stream carrying one ERROR event.
            let status = ApiError::from_store(e, r, "").status_bytes();
            let _ = tx.send(Ok(watch_line("ERROR", &status))).await;
            drop(tx);
            return Ok(stream_response(rx));
        }
        Err(e) => return Err(ApiError::from_store(e, r, "")),
    };
    st.metrics
        .watchers
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let st2 = st.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs_f64(timeout));
        tokio::pin!(deadline);
        for obj in &initial {
            if tx.send(Ok(frame("ADDED", obj))).await.is_err() {
                st2.metrics
                    .watchers
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        let mut last_rv = from - 1;
        loop {
            let item = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                item = stream.recv() => item,
            };
            let out = match item {
                None => break,
                Some(Err(e)) => {
                    let status = ApiError::from_store(e, r, "").status_bytes();
                    let _ = tx.send(Ok(watch_line("ERROR", &status))).await;
                    break;
                }
                Some(Ok(WatchItem::Progress(rev))) => {
                    if !bookmarks || rev <= last_rv {
                        continue;
                    }
                    last_rv = rev;
                    frame(
                        "BOOKMARK",
                        &json!({"kind": r.kind, "apiVersion": r.api_version(),
                        "metadata": {"resourceVersion": rev.to_string()}}),
                    )
                }
                Some(Ok(WatchItem::Event(e))) => {
                    last_rv = e.kv.mod_revision;
                    let Ok(mut new) = serde_json::from_slice::<Value>(&e.kv.value) else {
                        continue;
                    };
                    new["metadata"]["resourceVersion"] = json!(e.kv.mod_revision.to_string());
                    let new = if r.custom {
                        match crate::api::crd::conversion::convert(
                            &st2,
                            r,
                            vec![new],
                            &r.api_version(),
                        )
                        .await
                        {
                            Ok(mut v) => v.pop().unwrap_or_default(),
                            Err(e) => {
                                let _ = tx.send(Ok(watch_line("ERROR", &e.status_bytes()))).await;
                                break;
                            }
                        }
                    } else {
                        crate::api::convert::to_served(r, new)
                    };
                    // Without a selector the old value need not be read.
                    let old_matched = e.prev.as_ref().is_some_and(|p| {
                        sel.is_empty()
                            || serde_json::from_slice::<Value>(&p.value)
                                .is_ok_and(|o| sel.matches(&o))
                    });
                    let new_matches = sel.matches(&new);
                    let ty = match (e.kind, old_matched, new_matches) {
                        (EventKind::Delete, true, _) => "DELETED",
                        (EventKind::Delete, false, _) => continue,
                        (EventKind::Put, false, true) => "ADDED",
                        (EventKind::Put, true, true) => "MODIFIED",
                        (EventKind::Put, true, false) => "DELETED",
                        (EventKind::Put, false, false) => continue,
                    };
                    frame(ty, &new)
                }
            };
            if tx.send(Ok(out)).await.is_err() {
                break;
            }
        }
        st2.metrics
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(stream_response(rx))
}

fn stream_response(
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response")
}
