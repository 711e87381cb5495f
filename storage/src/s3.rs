//! The S3 backend, for AWS and S3-compatible servers (path-style addressing, custom endpoint).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{ArtifactStore, ByteRange, Key, ObjectInfo, ObjectRead, Result, StorageError, hex};

/// S3's smallest part size (all parts but the last).
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Object metadata key holding the content's sha256.
const SHA256_META: &str = "sha256";

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None` uses AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// Region (`garage` for Garage, anything for moto).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without trailing `/` (empty for none).
    pub prefix: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Files larger than this are uploaded in parts of this size (at least 5 MiB); it bounds the
    /// memory an upload holds.
    pub part_size: usize,
    /// Attempts per request before a failure is reported (covers brief outages).
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: "conda-store".into(),
            prefix: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            part_size: 16 * 1024 * 1024,
            max_attempts: 4,
        }
    }
}

/// Objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
}

fn backend(op: &'static str, key: &str, message: String) -> StorageError {
    StorageError::Backend {
        op,
        key: key.to_string(),
        message,
    }
}

fn sdk_err<E, R>(op: &'static str, key: &str, err: SdkError<E, R>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let message = match err.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(&err).to_string(),
    };
    backend(op, key, message)
}

impl S3Store {
    /// A client for `config`. Speaks rustls (ring) only; plain `http://` endpoints work for
    /// servers on loopback.
    pub fn new(config: &S3Config) -> S3Store {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &config.access_key,
                &config.secret_key,
                None,
                None,
                "conda-store-config",
            ))
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            )
            .http_client(http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.trim_matches('/').to_string(),
            part_size: config.part_size.max(MIN_PART_SIZE),
        }
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
            Err(e) => return Err(sdk_err("checking bucket", &self.bucket, e)),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("creating bucket", &self.bucket, e)),
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn strip(&self, full: &str) -> String {
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_string()
        }
    }

    async fn put_single(&self, key: &Key, data: Bytes) -> Result<ObjectInfo> {
        let sha256 = hex(&Sha256::digest(&data));
        let size = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .metadata(SHA256_META, &sha256)
            .content_length(size as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| sdk_err("writing", key.as_str(), e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            sha256: Some(sha256),
        })
    }

    /// Uploads `first` and the rest of `src` in parts; aborts the upload on any failure so no
    /// partial object or orphaned parts remain.
    async fn put_multipart(
        &self,
        key: &Key,
        first: Vec<u8>,
        src: &mut tokio::fs::File,
    ) -> Result<ObjectInfo> {
        let full = self.full_key(key.as_str());
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| sdk_err("starting upload of", key.as_str(), e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| backend("starting upload of", key.as_str(), "no upload id".into()))?
            .to_string();
        let result = self.upload_parts(key, &full, &upload_id, first, src).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &Key,
        full: &str,
        upload_id: &str,
        first: Vec<u8>,
        src: &mut tokio::fs::File,
    ) -> Result<ObjectInfo> {
        let mut hasher = Sha256::new();
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut chunk = first;
        let mut number = 1i32;
        loop {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(chunk.len() as i64)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| sdk_err("uploading part of", key.as_str(), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            chunk = read_chunk(src, self.part_size)
                .await
                .map_err(|source| StorageError::Io {
                    op: "reading source file for",
                    key: key.to_string(),
                    source,
                })?;
            if chunk.is_empty() {
                break;
            }
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_err("completing upload of", key.as_str(), e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            sha256: Some(hex(&hasher.finalize())),
        })
    }
}

/// Reads up to `size` bytes (fewer only at the end of the file).
async fn read_chunk(src: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    let mut limited = src.take(size as u64);
    limited.read_to_end(&mut buf).await?;
    Ok(buf)
}

#[async_trait]
impl ArtifactStore for S3Store {
    async fn put_file(&self, key: &Key, path: &Path) -> Result<ObjectInfo> {
        let mut src = crate::open_source(key, path).await?;
        let io = |source| StorageError::Io {
            op: "reading source file for",
            key: key.to_string(),
            source,
        };
        let first = read_chunk(&mut src, self.part_size).await.map_err(io)?;
        if first.len() < self.part_size {
            return self.put_single(key, first.into()).await;
        }
        // Exactly one part's worth might be the whole file; peek before going multipart.
        let mut probe = [0u8; 1];
        let n = src.read(&mut probe).await.map_err(io)?;
        if n == 0 {
            return self.put_single(key, first.into()).await;
        }
        src.seek(std::io::SeekFrom::Current(-1)).await.map_err(io)?;
        self.put_multipart(key, first, &mut src).await
    }

    async fn put_bytes(&self, key: &Key, data: Bytes) -> Result<ObjectInfo> {
        self.put_single(key, data).await
    }

    async fn get(&self, key: &Key, range: Option<ByteRange>) -> Result<ObjectRead> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()));
        if let Some(r) = range {
            let header = match r.end {
                Some(end) if end < r.start => {
                    return Err(StorageError::InvalidRange {
                        key: key.to_string(),
                        start: r.start,
                        end: r.end,
                        size: 0,
                    });
                }
                Some(end) => format!("bytes={}-{end}", r.start),
                None => format!("bytes={}-", r.start),
            };
            req = req.range(header);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StorageError::NotFound(key.to_string()));
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                let size = self.head(key).await?.map_or(0, |i| i.size);
                let r = range.expect("416 only answers range requests");
                return Err(StorageError::InvalidRange {
                    key: key.to_string(),
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            Err(e) => return Err(sdk_err("reading", key.as_str(), e)),
        };
        let len = resp.content_length().unwrap_or(0).max(0) as u64;
        // `Content-Range: bytes 0-9/100` carries the whole size on range reads.
        let total = resp
            .content_range()
            .and_then(|cr| cr.rsplit('/').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(len);
        Ok(ObjectRead {
            len,
            total,
            body: Box::pin(resp.body.into_async_read()),
        })
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .send()
            .await
        {
            Ok(h) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                sha256: h.metadata().and_then(|m| m.get(SHA256_META)).cloned(),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(sdk_err("inspecting", key.as_str(), e)),
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .send()
            .await
            .map_err(|e| sdk_err("deleting", key.as_str(), e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_err("listing", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: self.strip(k),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        sha256: None,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn presign_get(&self, key: &Key, expires: Duration) -> Result<Option<String>> {
        let config = PresigningConfig::expires_in(expires)
            .map_err(|e| backend("presigning", key.as_str(), e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .presigned(config)
            .await
            .map_err(|e| sdk_err("presigning", key.as_str(), e))?;
        Ok(Some(req.uri().to_string()))
    }
}
