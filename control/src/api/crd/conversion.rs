//! Conversion webhooks: a CRD with `spec.conversion.strategy: Webhook`
//! has its objects converted between versions by a webhook it names, as
//! apiextensions-apiserver's `webhookConverter` does.
//!
//! Objects are sent in one `ConversionReview` per call (a list page at
//! once, in reviews of at most 100 objects and about 1 MiB), in the first
//! review version of the CRD's `conversionReviewVersions` the apiserver
//! speaks (`v1`, else `v1beta1`),
//! through the same HTTPS client as admission webhooks (URL or Service,
//! `caBundle`), within 30 seconds as upstream allows. The answer is checked
//! as upstream checks it: the request's uid, `result.status` `Success`
//! (else the webhook's message is the error), as many objects as were
//! sent, each of the desired `apiVersion` and the same `kind`; of its
//! metadata only labels and annotations may change, the rest is put back
//! from the object sent. Any failure fails the request with a `500`
//! naming the webhook, never serving or storing an unconverted object.
//!
//! Objects already at the desired version are not sent; a CRD without a
//! webhook converts by setting `apiVersion` (the `None` strategy).

use std::time::Duration;

use serde_json::{Value, json};

use super::definition::CONVERSION_REVIEW_VERSIONS;
use crate::api::{ApiState, resources::Resource, status::ApiError, webhook::call};

/// How long a conversion webhook may take (upstream's fixed timeout).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A CRD's conversion webhook.
#[derive(Debug)]
pub struct Webhook {
    pub client: call::Client,
    /// The `ConversionReview` version spoken to it.
    pub review_version: &'static str,
}

impl Webhook {
    /// The webhook of a stored CRD's `spec.conversion`, if its strategy is
    /// `Webhook`; the error says why it cannot be called.
    pub fn of(conversion: &Value) -> Option<Result<Self, String>> {
        if conversion["strategy"].as_str() != Some("Webhook") {
            return None;
        }
        let webhook = &conversion["webhook"];
        let offered = crate::api::object::strings(&webhook["conversionReviewVersions"]);
        let Some(review_version) = offered
            .iter()
            .find_map(|v| CONVERSION_REVIEW_VERSIONS.iter().find(|s| *s == v))
        else {
            return Some(Err(format!(
                "no supported conversionReviewVersions among {offered:?}"
            )));
        };
        Some(
            call::Client::of(&webhook["clientConfig"], TIMEOUT).map(|client| Self {
                client,
                review_version,
            }),
        )
    }
}

fn api_version(obj: &Value) -> &str {
    obj["apiVersion"].as_str().unwrap_or("")
}

/// `objects` (each at some version of `r`'s CRD) at `desired`
/// (`group/version`).
pub async fn convert(
    st: &ApiState,
    r: &Resource,
    mut objects: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let pending: Vec<usize> = (0..objects.len())
        .filter(|i| api_version(&objects[*i]) != desired)
        .collect();
    if pending.is_empty() {
        return Ok(objects);
    }
    let hook = super::of(r).and_then(|v| v.conversion.clone());
    let Some(hook) = hook else {
        for i in pending {
            objects[i]["apiVersion"] = json!(desired);
        }
        return Ok(objects);
    };
    let failed = |why: String| {
        ApiError::internal(format!(
            "conversion webhook for {}, Kind={} failed: {why}",
            desired, r.kind
        ))
    };
    let hook = hook.as_ref().as_ref().map_err(|e| failed(e.clone()))?;
    for batch in batches(&objects, &pending) {
        let sent: Vec<Value> = batch.iter().map(|i| objects[*i].clone()).collect();
        let uid = uuid::Uuid::new_v4().to_string();
        let review = json!({
            "apiVersion": format!("apiextensions.k8s.io/{}", hook.review_version),
            "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": desired, "objects": sent},
        });
        let answer = call::post_review(st, &hook.client, &review, "ConversionReview")
            .await
            .map_err(failed)?;
        let converted = judge(&answer, &uid, &sent, desired).map_err(failed)?;
        for (i, obj) in batch.into_iter().zip(converted) {
            objects[i] = obj;
        }
    }
    Ok(objects)
}

/// The most objects, and about the most bytes of them, one review sends:
/// a long list goes in several, so that no answer outgrows what is read
/// from a webhook (a single larger object goes alone).
const BATCH_OBJECTS: usize = 100;
const BATCH_BYTES: usize = 1 << 20;

/// `pending` (indexes into `objects`) cut into reviews.
fn batches(objects: &[Value], pending: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in pending {
        let size = serde_json::to_vec(&objects[i]).map_or(0, |v| v.len());
        match out.last_mut() {
            Some(b) if b.len() < BATCH_OBJECTS && bytes + size <= BATCH_BYTES => {
                b.push(i);
                bytes += size;
            }
            _ => {
                out.push(vec![i]);
                bytes = size;
            }
        }
    }
    out
}

/// The converted objects of a webhook's answer, checked against what was
/// sent.
fn judge(answer: &Value, uid: &str, sent: &[Value], desired: &str) -> Result<Vec<Value>, String> {
    let resp = answer
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("the answer has no response")?;
    if resp["uid"].as_str() != Some(uid) {
        return Err(format!(
            "expected response.uid={uid:?}, got {:?}",
            resp["uid"].as_str().unwrap_or("")
        ));
    }
    if resp["result"]["status"].as_str() != Some("Success") {
        return Err(format!(
            "conversion webhook returned failure: {}",
            resp["result"]["message"].as_str().unwrap_or("")
        ));
    }
    let out = resp["convertedObjects"]
        .as_array()
        .ok_or("the response has no convertedObjects")?;
    if out.len() != sent.len() {
        return Err(format!(
            "returned {} objects, expected {}",
            out.len(),
            sent.len()
        ));
    }
    sent.iter()
        .zip(out)
        .map(|(before, after)| restore(before, after.clone(), desired))
        .collect()
}

