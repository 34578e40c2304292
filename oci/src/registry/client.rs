//! The blocking registry client: `oci-client` for authentication (Docker Hub's token flow, basic
//! auth) and blob transfers, plain `reqwest` where a limit or check of kiln's is needed
//! (manifests are read with a size cap and their digest checked).

use super::config::RegistryConfig;
use super::credentials;
use super::{BlobStatus, Progress, RegistryError};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::{DEFAULT_REGISTRY, Reference};
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The largest manifest or index kiln accepts from a registry (the limit registries use too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The media types kiln asks for when fetching a manifest by reference.
pub(crate) const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long a registry may take to accept a connection, and to send the next bytes of an
/// answer: a registry that stops talking is an error, not a hang.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Blobs are uploaded in requests of this size.
const UPLOAD_CHUNK: usize = 8 << 20;
/// Blobs transferred at once by `fetch_blobs`.
const PARALLEL_TRANSFERS: usize = 4;

/// A manifest (or index) as the registry sent it.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub bytes: Vec<u8>,
    /// `Content-Type`, or the document's own `mediaType` when the registry sent none.
    pub media_type: String,
    /// The digest of `bytes` (checked against the reference's digest, if it had one).
    pub digest: Digest,
}

/// How a request is authorised, once the registry has said what it wants.
#[derive(Clone)]
enum Authz {
    Anonymous,
    Bearer(String),
    Basic(String, String),
}

/// A blocking client for OCI registries. Cheap to share by reference between threads.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    config: RegistryConfig,
    http: reqwest::Client,
    /// One `oci-client` client per registry host, speaking HTTP or HTTPS as the config says.
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
    /// Authorisation per (host, repository, push?), obtained once.
    authz: Mutex<HashMap<(String, String, bool), Authz>>,
}

impl Client {
    pub fn new(config: RegistryConfig) -> Result<Client> {
        super::install_tls_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| connection("http client", &e))?;
        Ok(Client {
            runtime,
            config,
            http,
            clients: Mutex::new(HashMap::new()),
            authz: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The manifest or index `reference` names (by digest if it has one, else by tag).
    pub fn fetch_manifest(&self, reference: &Reference) -> Result<RemoteManifest> {
        self.runtime
            .block_on(self.fetch_manifest_from(reference, reference.registry()))
    }

    /// Uploads `bytes` as the manifest `reference` names (its tag, else its digest); returns
    /// the manifest's digest.
    pub fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        self.runtime.block_on(async {
            let target = self.target(reference, reference.registry());
            let oci = self.oci(reference.registry());
            self.authorize(&oci, &target, true).await?;
            let content_type = media_type.parse().map_err(|_| {
                Error::from(RegistryError::InvalidManifest {
                    reference: reference.to_string(),
                    reason: format!("invalid media type {media_type:?}"),
                })
            })?;
            oci.push_manifest_raw(&target, bytes.to_vec(), content_type)
                .await
                .map_err(|e| map_oci(reference.registry(), &format!("manifest {reference}"), e))?;
            Ok(Digest::of(bytes))
        })
    }

    /// Whether the repository of `reference` has the blob `digest` (`HEAD`).
    pub fn blob_exists(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        self.runtime
            .block_on(self.blob_exists_async(reference, digest))
    }

    /// Downloads a blob into `store`, verified against `digest` and `size` before it is
    /// committed. A blob the store already has is not fetched.
    pub fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<BlobStatus> {
        self.runtime.block_on(self.fetch_blob_from(
            reference,
            reference.registry(),
            digest,
            size,
            store,
            progress,
        ))
    }

    /// Uploads a store blob to the repository of `reference`: skipped when the registry has it,
    /// mounted from one of `mount_from` (repositories of the same registry) when possible,
    /// uploaded in chunks otherwise.
    pub fn push_blob(
        &self,
        reference: &Reference,
        store: &Store,
        digest: &Digest,
        mount_from: &[String],
        progress: &dyn Progress,
    ) -> Result<BlobStatus> {
        self.runtime
            .block_on(self.push_blob_async(reference, store, digest, mount_from, progress))
    }

    /// Checks that `registry` accepts these credentials (`GET /v2/`, through its token
    /// service if it has one).
    pub fn check_login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        self.runtime
            .block_on(self.check_login_async(registry, username, password))
    }

