//! Content and images: blobs read and written under a lease, their GC
//! labels, and image records.

use super::*;

impl Containerd {
    /// A blob's labels, or `None` when the content store does not have it.
    pub async fn content_labels(&self, digest: &str) -> Result<Option<HashMap<String, String>>> {
        match ContentClient::new(self.channel.clone())
            .info(self.req(
                api::InfoRequest {
                    digest: digest.to_string(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(Some(
                r.into_inner().info.map(|i| i.labels).unwrap_or_default(),
            )),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call_err("content info", digest)(s)),
        }
    }

    /// Reads a whole blob (manifests and configs: small).
    pub async fn content_read(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.req(
                api::ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(call_err("content read", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(call_err("content read", digest))?.data);
        }
        Ok(out)
    }

    /// Writes a blob from `file` (whose digest the caller verified) and
    /// commits it under `digest` with `labels`. Content that exists already
    /// is not an error.
    pub async fn content_write(
        &self,
        lease: &str,
        digest: &str,
        mut file: std::fs::File,
        size: u64,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        use std::io::Read as _;
        const CHUNK: usize = 1 << 20;
        let reference = format!("rudder-{digest}");
        let (tx, rx) = tokio::sync::mpsc::channel::<api::WriteContentRequest>(4);
        let total = i64::try_from(size).unwrap_or(i64::MAX);
        let digest_owned = digest.to_string();
        // Reading the file is blocking; it feeds the gRPC stream.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut offset = 0i64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let req = api::WriteContentRequest {
                    action: api::WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: digest_owned.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                    labels: HashMap::new(),
                };
                offset += n as i64;
                if tx.blocking_send(req).is_err() {
                    return Ok(());
                }
            }
            let _ = tx.blocking_send(api::WriteContentRequest {
                action: api::WriteAction::Commit as i32,
                r#ref: reference,
                total,
                expected: digest_owned,
                offset,
                data: vec![],
                labels,
            });
            Ok(())
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let result = ContentClient::new(self.channel.clone())
            .write(self.req(stream, Some(lease)))
            .await;
        let mut responses = match result {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(call_err("content write", digest)(s)),
        };
        let mut committed = false;
        while let Some(resp) = responses.next().await {
            match resp {
                Ok(r) if r.action == api::WriteAction::Commit as i32 => committed = true,
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(call_err("content write", digest)(s)),
            }
        }
        reader
            .await
            .map_err(|e| ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: e.to_string(),
            })?
            .map_err(|e| ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: format!("reading the downloaded blob: {e}"),
            })?;
        if committed {
            Ok(())
        } else {
            Err(ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: "the stream ended without a commit".into(),
            })
        }
    }

    /// Adds labels to a blob (GC references, `containerd.io/uncompressed`).
    pub async fn content_add_labels(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.req(
                api::UpdateRequest {
                    info: Some(api::Info {
                        digest: digest.to_string(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths }),
                },
                None,
            ))
            .await
            .map_err(call_err("content update", digest))?;
        Ok(())
    }

    /// An image's target descriptor, or `None` if containerd has no image of
    /// that name.
    pub async fn image_get(&self, name: &str) -> Result<Option<Descriptor>> {
        match ImagesClient::new(self.channel.clone())
            .get(self.req(
                api::GetImageRequest {
                    name: name.to_string(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call_err("image get", name)(s)),
        }
    }

    /// Every image name with its target digest.
    pub async fn image_list(&self) -> Result<Vec<(String, Descriptor)>> {
        let r = ImagesClient::new(self.channel.clone())
            .list(self.req(api::ListImagesRequest { filters: vec![] }, None))
            .await
            .map_err(call_err("image list", ""))?
            .into_inner();
        Ok(r.images
            .into_iter()
            .filter_map(|i| Some((i.name, i.target?)))
            .collect())
    }

    /// Creates the image record, or points an existing one at `target`.
    pub async fn image_put(&self, name: &str, target: Descriptor) -> Result<()> {
        let image = api::Image {
            name: name.to_string(),
            target: Some(target),
            ..Default::default()
        };
        let mut client = ImagesClient::new(self.channel.clone());
        match client
            .create(self.req(
                api::CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                client
                    .update(self.req(
                        api::UpdateImageRequest {
                            image: Some(image),
                            update_mask: Some(FieldMask {
                                paths: vec!["target".into()],
                            }),
                            source_date_epoch: None,
                        },
                        None,
                    ))
                    .await
                    .map_err(call_err("image update", name))?;
                Ok(())
            }
            Err(s) => Err(call_err("image create", name)(s)),
        }
    }
}