/// A converted object with the metadata of the one sent, but for the
/// labels and annotations the webhook may change.
fn restore(before: &Value, mut after: Value, desired: &str) -> Result<Value, String> {
    if !after.is_object() {
        return Err("a converted object is not an object".into());
    }
    if api_version(&after) != desired {
        return Err(format!(
            "invalid apiVersion {:?}, expected {desired:?}",
            api_version(&after)
        ));
    }
    if after["kind"] != before["kind"] {
        return Err(format!(
            "invalid kind {}, expected {}",
            after["kind"], before["kind"]
        ));
    }
    let mut meta = before["metadata"].as_object().cloned().unwrap_or_default();
    for key in ["labels", "annotations"] {
        match after["metadata"].get(key) {
            None | Some(Value::Null) => {
                meta.remove(key);
            }
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {
                meta.insert(key.to_owned(), Value::Object(m.clone()));
            }
            Some(_) => return Err(format!("invalid metadata.{key}: not a map of strings")),
        }
    }
    after["metadata"] = Value::Object(meta);
    Ok(after)
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    /// A Widget as stored.
    fn object(api_version: &str, name: &str, spec: &Value) -> Value {
        let mut meta = Map::new();
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!("u-1"));
        meta.insert("resourceVersion".into(), json!("7"));
        json!({"apiVersion": api_version, "kind": "Widget", "metadata": meta, "spec": spec})
    }

    fn answer(uid: &str, objects: &[Value]) -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
               "response": {"uid": uid, "result": {"status": "Success"}, "convertedObjects": objects}})
    }

    #[test]
    fn a_good_answer_keeps_the_metadata_but_labels_and_annotations() {
        let sent = vec![object("x.io/v1", "a", &json!({"size": "2"}))];
        let mut back = object("x.io/v2", "a", &json!({"replicas": 2}));
        back["metadata"]["name"] = json!("renamed");
        back["metadata"]["uid"] = json!("other");
        back["metadata"]["labels"] = json!({"converted": "yes"});
        let out = judge(&answer("u", &[back]), "u", &sent, "x.io/v2").unwrap();
        assert_eq!(out[0]["apiVersion"], "x.io/v2");
        assert_eq!(out[0]["spec"], json!({"replicas": 2}));
        assert_eq!(out[0]["metadata"]["name"], "a");
        assert_eq!(out[0]["metadata"]["uid"], "u-1");
        assert_eq!(out[0]["metadata"]["resourceVersion"], "7");
        assert_eq!(out[0]["metadata"]["labels"], json!({"converted": "yes"}));
    }

    #[test]
    fn bad_answers_are_errors_as_upstream_words_them() {
        let sent = vec![object("x.io/v1", "a", &json!({}))];
        let good = object("x.io/v2", "a", &json!({}));
        let cases = [
            (
                answer("other", std::slice::from_ref(&good)),
                "expected response.uid=\"u\"",
            ),
            (answer("u", &[]), "returned 0 objects, expected 1"),
            (
                answer("u", &[object("x.io/v1", "a", &json!({}))]),
                "invalid apiVersion \"x.io/v1\"",
            ),
            (
                {
                    let mut w = good.clone();
                    w["kind"] = json!("Gadget");
                    answer("u", &[w])
                },
                "invalid kind \"Gadget\"",
            ),
            (
                json!({"response": {"uid": "u", "result": {"status": "Failure", "message": "no way"}}}),
                "conversion webhook returned failure: no way",
            ),
            (json!({}), "the answer has no response"),
            (
                {
                    let mut w = good;
                    w["metadata"]["labels"] = json!({"a": 1});
                    answer("u", &[w])
                },
                "invalid metadata.labels",
            ),
        ];
        for (a, want) in cases {
            let e = judge(&a, "u", &sent, "x.io/v2").unwrap_err();
            assert!(e.contains(want), "{e} / {want}");
        }
    }

    #[test]
    fn long_lists_go_in_several_reviews() {
        let small: Vec<Value> = (0..250).map(|i| json!({"i": i})).collect();
        let all: Vec<usize> = (0..250).collect();
        let sizes: Vec<usize> = batches(&small, &all).iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let big = json!({"data": "x".repeat(700 << 10)});
        let mixed = vec![big.clone(), json!({}), big.clone(), big];
        let cut = batches(&mixed, &[0, 1, 2, 3]);
        assert_eq!(cut, [vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn only_webhook_strategies_have_a_webhook_and_the_review_version_is_negotiated() {
        assert!(Webhook::of(&json!({"strategy": "None"})).is_none());
        let hook = |versions: Value| {
            Webhook::of(&json!({"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": "https://127.0.0.1:1/convert"},
                "conversionReviewVersions": versions}}))
            .unwrap()
        };
        assert_eq!(
            hook(json!(["v2", "v1beta1", "v1"])).unwrap().review_version,
            "v1beta1"
        );
        assert_eq!(hook(json!(["v1"])).unwrap().review_version, "v1");
        assert!(hook(json!(["v9"])).is_err());
    }
}