    // --- crate-internal operations, shared by pull and push -------------------------------

    /// Runs `work` on the client's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// The hosts to pull `reference` from: the mirrors first for Docker Hub, then the registry.
    pub(crate) fn pull_hosts(&self, reference: &Reference) -> Vec<String> {
        let mut hosts = Vec::new();
        if reference.registry() == DEFAULT_REGISTRY {
            hosts.extend(self.config.mirror_hosts());
        }
        hosts.push(reference.registry().to_string());
        hosts
    }

    pub(crate) async fn fetch_manifest_from(
        &self,
        reference: &Reference,
        host: &str,
    ) -> Result<RemoteManifest> {
        let what = format!("manifest {reference}");
        let target = self.target(reference, host);
        let oci = self.oci(host);
        let authz = self.authorize(&oci, &target, false).await?;
        let url = self.url(
            &target,
            &format!(
                "manifests/{}",
                reference
                    .digest()
                    .map(|d| d.to_string())
                    .or_else(|| reference.tag().map(str::to_string))
                    .unwrap_or_else(|| "latest".into())
            ),
        );
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        let response = send(apply(request, &authz), target.resolve_registry(), &what).await?;
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let registry = target.resolve_registry().to_string();
        let too_large = |size: u64| RegistryError::BadContent {
            registry: registry.clone(),
            what: what.clone(),
            reason: format!("it is {size} bytes; manifests are at most {MAX_MANIFEST_SIZE}"),
        };
        if let Some(len) = response.content_length()
            && len > MAX_MANIFEST_SIZE
        {
            return Err(too_large(len).into());
        }
        let mut bytes = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| connection(&registry, &e))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(too_large(bytes.len() as u64).into());
            }
        }
        let digest = Digest::of(&bytes);
        let expected = reference.digest().or(header_digest.as_ref());
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(RegistryError::BadContent {
                registry,
                what,
                reason: format!("its digest is {digest}, not {expected}"),
            }
            .into());
        }
        let media_type = match content_type.filter(|t| MANIFEST_TYPES.contains(&t.as_str())) {
            Some(t) => t,
            None => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
                .unwrap_or_else(|| MANIFEST_TYPES[1].to_string()),
        };
        Ok(RemoteManifest {
            bytes,
            media_type,
            digest,
        })
    }

    pub(crate) async fn fetch_blob_from(
        &self,
        reference: &Reference,
        host: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<BlobStatus> {
        if store.retain_blob(digest)? {
            progress.finished(digest, BlobStatus::AlreadyInStore);
            return Ok(BlobStatus::AlreadyInStore);
        }
        let mut writer = store.blob_writer()?;
        self.stream_blob(reference, host, digest, size, &mut writer, progress)
            .await?;
        writer.commit(Some(digest)).map_err(|e| match e {
            Error::DigestMismatch { actual, .. } => Error::from(RegistryError::BadContent {
                registry: host.to_string(),
                what: format!("blob {digest}"),
                reason: format!("its content has the digest {actual}; refused"),
            }),
            other => other,
        })?;
        progress.finished(digest, BlobStatus::Pulled);
        Ok(BlobStatus::Pulled)
    }

    /// Streams a blob of exactly `size` bytes into `sink`, unverified (the caller checks the
    /// digest): a body longer or shorter than `size` is an error.
    async fn stream_blob(
        &self,
        reference: &Reference,
        host: &str,
        digest: &Digest,
        size: u64,
        sink: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<()> {
        let what = format!("blob {digest}");
        let target = self.target(reference, host);
        let oci = self.oci(host);
        self.authorize(&oci, &target, false).await?;
        progress.started(digest, size);
        let sized = oci
            .pull_blob_stream(&target, digest.as_str())
            .await
            .map_err(|e| map_oci(host, &what, e))?;
        let bad = |reason: String| RegistryError::BadContent {
            registry: host.to_string(),
            what: what.clone(),
            reason,
        };
        let mut received = 0u64;
        let mut stream = sized.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                bad(format!(
                    "the download failed after {received} of its {size} bytes: {}",
                    chain(&e)
                ))
            })?;
            if received + chunk.len() as u64 > size {
                return Err(bad(format!(
                    "it is longer than the {size} bytes its descriptor says"
                ))
                .into());
            }
            sink.write_all(&chunk)
                .map_err(|e| Error::io(format!("writing {what}"), e))?;
            received += chunk.len() as u64;
            progress.advanced(digest, received);
        }
        if received != size {
            return Err(bad(format!("the registry sent {received} of its {size} bytes")).into());
        }
        Ok(())
    }

    /// Streams a blob of the repository of `reference` into `sink`, unverified; a body that
    /// is not `size` bytes long is an error.
    pub fn fetch_blob_to(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        sink: &mut dyn Write,
    ) -> Result<()> {
        self.runtime.block_on(self.stream_blob(
            reference,
            reference.registry(),
            digest,
            size,
            sink,
            &super::NoProgress,
        ))
    }

    /// Uploads a small blob held in memory (a config) to the repository of `reference`, in one
    /// request, unless the registry has it.
    pub fn push_blob_bytes(
        &self,
        reference: &Reference,
        digest: &Digest,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.runtime.block_on(async {
            let registry = reference.registry();
            let what = format!("blob {digest}");
            let target = self.target(reference, registry);
            let oci = self.oci(registry);
            self.authorize(&oci, &target, true).await?;
            if oci
                .blob_exists(&target, digest.as_str())
                .await
                .map_err(|e| map_oci(registry, &what, e))?
            {
                return Ok(());
            }
            oci.push_blob(&target, bytes, digest.as_str())
                .await
                .map_err(|e| map_oci(registry, &what, e))?;
            Ok(())
        })
    }

    /// Fetches several blobs at once (a few in parallel); the first failure is returned.
    pub(crate) async fn fetch_blobs(
        &self,
        reference: &Reference,
        host: &str,
        blobs: &[(Digest, u64)],
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<Vec<BlobStatus>> {
        futures_util::stream::iter(blobs.iter().map(|(digest, size)| {
            self.fetch_blob_from(reference, host, digest, *size, store, progress)
        }))
        .buffered(PARALLEL_TRANSFERS)
        .try_collect()
        .await
    }

    pub(crate) async fn blob_exists_async(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool> {
        let registry = reference.registry();
        let target = self.target(reference, registry);
        let oci = self.oci(registry);
        self.authorize(&oci, &target, false).await?;
        oci.blob_exists(&target, digest.as_str())
            .await
            .map_err(|e| map_oci(registry, &format!("blob {digest}"), e).into())
    }

    pub(crate) async fn push_blob_async(
        &self,
        reference: &Reference,
        store: &Store,
        digest: &Digest,
        mount_from: &[String],
        progress: &dyn Progress,
    ) -> Result<BlobStatus> {
        let registry = reference.registry();
        let what = format!("blob {digest}");
        let target = self.target(reference, registry);
        let oci = self.oci(registry);
        self.authorize(&oci, &target, true).await?;
        if oci
            .blob_exists(&target, digest.as_str())
            .await
            .map_err(|e| map_oci(registry, &what, e))?
        {
            progress.finished(digest, BlobStatus::AlreadyInRegistry);
            return Ok(BlobStatus::AlreadyInRegistry);
        }
        for repository in mount_from.iter().filter(|r| **r != target.repository()) {
            let source = oci_client::Reference::with_tag(
                target.registry().to_string(),
                repository.clone(),
                "latest".into(),
            );
            if oci
                .mount_blob(&target, &source, digest.as_str())
                .await
                .is_ok()
            {
                progress.finished(digest, BlobStatus::Mounted);
                return Ok(BlobStatus::Mounted);
            }
        }
        let path = store.blob_path(digest);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        progress.started(digest, size);
        // The stream must be 'static, so it counts what it has read in a shared counter, which
        // the progress display is shown from while the upload runs.
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let chunks = Chunks {
            file,
            path: path.clone(),
        }
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        let upload = oci.push_blob_stream_chunked(&target, chunks);
        tokio::pin!(upload);
        let pushed = loop {
            tokio::select! {
                result = &mut upload => break result,
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    progress.advanced(digest, sent.load(Ordering::Relaxed));
                }
            }
        }
        .map_err(|e| map_oci(registry, &what, e))?;
        progress.advanced(digest, sent.load(Ordering::Relaxed));
        if pushed.blob_digest != digest.as_str() {
            return Err(RegistryError::BadContent {
                registry: registry.to_string(),
                what,
                reason: format!(
                    "the store's copy hashes to {}; run `kiln fsck`",
                    pushed.blob_digest
                ),
            }
            .into());
        }
        progress.finished(digest, BlobStatus::Pushed);
        Ok(BlobStatus::Pushed)
    }

    async fn check_login_async(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<()> {
        let scheme = self.scheme(registry);
        let host = api_host(registry);
        let url = format!("{scheme}://{host}/v2/");
        let what = format!("{registry} login");
        let first = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| connection(registry, &e))?;
        let challenge = first
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let basic = Authz::Basic(username.to_string(), password.to_string());
        let response = match challenge {
            Some(c) if c.to_ascii_lowercase().starts_with("bearer") => {
                let params = challenge_params(&c);
                let realm = params.get("realm").cloned().ok_or_else(|| {
                    Error::from(RegistryError::Unauthorized {
                        registry: registry.to_string(),
                        message: "the registry's challenge has no realm".into(),
                    })
                })?;
                let mut request = self.http.get(&realm);
                if let Some(service) = params.get("service") {
                    request = request.query(&[("service", service)]);
                }
                send(apply(request, &basic), registry, &what).await?
            }
            _ => send(apply(self.http.get(&url), &basic), registry, &what).await?,
        };
        drop(response);
        Ok(())
    }

    // --- plumbing ----------------------------------------------------------------------------

    fn scheme(&self, host: &str) -> &'static str {
        if self.config.is_insecure(host) {
            "http"
        } else {
            "https"
        }
    }

    /// The `oci-client` reference for `reference` on `host` (a mirror, or its registry).
    fn target(&self, reference: &Reference, host: &str) -> oci_client::Reference {
        let registry = reference.registry().to_string();
        let repository = reference.repository();
        let mut target = match (reference.tag(), reference.digest()) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.to_string(),
                digest.to_string(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.to_string())
            }
            (tag, None) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.unwrap_or(crate::reference::DEFAULT_TAG).to_string(),
            ),
        };
        if host != reference.registry() {
            target.set_mirror_registry(host.to_string());
        }
        target
    }

    fn url(&self, target: &oci_client::Reference, rest: &str) -> String {
        let host = target.resolve_registry();
        let ns = target
            .namespace()
            .map(|ns| format!("?ns={ns}"))
            .unwrap_or_default();
        format!(
            "{}://{host}/v2/{}/{rest}{ns}",
            self.scheme(host),
            target.repository()
        )
    }

    fn oci(&self, host: &str) -> Arc<oci_client::Client> {
        let host = api_host(host).to_string();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(host.clone())
            .or_insert_with(|| {
                Arc::new(oci_client::Client::new(ClientConfig {
                    protocol: if self.config.is_insecure(&host) {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    platform_resolver: None,
                    connect_timeout: Some(CONNECT_TIMEOUT),
                    read_timeout: Some(READ_TIMEOUT),
                    user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")),
                    ..ClientConfig::default()
                }))
            })
            .clone()
    }

    /// Authenticates for `target` (once per repository and operation): anonymous, basic, or a
    /// bearer token from the registry's token service, with Docker's credentials if any.
    async fn authorize(
        &self,
        oci: &oci_client::Client,
        target: &oci_client::Reference,
        push: bool,
    ) -> Result<Authz> {
        let host = target.resolve_registry().to_string();
        let key = (host.clone(), target.repository().to_string(), push);
        if let Some(found) = self
            .authz
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let auth = match credentials::lookup(target.registry())? {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        };
        let operation = if push {
            RegistryOperation::Push
        } else {
            RegistryOperation::Pull
        };
        let token = oci
            .auth(target, &auth, operation)
            .await
            .map_err(|e| map_oci(&host, "authentication", e))?;
        let authz = match (token, auth) {
            (Some(token), _) => Authz::Bearer(token),
            (None, RegistryAuth::Basic(user, password)) => Authz::Basic(user, password),
            (None, _) => Authz::Anonymous,
        };
        self.authz
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, authz.clone());
        Ok(authz)
    }
}

/// A store blob read in upload-sized chunks.
struct Chunks {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl futures_util::Stream for Chunks {
    type Item = std::result::Result<bytes::Bytes, OciDistributionError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
                    return std::task::Poll::Ready(Some(Err(e.into())));
                }
            }
        }
        if filled == 0 {
            return std::task::Poll::Ready(None);
        }
        buf.truncate(filled);
        std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(buf))))
    }
}

/// Docker Hub's API lives on another host than its name.
fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        "index.docker.io"
    } else {
        registry
    }
}

fn apply(request: reqwest::RequestBuilder, authz: &Authz) -> reqwest::RequestBuilder {
    match authz {
        Authz::Anonymous => request,
        Authz::Bearer(token) => request.bearer_auth(token),
        Authz::Basic(user, password) => request.basic_auth(user, Some(password)),
    }
}

/// Sends a request; an error status becomes the matching [`RegistryError`].
async fn send(
    request: reqwest::RequestBuilder,
    registry: &str,
    what: &str,
) -> Result<reqwest::Response> {
    let response = request.send().await.map_err(|e| connection(registry, &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message: String = body.trim().chars().take(300).collect();
    Err(match status.as_u16() {
        401 | 403 => RegistryError::Unauthorized {
            registry: registry.to_string(),
            message: if message.is_empty() {
                status.to_string()
            } else {
                message
            },
        },
        404 => RegistryError::NotFound {
            what: what.to_string(),
        },
        code => RegistryError::Status {
            what: what.to_string(),
            status: code,
            message: if message.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                message
            },
        },
    }
    .into())
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
fn challenge_params(challenge: &str) -> HashMap<String, String> {
    let rest = challenge.split_once(' ').map_or("", |(_, r)| r);
    let mut params = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            params.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    params
}

/// An error with its causes, which reqwest keeps out of its own message.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn connection(registry: &str, error: &dyn std::error::Error) -> Error {
    RegistryError::Connection {
        registry: registry.to_string(),
        message: chain(error),
    }
    .into()
}

fn map_oci(registry: &str, what: &str, error: OciDistributionError) -> RegistryError {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            registry: registry.to_string(),
            message: chain(&error),
        },
        OciDistributionError::ServerError { code, message, .. } => {
            if code == 404 {
                RegistryError::NotFound {
                    what: what.to_string(),
                }
            } else if code == 401 || code == 403 {
                RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    message,
                }
            } else {
                RegistryError::Status {
                    what: what.to_string(),
                    status: code,
                    message,
                }
            }
        }
        OciDistributionError::RegistryError { ref envelope, .. } => {
            let text = chain(&error);
            if envelope.errors.iter().any(|e| {
                let code = format!("{:?}", e.code).to_ascii_lowercase();
                code.contains("unauthorized") || code.contains("denied")
            }) {
                RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    message: text,
                }
            } else if envelope.errors.iter().any(|e| {
                format!("{:?}", e.code)
                    .to_ascii_lowercase()
                    .contains("unknown")
            }) {
                RegistryError::NotFound {
                    what: what.to_string(),
                }
            } else {
                RegistryError::Status {
                    what: what.to_string(),
                    status: 400,
                    message: text,
                }
            }
        }
        OciDistributionError::RequestError(ref e) if e.status().is_some() => {
            let status = e.status().map_or(0, |s| s.as_u16());
            match status {
                401 | 403 => RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    message: format!("{what}: {}", chain(&error)),
                },
                404 => RegistryError::NotFound {
                    what: what.to_string(),
                },
                _ => RegistryError::Status {
                    what: what.to_string(),
                    status,
                    message: chain(&error),
                },
            }
        }
        OciDistributionError::DigestError(_) => RegistryError::BadContent {
            registry: registry.to_string(),
            what: what.to_string(),
            reason: chain(&error),
        },
        other => RegistryError::Connection {
            registry: registry.to_string(),
            message: format!("{what}: {}", chain(&other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NoProgress;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    const BLOB: &[u8] = b"layer bytes";
    const MANIFEST: &[u8] =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

    /// A registry that answers from a table, on a free loopback port; returns `host:port`.
    fn serve() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut words = request.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let good = Digest::of(BLOB);
                let (status, headers, body): (&str, String, Vec<u8>) = match path {
                    "/v2/" => ("200 OK", String::new(), b"{}".to_vec()),
                    "/v2/r/manifests/ok" => (
                        "200 OK",
                        format!(
                            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                         Docker-Content-Digest: {}\r\n",
                            Digest::of(MANIFEST)
                        ),
                        MANIFEST.to_vec(),
                    ),
                    "/v2/r/manifests/lying" => (
                        "200 OK",
                        format!("Docker-Content-Digest: {}\r\n", Digest::of(b"other")),
                        MANIFEST.to_vec(),
                    ),
                    p if p == format!("/v2/r/blobs/{good}") => {
                        ("200 OK", String::new(), BLOB.to_vec())
                    }
                    // Same length, other bytes.
                    p if p.starts_with("/v2/r/blobs/") => {
                        ("200 OK", String::new(), b"LAYER BYTES".to_vec())
                    }
                    _ => ("404 Not Found", String::new(), Vec::new()),
                };
                let body = if method == "HEAD" { Vec::new() } else { body };
                let length = if method == "HEAD" && status.starts_with("200") {
                    BLOB.len()
                } else {
                    body.len()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nConnection: close\r\n{headers}Content-Length: {length}\r\n\r\n"
                );
                let _ = stream.write_all(&body);
            }
        });
        host
    }

    #[test]
    fn low_level_operations_verify_what_they_get() {
        let host = serve();
        let client = Client::new(RegistryConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reference = |r: &str| Reference::parse(&format!("{host}/{r}")).unwrap();

        let manifest = client.fetch_manifest(&reference("r:ok")).unwrap();
        assert_eq!(manifest.bytes, MANIFEST);
        assert_eq!(manifest.digest, Digest::of(MANIFEST));
        assert_eq!(manifest.media_type, MANIFEST_TYPES[1]);
        let err = client
            .fetch_manifest(&reference("r:lying"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("its digest is"), "{err}");
        let pinned = reference("r").with_digest(Digest::of(b"something else"));
        let err = client.fetch_manifest(&pinned).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");

        let good = Digest::of(BLOB);
        let bad = Digest::of(b"not what the server sends");
        assert!(client.blob_exists(&reference("r"), &good).unwrap());
        assert!(!client.blob_exists(&reference("q"), &good).unwrap());
        let fetch = |digest: &Digest, size: u64, store: &Store| {
            client.fetch_blob(&reference("r"), digest, size, store, &NoProgress)
        };
        let size = BLOB.len() as u64;
        assert_eq!(fetch(&good, size, &store).unwrap(), BlobStatus::Pulled);
        assert_eq!(store.read_blob(&good, None).unwrap(), BLOB);
        assert_eq!(
            fetch(&good, size, &store).unwrap(),
            BlobStatus::AlreadyInStore
        );
        let err = fetch(&bad, size, &store).unwrap_err().to_string();
        assert!(
            err.contains(&format!("blob {bad}")) && err.contains("digest"),
            "{err}"
        );
        assert!(!store.has_blob(&bad));
        let other_store = Store::open(dir.path().join("s2")).unwrap();
        let err = fetch(&good, 3, &other_store).unwrap_err().to_string();
        assert!(err.contains("longer than the 3 bytes"), "{err}");
    }

    #[test]
    fn reads_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
        );
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
    }
}
