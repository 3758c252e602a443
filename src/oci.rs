//! OCI registries (the distribution spec) as a source of assets and manifests.
//!
//! An asset's SHA-256 is its OCI blob digest, so `oci://HOST[:PORT]/REPO` as an asset URL
//! means "the blob `sha256:<digest>` of REPO on HOST". The fetcher turns such a URL into the
//! blob URL `/v2/REPO/blobs/sha256:<digest>` plus an `Authorization` header from `Registry`,
//! and then downloads it on its ordinary path (hash in one pass, size enforced, Range resume,
//! retries, single flight). The protocol parts are written here by hand rather than taken from
//! `oci-client`: that crate owns the request (and its own reqwest major version), so it cannot
//! hand the body to our resumable, hashing fetcher; the part we need is small (a ping, the
//! token flow, blob GET/HEAD, upload, manifest GET/PUT).
//!
//! Auth is what docker and containerd do: anonymous; Basic; the Bearer token flow announced by
//! `WWW-Authenticate: Bearer realm=…,service=…`. Credentials come from explicit options, then
//! `REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`):
//! `credHelpers`, `auths`, `credsStore`. Redirects (to blob storage) are followed by reqwest,
//! which drops `Authorization` when the redirect leaves the host; an upload `Location` on
//! another host gets no `Authorization` either, and Basic credentials reach a token realm only
//! over HTTPS (or the plain-HTTP registry's own host): see SECURITY.md.
//!
//! Loopback registries are spoken to over plain HTTP, like docker and containerd do, and so are
//! the hosts listed as insecure; everything else is HTTPS. Mirrors of a host are tried before
//! the host itself, so a pull-through cache or a peer-to-peer layer works unchanged.

use crate::digest::Sha256Digest;
pub use crate::oci_options::{Credential, DEFAULT_DEADLINE, OciOptions};
pub use crate::reference::Reference;
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Media type of the OCI image manifest this module reads and writes.
pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `artifactType` and config media type of a published bootvault set; the config blob is the
/// bootvault manifest JSON, byte for byte as it was signed.
pub(crate) const SET_MEDIA_TYPE: &str = "application/vnd.bootvault.set.v1+json";
/// Media type of each asset layer.
pub(crate) const ASSET_MEDIA_TYPE: &str = "application/vnd.bootvault.asset.v1";
/// Annotation holding the minisign signature of the config blob (the bootvault manifest).
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.bootvault.manifest.minisig";
/// Annotation naming an asset's path (the ORAS convention).
pub(crate) const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Tries at fetching a manifest when the registry or server fails transiently.
const MANIFEST_TRIES: u32 = 3;
/// Largest OCI manifest, bootvault manifest or signature read into memory.
pub const MAX_DOCUMENT: u64 = 8 * 1024 * 1024;

pub use crate::error::OciError;

fn reg_err(what: impl Into<String>, why: impl Into<String>) -> OciError {
    OciError::Registry {
        what: what.into(),
        why: why.into(),
    }
}

/// `what` did not finish within `d`.
fn late(what: &str, d: std::time::Duration) -> String {
    format!(
        "{what}: no complete answer within {} s (the manifest deadline, --manifest-timeout)",
        d.as_secs_f64()
    )
}

impl Reference {
    /// Parses a reference; the `oci://` prefix is required.
    pub fn parse(s: &str) -> crate::Result<Reference> {
        crate::reference::parse(s).map_err(|why| {
            OciError::Reference {
                reference: s.to_string(),
                why,
            }
            .into()
        })
    }
}

/// Whether `host` (with or without port) names this machine: plain HTTP like docker does.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map(|h| &h[1..]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Registry client state shared by a store's downloads: scheme choice, mirrors, credentials
/// and the cached `Authorization` per (host, repository, access).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    opts: OciOptions,
    /// By (host, scopes); `None` cached = the registry answered without asking for auth.
    auth: Mutex<HashMap<(String, String), Option<String>>>,
}

impl Registry {
    /// A client with these options.
    pub fn new(opts: OciOptions) -> Registry {
        Registry {
            opts,
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// `http` or `https` for `host`.
    fn scheme(&self, host: &str) -> &'static str {
        let insecure = self
            .opts
            .insecure
            .iter()
            .any(|h| h == host || h == host_only(host));
        if insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        }
    }

    /// `scheme://host`.
    pub fn base(&self, host: &str) -> String {
        // Docker Hub is named docker.io but served by registry-1.docker.io, as docker does.
        let served = match host {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            h => h,
        };
        format!("{}://{served}", self.scheme(host))
    }

    /// The URL list with each `oci://HOST/REPO` preceded by its mirrors, in order.
    pub fn expand(&self, urls: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            if let Ok(r) = Reference::parse(url) {
                for (host, mirror) in &self.opts.mirrors {
                    if *host == r.registry {
                        let m = Self::mirror_host(mirror);
                        let u = format!("oci://{m}/{}", r.repository);
                        if !out.contains(&u) {
                            out.push(u);
                        }
                    }
                }
            }
            if !out.contains(url) {
                out.push(url.clone());
            }
        }
        out
    }

    fn mirror_host(mirror: &str) -> &str {
        mirror
            .strip_prefix("http://")
            .or_else(|| mirror.strip_prefix("https://"))
            .unwrap_or(mirror)
            .trim_end_matches('/')
    }

    /// The registry options, with each `http://` mirror counted as insecure.
    fn effective(mut opts: OciOptions) -> OciOptions {
        let extra: Vec<String> = opts
            .mirrors
            .iter()
            .filter(|(_, m)| m.starts_with("http://"))
            .map(|(_, m)| Self::mirror_host(m).to_string())
            .collect();
        opts.insecure.extend(extra);
        opts
    }

    /// Builds from options (mirrors given as `http://…` are spoken to over HTTP).
    pub fn from_options(opts: &OciOptions) -> Registry {
        Registry::new(Self::effective(opts.clone()))
    }

    /// The blob URL of `digest` in the repository of `oci_url`, and the host and repository
    /// (for [`Registry::authorization`]).
    pub fn blob_url(
        &self,
        oci_url: &str,
        digest: &Sha256Digest,
    ) -> Result<(String, String, String), String> {
        let r = Reference::parse(oci_url).map_err(|e| e.to_string())?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err("an asset source names a repository, without tag or digest".into());
        }
        let url = format!(
            "{}/v2/{}/blobs/sha256:{}",
            self.base(&r.registry),
            r.repository,
            digest.to_hex()
        );
        Ok((url, r.registry, r.repository))
    }

    /// Forgets the cached authorization of (host, repository), after a 401.
    pub fn forget(&self, host: &str, repo: &str) {
        if let Ok(mut m) = self.auth.lock() {
            let scope = format!("repository:{repo}:");
            m.retain(|(h, scopes), _| !(h == host && scopes.contains(&scope)));
        }
    }

    /// The `Authorization` header value for `repo` on `host` (`None`: anonymous access works).
    /// Pings `/v2/` once and follows the challenge: Basic with the configured credentials, or
    /// the Bearer token flow with scope `repository:REPO:pull` (`pull,push` when `push`).
    pub async fn authorization(
        &self,
        client: &reqwest::Client,
        host: &str,
        repo: &str,
        push: bool,
    ) -> Result<Option<String>, RequestError> {
        let actions = if push { "pull,push" } else { "pull" };
        self.authorization_scoped(client, host, &[format!("repository:{repo}:{actions}")])
            .await
    }

    /// As [`Registry::authorization`], for several scopes at once (a cross-repository mount
    /// needs push on the target and pull on the source).
    pub async fn authorization_scoped(
        &self,
        client: &reqwest::Client,
        host: &str,
        scopes: &[String],
    ) -> Result<Option<String>, RequestError> {
        let key = (host.to_string(), scopes.join(" "));
        if let Some(v) = self.auth.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(v);
        }
        let deadline = self.opts.deadline();
        match tokio::time::timeout(deadline, self.authorize(client, host, scopes, key)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::fatal(late(
                &format!("authorization for {host}"),
                deadline,
            ))),
        }
    }

    async fn authorize(
        &self,
        client: &reqwest::Client,
        host: &str,
        scopes: &[String],
        key: (String, String),
    ) -> Result<Option<String>, RequestError> {
        let ping = format!("{}/v2/", self.base(host));
        let resp = client
            .get(&ping)
            .send()
            .await
            .map_err(|e| RequestError::retry(format!("{ping}: {}", describe(&e))))?;
        let value = match resp.status().as_u16() {
            200..=299 => None,
            401 => {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Some(self.answer(client, host, scopes, &challenge).await?)
            }
            s if s >= 500 || s == 429 => {
                return Err(RequestError::retry(format!("{ping}: HTTP {s}")));
            }
            s => return Err(RequestError::fatal(format!("{ping}: HTTP {s}"))),
        };
        if let Ok(mut m) = self.auth.lock() {
            m.insert(key, value.clone());
        }
        Ok(value)
    }

    async fn answer(
        &self,
        client: &reqwest::Client,
        host: &str,
        scopes: &[String],
        challenge: &str,
    ) -> Result<String, RequestError> {
        let (scheme, params) = parse_challenge(challenge);
        let cred = self.credential(host);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = cred.ok_or_else(|| {
                    RequestError::fatal(format!(
                        "{host} asks for Basic auth and no credentials are configured for it"
                    ))
                })?;
                Ok(basic(&c))
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    RequestError::fatal(format!("{host}: Bearer challenge without realm"))
                })?;
                let mut url = reqwest::Url::parse(realm).map_err(|e| {
                    RequestError::fatal(format!("{host}: bad token realm {realm:?}: {e}"))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    // Not a network location (`file://`, ...): asking again cannot help.
                    return Err(RequestError::fatal(format!(
                        "{host}: token realm {realm:?} is not an http(s) URL"
                    )));
                }
                // Credentials go to a realm only over HTTPS, or to the registry's own host
                // over plain HTTP when the registry itself is spoken to over plain HTTP.
                let withheld =
                    cred.is_some() && !realm_may_get_credentials(self.scheme(host), host, &url);
                let cred = if withheld {
                    tracing::warn!(
                        "{host}: credentials withheld from token realm {realm} (neither HTTPS \
                         nor the registry's own plain-HTTP host); asking for an anonymous token"
                    );
                    None
                } else {
                    cred
                };
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    for scope in scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut rb = client.get(url.clone());
                if let Some(c) = &cred {
                    rb = rb.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let resp = rb.send().await.map_err(|e| {
                    RequestError::retry(format!("token server {realm}: {}", describe(&e)))
                })?;
                let status = resp.status();
                if !status.is_success() {
                    let message = format!(
                        "token server {realm}: HTTP {status}{}",
                        if withheld {
                            " (credentials withheld: the realm is neither HTTPS nor the \
                             registry's own plain-HTTP host)"
                        } else if cred.is_none() {
                            " (no credentials configured)"
                        } else {
                            ""
                        }
                    );
                    return Err(RequestError {
                        retry: status.is_server_error() || status.as_u16() == 429,
                        message,
                    });
                }
                let body = read_bounded(resp, 1024 * 1024)
                    .await
                    .map_err(|e| RequestError::retry(format!("token server {realm}: {e}")))?;
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    RequestError::fatal(format!("token server {realm}: bad JSON: {e}"))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        RequestError::fatal(format!("token server {realm}: no token in the answer"))
                    })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(RequestError::fatal(format!(
                "{host}: unsupported auth scheme {other:?} in WWW-Authenticate"
            ))),
        }
    }

    /// Credentials for `host`: explicit options, `REGISTRY_AUTH_FILE`, then the docker config.
    pub fn credential(&self, host: &str) -> Option<Credential> {
        if let Some((_, c)) = self.opts.credentials.iter().find(|(h, _)| h == host) {
            return Some(c.clone());
        }
        let deadline = self.opts.deadline();
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE")
            && let Some(c) = from_auth_file(Path::new(&file), host, deadline)
        {
            return Some(c);
        }
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
        let file = dir.join("config.json");
        from_auth_file(&file, host, deadline).or_else(|| {
            // `docker login` stores Docker Hub under https://index.docker.io/v1/.
            matches!(host, "docker.io" | "registry-1.docker.io")
                .then(|| from_auth_file(&file, "index.docker.io", deadline))
                .flatten()
        })
    }

    /// GETs a small document (manifest, config, signature) from `repo` on `host`, with auth.
    async fn get_document(
        &self,
        client: &reqwest::Client,
        host: &str,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, RequestError> {
        let url = format!("{}/v2/{repo}/{path}", self.base(host));
        self.get_document_if_present(client, host, repo, path, accept)
            .await?
            .ok_or_else(|| RequestError::fatal(format!("{url}: HTTP 404")))
    }

    /// `get_document`, with an answer of 404 as `None`: the caller tells a reference that
    /// names nothing (bad input) from a registry that cannot be reached.
    async fn get_document_if_present(
        &self,
        client: &reqwest::Client,
        host: &str,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let url = format!("{}/v2/{repo}/{path}", self.base(host));
        for attempt in 0..2 {
            let auth = self.authorization(client, host, repo, false).await?;
            let mut rb = client.get(&url);
            if let Some(a) = &auth {
                rb = rb.header(reqwest::header::AUTHORIZATION, a);
            }
            if let Some(a) = accept {
                rb = rb.header(reqwest::header::ACCEPT, a);
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| RequestError::retry(format!("{url}: {}", describe(&e))))?;
            match resp.status().as_u16() {
                200 => {
                    return read_bounded(resp, MAX_DOCUMENT)
                        .await
                        .map(Some)
                        .map_err(|e| RequestError::fatal(format!("{url}: {e}")));
                }
                404 => return Ok(None),
                401 if attempt == 0 => self.forget(host, repo),
                s => {
                    return Err(RequestError {
                        retry: s >= 500 || s == 429,
                        message: format!("{url}: HTTP {s}"),
                    });
                }
            }
        }
        Err(RequestError::fatal(format!(
            "{url}: still unauthorized after a fresh token"
        )))
    }
}

/// Why a registry request (or getting its `Authorization`) failed, and whether trying again
/// later can help (unreachable, 5xx, 429) or not (no or wrong credentials, 404, bad content).
#[derive(Debug, Clone)]
pub(crate) struct RequestError {
    /// Whether a later try may succeed.
    pub retry: bool,
    /// What failed, naming the URL or host.
    pub message: String,
}

impl RequestError {
    fn retry(message: String) -> RequestError {
        RequestError {
            retry: true,
            message,
        }
    }
    fn fatal(message: String) -> RequestError {
        RequestError {
            retry: false,
            message,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<RequestError> for String {
    fn from(e: RequestError) -> String {
        e.message
    }
}

/// Whether the Basic credentials of a registry (`registry_scheme://registry_host`) may be
/// sent to its token realm `realm`: always over HTTPS; over plain HTTP only when the registry
/// itself is plain HTTP (loopback or `--insecure-registry`) and the realm is on the same host.
/// Never in cleartext for an HTTPS registry, never to a plain-HTTP host the user did not name.
fn realm_may_get_credentials(registry_scheme: &str, registry_host: &str, realm: &url::Url) -> bool {
    match realm.scheme() {
        "https" => true,
        "http" => {
            registry_scheme == "http"
                && realm.host_str().is_some_and(|h| {
                    h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .eq_ignore_ascii_case(host_only(registry_host))
                })
        }
        _ => false,
    }
}

/// Whether `a` and `b` have the same scheme, host and port: an `Authorization` meant for `a`
/// may be sent to `b` (an upload `Location`, say).
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

fn basic(c: &Credential) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// `Bearer realm="…",service="…"` → ("Bearer", {realm, service}).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_string(), params)
}

/// Looks `host` up in a docker `config.json` or a containers `auth.json`: `credHelpers`, then
/// `auths` (keys may carry a scheme or a path, as old docker versions wrote them), then the
/// default `credsStore`.
fn from_auth_file(file: &Path, host: &str, deadline: std::time::Duration) -> Option<Credential> {
    let text = match crate::manifest::read_local(file, 4 * 1024 * 1024) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("registry auth file {}: {e}; not used", file.display());
            return None;
        }
    };
    let v: Value = serde_json::from_slice(&text).ok()?;
    if let Some(helper) = v
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .and_then(Value::as_str)
    {
        return from_helper(helper, host, deadline);
    }
    if let Some(auths) = v.get("auths").and_then(Value::as_object) {
        for (key, entry) in auths {
            let k = key
                .strip_prefix("https://")
                .or_else(|| key.strip_prefix("http://"))
                .unwrap_or(key);
            let k = k.split('/').next().unwrap_or(k);
            if k != host {
                continue;
            }
            if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()?;
                let raw = String::from_utf8(raw).ok()?;
                let (u, p) = raw.split_once(':')?;
                return Some(Credential {
                    username: u.into(),
                    password: p.into(),
                });
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                return Some(Credential {
                    username: u.into(),
                    password: p.into(),
                });
            }
        }
    }
    let store = v.get("credsStore").and_then(Value::as_str)?;
    from_helper(store, host, deadline)
}

/// Runs `docker-credential-<helper> get` with the host on stdin (the helper protocol); a
/// helper that has not answered within `deadline` is killed and gives no credential.
fn from_helper(helper: &str, host: &str, deadline: std::time::Duration) -> Option<Credential> {
    use std::io::Write;
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return None;
    }
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| tracing::warn!("credential helper docker-credential-{helper}: {e}"))
        .ok()?;
    let _ = child.stdin.take()?.write_all(host.as_bytes());
    // Read its answer on a thread (a helper that writes much must not block on a full pipe)
    // while this one keeps the deadline.
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut out = Vec::new();
        let _ = (&mut stdout).take(64 * 1024).read_to_end(&mut out);
        out
    });
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(
                    "{}",
                    late(
                        &format!("credential helper docker-credential-{helper}"),
                        deadline
                    )
                );
                return None;
            }
        }
    };
    let stdout = reader.join().ok()?;
    if !status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&stdout).ok()?;
    Some(Credential {
        username: v.get("Username")?.as_str()?.into(),
        password: v.get("Secret")?.as_str()?.into(),
    })
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Reads a response body of at most `limit` bytes.
async fn read_bounded(resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(format!("larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| describe(&e))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The store's client settings (timeouts, extra CA certificates), so that a manifest or a
/// publish reaches the registries the downloads reach; one client per option set, shared.
fn client(opts: &crate::FetchOptions) -> Result<reqwest::Client, OciError> {
    crate::http::shared_client(opts).map_err(|e| reg_err("HTTP client", e))
}

/// Runs a registry call for a blocking caller on the one runtime ([`crate::http::block_on`]).
fn block_on<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, OciError>>,
) -> Result<T, OciError> {
    crate::http::block_on(fut).unwrap_or_else(|why| Err(reg_err(what, why)))
}

// ---- manifests --------------------------------------------------------------------------------

/// A bootvault manifest read from a registry or a URL, before it is parsed.
#[derive(Clone, Debug)]
pub(crate) struct RemoteManifest {
    /// The bootvault manifest JSON, exactly as published (what a signature covers).
    pub bytes: Vec<u8>,
    /// The minisign signature published with it, if any.
    pub signature: Option<String>,
    /// Whether the reference pinned the content by digest (no signature needed then).
    pub pinned: bool,
    /// For a registry: `oci://HOST/REPO`, where the assets were published.
    pub source: Option<String>,
    /// The OCI manifest digest it was resolved through (registry only).
    pub digest: Option<Sha256Digest>,
}

/// Resolves `oci://HOST/REPO:TAG` or `@sha256:…` to the bootvault manifest stored as the
/// artifact's config blob, with the signature annotation. A digest pin is checked against the
/// bytes of the OCI manifest, and the config blob against its descriptor.
pub(crate) fn fetch_manifest(
    opts: &crate::FetchOptions,
    r: &Reference,
) -> Result<RemoteManifest, OciError> {
    let client = client(opts)?;
    let reg = Registry::from_options(&opts.oci);
    let deadline = opts.oci.deadline();
    let what = format!("manifest {r}");
    block_on(&what, async {
        tokio::time::timeout(deadline, fetch_manifest_tries(&reg, &client, r))
            .await
            .unwrap_or_else(|_| Err(reg_err(&what, late("fetch", deadline))))
    })
}

async fn fetch_manifest_tries(
    reg: &Registry,
    client: &reqwest::Client,
    r: &Reference,
) -> Result<RemoteManifest, OciError> {
    {
        let hosts = reg.expand(&[r.repository_url()]);
        let mut errors = Vec::new();
        // Bad input only when every registry and mirror answered that it holds no set there;
        // one that could not be asked may hold it.
        let mut every_answer_not_a_set = true;
        // A fleet asks at once: a registry that is busy (5xx, 429) or unreachable for a moment
        // gets a few more tries over the mirrors and the registry.
        for round in 0..MANIFEST_TRIES {
            let mut retry = false;
            for source in &hosts {
                let Ok(via) = Reference::parse(source) else {
                    continue;
                };
                match fetch_manifest_from(reg, client, &via.registry, r).await {
                    Ok(m) => return Ok(m),
                    Err(SourceError::Request(e)) => {
                        every_answer_not_a_set = false;
                        retry |= e.retry;
                        errors.push(e.message);
                    }
                    Err(SourceError::NotASet(why)) => errors.push(why),
                }
            }
            if !retry || round + 1 == MANIFEST_TRIES {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250 << round)).await;
        }
        if every_answer_not_a_set && !errors.is_empty() {
            return Err(OciError::NotASet {
                what: format!("manifest {r}"),
                why: errors.join("; "),
            });
        }
        Err(reg_err(format!("manifest {r}"), errors.join("; ")))
    }
}

/// Why one registry or mirror did not give the manifest.
enum SourceError {
    /// The requests failed, or what came back is broken.
    Request(RequestError),
    /// It answered that there is no bootvault set under the reference (no such tag, or an
    /// artifact of another kind).
    NotASet(String),
}

impl From<RequestError> for SourceError {
    fn from(e: RequestError) -> SourceError {
        SourceError::Request(e)
    }
}

async fn fetch_manifest_from(
    reg: &Registry,
    client: &reqwest::Client,
    host: &str,
    r: &Reference,
) -> Result<RemoteManifest, SourceError> {
    // Everything past the requests is about the content: trying again does not help.
    let bad = |m: String| SourceError::Request(RequestError::fatal(m));
    let repo = &r.repository;
    let oci = reg
        .get_document_if_present(
            client,
            host,
            repo,
            &format!("manifests/{}", r.manifest_ref()),
            Some(MANIFEST_MEDIA_TYPE),
        )
        .await?
        .ok_or_else(|| {
            SourceError::NotASet(format!(
                "{host}: {repo} has no manifest {} (HTTP 404)",
                r.manifest_ref()
            ))
        })?;
    let digest = Sha256Digest::of(&oci);
    if let Some(pin) = &r.digest
        && *pin != digest
    {
        return Err(bad(format!(
            "{host}: OCI manifest digest is sha256:{digest}, the reference pins sha256:{pin}"
        )));
    }
    let v: Value =
        serde_json::from_slice(&oci).map_err(|e| bad(format!("{host}: bad OCI manifest: {e}")))?;
    let config = &v["config"];
    if config["mediaType"].as_str() != Some(SET_MEDIA_TYPE) {
        return Err(SourceError::NotASet(format!(
            "{host}: {repo} is not a bootvault set: its config media type is {}, a set's is \"{SET_MEDIA_TYPE}\"",
            config["mediaType"]
        )));
    }
    let cdigest = config["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .and_then(|h| Sha256Digest::from_hex(h).ok())
        .ok_or_else(|| bad(format!("{host}: config descriptor without a sha256 digest")))?;
    let bytes = reg
        .get_document(
            client,
            host,
            repo,
            &format!("blobs/sha256:{}", cdigest.to_hex()),
            None,
        )
        .await?;
    if Sha256Digest::of(&bytes) != cdigest {
        return Err(bad(format!(
            "{host}: config blob does not hash to sha256:{cdigest}"
        )));
    }
    let signature = v["annotations"][SIGNATURE_ANNOTATION]
        .as_str()
        .map(str::to_string);
    Ok(RemoteManifest {
        bytes,
        signature,
        pinned: r.digest.is_some(),
        source: Some(r.repository_url()),
        digest: Some(digest),
    })
}

/// Fetches a manifest from an `http(s)://` URL (at most [`MAX_DOCUMENT`] bytes) and its
/// signature from the same URL plus `.minisig`, when there is one.
pub(crate) fn fetch_manifest_url(
    opts: &crate::FetchOptions,
    url: &str,
) -> Result<RemoteManifest, OciError> {
    let client = client(opts)?;
    let deadline = opts.oci.deadline();
    block_on(url, async {
        tokio::time::timeout(deadline, fetch_manifest_url_tries(&client, url))
            .await
            .unwrap_or_else(|_| Err(reg_err(url, late("fetch", deadline))))
    })
}

async fn fetch_manifest_url_tries(
    client: &reqwest::Client,
    url: &str,
) -> Result<RemoteManifest, OciError> {
    {
        let get = |u: String| {
            let client = client.clone();
            async move {
                // A few tries when the server is busy or unreachable for a moment.
                let mut round = 0;
                loop {
                    let last = round + 1 == MANIFEST_TRIES;
                    let resp = match client.get(&u).send().await {
                        Ok(r) => r,
                        Err(e) if last => return Err(reg_err(&u, describe(&e))),
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_millis(250 << round))
                                .await;
                            round += 1;
                            continue;
                        }
                    };
                    match resp.status().as_u16() {
                        200 => {
                            return read_bounded(resp, MAX_DOCUMENT)
                                .await
                                .map(Some)
                                .map_err(|e| reg_err(&u, e));
                        }
                        404 | 410 => return Ok(None),
                        s if (s >= 500 || s == 429) && !last => {
                            tokio::time::sleep(std::time::Duration::from_millis(250 << round))
                                .await;
                            round += 1;
                        }
                        s => return Err(reg_err(&u, format!("HTTP {s}"))),
                    }
                }
            }
        };
        let bytes = get(url.to_string())
            .await?
            .ok_or_else(|| reg_err(url, "HTTP 404"))?;
        let signature = get(format!("{url}.minisig"))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(RemoteManifest {
            bytes,
            signature,
            pinned: false,
            source: None,
            digest: None,
        })
    }
}

/// A manifest loaded from the network, and the key that vouched for it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The parsed manifest; a registry artifact's assets list the repository first.
    pub manifest: crate::Manifest,
    /// ID of the trusted key whose signature was checked (`None`: no key was required, or the
    /// reference was pinned by digest).
    pub signed_by: Option<String>,
    /// Digest of the OCI manifest it was resolved through (registry only).
    pub digest: Option<Sha256Digest>,
    /// Signature time from the verified signature's trusted comment (`timestamp:`), for
    /// rollback protection ([`crate::rollback`]).
    pub signed_at: Option<u64>,
}

/// Loads a manifest from `oci://HOST/REPO:TAG|@sha256:…` or an `http(s)://` URL, read by
/// `parse(text, origin)` (e.g. [`crate::Manifest::parse`], or a front end that also knows
/// other formats) once its signature is checked. With trusted keys, a manifest that is not pinned by digest must carry a valid signature by one of them.
/// The assets of a registry artifact get that repository as their first source.
pub fn load_manifest(
    spec: &str,
    opts: &crate::FetchOptions,
    trusted: &[crate::sign::TrustedKey],
    parse: &dyn Fn(&str, &str) -> crate::Result<crate::Manifest>,
) -> crate::Result<Loaded> {
    let remote = if spec.starts_with("oci://") {
        fetch_manifest(opts, &Reference::parse(spec)?)?
    } else {
        fetch_manifest_url(opts, spec)?
    };
    let mut signed_by = None;
    let mut signed_at = None;
    if !trusted.is_empty() && !remote.pinned {
        let sig = remote
            .signature
            .as_deref()
            .ok_or_else(|| crate::sign::SignError::Missing {
                origin: spec.into(),
                why: "a trusted key is configured and the manifest is not pinned by digest".into(),
            })?;
        signed_by = Some(crate::sign::verify(&remote.bytes, sig, trusted, spec)?);
        // The trusted comment is covered by the signature just checked.
        signed_at = crate::rollback::signed_at(sig);
    }
    let text = std::str::from_utf8(&remote.bytes).map_err(|_| crate::Error::Manifest {
        origin: spec.into(),
        message: "not UTF-8".into(),
    })?;
    let mut manifest = parse(text, spec)?;
    // The assets of a registry artifact were published beside it: pull them from there first.
    if let Some(source) = &remote.source {
        for asset in &mut manifest.assets {
            asset.urls.retain(|u| u != source);
            asset.urls.insert(0, source.clone());
        }
    }
    Ok(Loaded {
        manifest,
        signed_by,
        digest: remote.digest,
        signed_at,
    })
}

// ---- publish ----------------------------------------------------------------------------------

/// One file to publish.
#[derive(Clone, Debug)]
pub struct PublishBlob {
    /// Asset name (for errors and progress).
    pub name: String,
    /// Asset path (the layer's title).
    pub path: String,
    /// The file on disk.
    pub file: PathBuf,
    /// Manifest digest.
    pub sha256: Sha256Digest,
    /// Manifest size, when given.
    pub size: Option<u64>,
    /// Another repository on the same registry that may hold the blob: mounted from there
    /// (no bytes sent) when the registry allows it.
    pub mount_from: Option<String>,
}

/// What publishing did.
#[derive(Clone, Debug)]
pub struct PublishReport {
    /// Asset names whose blob was uploaded.
    pub uploaded: Vec<String>,
    /// Asset names whose blob the registry already had.
    pub skipped: Vec<String>,
    /// Asset names whose blob was mounted from another repository of the registry.
    pub mounted: Vec<String>,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Digest of the pushed OCI manifest (pin it with `@sha256:…`).
    pub digest: Sha256Digest,
}

/// Progress of a publish: (asset name, bytes sent, total).
pub type PublishProgress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// Pushes every asset blob the registry lacks (HEAD first), then the bootvault manifest as the
/// config blob and an OCI image manifest whose layers are the assets, tagged `r.tag`. Every
/// file is hashed first and nothing is uploaded unless all match their manifest entries; the
/// registry checks each upload against its digest again.
pub fn publish(
    opts: &crate::FetchOptions,
    r: &Reference,
    manifest_json: &[u8],
    version: &str,
    signature: Option<&str>,
    blobs: &[PublishBlob],
    progress: PublishProgress<'_>,
) -> crate::Result<PublishReport> {
    let tag = r.tag.clone().ok_or_else(|| OciError::Reference {
        reference: r.to_string(),
        why: "publish needs a tag (oci://HOST/REPO:TAG)".into(),
    })?;
    // Verify every file before anything leaves the machine.
    let mut sizes = Vec::with_capacity(blobs.len());
    for b in blobs {
        let (digest, size) =
            crate::digest::hash_path(&b.file).map_err(|e| OciError::AssetFile {
                name: b.name.clone(),
                path: b.file.clone(),
                source: e,
            })?;
        if digest != b.sha256 {
            return Err(OciError::Mismatch {
                name: b.name.clone(),
                path: b.file.clone(),
                why: format!("sha256 is {digest}, the manifest says {}", b.sha256),
            }
            .into());
        }
        if let Some(want) = b.size
            && want != size
        {
            return Err(OciError::Mismatch {
                name: b.name.clone(),
                path: b.file.clone(),
                why: format!("{size} bytes, the manifest says {want}"),
            }
            .into());
        }
        sizes.push(size);
    }
    let client = client(opts)?;
    let reg = Registry::from_options(&opts.oci);
    let host = r.registry.as_str();
    let repo = r.repository.as_str();
    let report = block_on(&format!("publish {r}"), async {
        let mut report = PublishReport {
            uploaded: Vec::new(),
            skipped: Vec::new(),
            mounted: Vec::new(),
            bytes_uploaded: 0,
            // Set once the OCI manifest is serialized.
            digest: Sha256Digest::of(b""),
        };
        let mut done: Vec<Sha256Digest> = Vec::new();
        for (b, size) in blobs.iter().zip(&sizes) {
            if done.contains(&b.sha256) {
                report.skipped.push(b.name.clone());
                continue;
            }
            done.push(b.sha256);
            if head_blob(&reg, &client, host, repo, &b.sha256).await? {
                progress(&b.name, *size, *size);
                report.skipped.push(b.name.clone());
                continue;
            }
            if let Some(from) = &b.mount_from
                && mount(&reg, &client, host, repo, from, &b.sha256).await?
            {
                progress(&b.name, *size, *size);
                report.mounted.push(b.name.clone());
                continue;
            }
            upload(
                &reg,
                &client,
                host,
                repo,
                &b.sha256,
                Upload::File(&b.file, *size),
                &b.name,
                progress,
            )
            .await?;
            report.uploaded.push(b.name.clone());
            report.bytes_uploaded += size;
        }
        let config = Sha256Digest::of(manifest_json);
        if !head_blob(&reg, &client, host, repo, &config).await? {
            upload(
                &reg,
                &client,
                host,
                repo,
                &config,
                Upload::Bytes(manifest_json.to_vec()),
                "manifest",
                progress,
            )
            .await?;
        }
        let layers: Vec<Value> = blobs
            .iter()
            .zip(&sizes)
            .map(|(b, size)| {
                json!({
                    "mediaType": ASSET_MEDIA_TYPE,
                    "digest": format!("sha256:{}", b.sha256.to_hex()),
                    "size": size,
                    "annotations": {TITLE_ANNOTATION: b.path},
                })
            })
            .collect();
        let mut annotations = serde_json::Map::new();
        annotations.insert("org.opencontainers.image.version".into(), version.into());
        if let Some(sig) = signature {
            annotations.insert(SIGNATURE_ANNOTATION.into(), sig.into());
        }
        let oci = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": SET_MEDIA_TYPE,
            "config": {
                "mediaType": SET_MEDIA_TYPE,
                "digest": format!("sha256:{}", config.to_hex()),
                "size": manifest_json.len(),
            },
            "layers": layers,
            "annotations": annotations,
        });
        let body = serde_json::to_vec_pretty(&oci).unwrap_or_default();
        report.digest = Sha256Digest::of(&body);
        let url = format!("{}/v2/{repo}/manifests/{tag}", reg.base(host));
        let what = format!("push manifest {r}");
        for attempt in 0..2 {
            let auth = reg
                .authorization(&client, host, repo, true)
                .await
                .map_err(|e| reg_err(&what, e))?;
            let mut rb = client
                .put(&url)
                .header(reqwest::header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                .body(body.clone());
            if let Some(a) = &auth {
                rb = rb.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = rb.send().await.map_err(|e| reg_err(&what, describe(&e)))?;
            match resp.status().as_u16() {
                200..=299 => return Ok(report),
                401 if attempt == 0 => reg.forget(host, repo),
                s => {
                    let text = read_bounded(resp, 64 * 1024).await.unwrap_or_default();
                    return Err(reg_err(
                        &what,
                        format!("HTTP {s}: {}", String::from_utf8_lossy(&text).trim()),
                    ));
                }
            }
        }
        Err(reg_err(&what, "still unauthorized after a fresh token"))
    })?;
    Ok(report)
}

async fn head_blob(
    reg: &Registry,
    client: &reqwest::Client,
    host: &str,
    repo: &str,
    digest: &Sha256Digest,
) -> Result<bool, OciError> {
    let url = format!(
        "{}/v2/{repo}/blobs/sha256:{}",
        reg.base(host),
        digest.to_hex()
    );
    for attempt in 0..2 {
        let auth = reg
            .authorization(client, host, repo, true)
            .await
            .map_err(|e| reg_err(format!("HEAD {url}"), e))?;
        let mut rb = client.head(&url);
        if let Some(a) = &auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| reg_err(format!("HEAD {url}"), describe(&e)))?;
        match resp.status().as_u16() {
            200 => return Ok(true),
            404 => return Ok(false),
            401 if attempt == 0 => reg.forget(host, repo),
            s => return Err(reg_err(format!("HEAD {url}"), format!("HTTP {s}"))),
        }
    }
    Err(reg_err(
        format!("HEAD {url}"),
        "still unauthorized after a fresh token",
    ))
}

/// Asks the registry to mount `digest` from repository `from`; `false` when it would rather
/// have the bytes (202: a plain upload session, left to expire) or refuses.
async fn mount(
    reg: &Registry,
    client: &reqwest::Client,
    host: &str,
    repo: &str,
    from: &str,
    digest: &Sha256Digest,
) -> Result<bool, OciError> {
    let mut url = reqwest::Url::parse(&format!("{}/v2/{repo}/blobs/uploads/", reg.base(host)))
        .map_err(|e| reg_err(format!("mount into {host}/{repo}"), e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("mount", &format!("sha256:{}", digest.to_hex()))
        .append_pair("from", from);
    let scopes = [
        format!("repository:{repo}:pull,push"),
        format!("repository:{from}:pull"),
    ];
    for attempt in 0..2 {
        // No access to the source is not an error: the blob is uploaded instead.
        let Ok(auth) = reg.authorization_scoped(client, host, &scopes).await else {
            return Ok(false);
        };
        let mut rb = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_LENGTH, 0);
        if let Some(a) = &auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| reg_err(format!("mount into {host}/{repo}"), describe(&e)))?;
        match resp.status().as_u16() {
            201 => return Ok(true),
            401 if attempt == 0 => reg.forget(host, from),
            _ => return Ok(false),
        }
    }
    Ok(false)
}

enum Upload<'a> {
    File(&'a Path, u64),
    Bytes(Vec<u8>),
}

/// A monolithic upload: POST for a session, then one PUT of the whole blob with its digest.
#[allow(clippy::too_many_arguments)]
async fn upload(
    reg: &Registry,
    client: &reqwest::Client,
    host: &str,
    repo: &str,
    digest: &Sha256Digest,
    what: Upload<'_>,
    name: &str,
    progress: PublishProgress<'_>,
) -> Result<(), OciError> {
    let ctx = format!(
        "upload {name} (sha256:{}) to {host}/{repo}",
        digest.to_hex()
    );
    let start = format!("{}/v2/{repo}/blobs/uploads/", reg.base(host));
    let mut auth = None;
    let mut location = None;
    for attempt in 0..2 {
        auth = reg
            .authorization(client, host, repo, true)
            .await
            .map_err(|e| reg_err(&ctx, e))?;
        let mut rb = client
            .post(&start)
            .header(reqwest::header::CONTENT_LENGTH, 0);
        if let Some(a) = &auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = rb.send().await.map_err(|e| reg_err(&ctx, describe(&e)))?;
        match resp.status().as_u16() {
            202 => {
                location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                break;
            }
            401 if attempt == 0 => reg.forget(host, repo),
            s => return Err(reg_err(&ctx, format!("start upload: HTTP {s}"))),
        }
    }
    let location = location.ok_or_else(|| reg_err(&ctx, "no upload Location"))?;
    // The Location may be relative to the registry.
    let mut put = reqwest::Url::parse(&start)
        .and_then(|base| base.join(&location))
        .map_err(|e| reg_err(&ctx, format!("bad upload Location {location:?}: {e}")))?;
    put.query_pairs_mut()
        .append_pair("digest", &format!("sha256:{}", digest.to_hex()));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (body, len) = match what {
        Upload::Bytes(b) => {
            let len = b.len() as u64;
            (reqwest::Body::from(b), len)
        }
        Upload::File(path, len) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| OciError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            let counter = sent.clone();
            let stream = futures_util::stream::unfold(file, move |mut f| {
                let counter = counter.clone();
                async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; crate::digest::HASH_BUF];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            Some((Ok::<_, std::io::Error>(buf), f))
                        }
                        Err(e) => Some((Err(e), f)),
                    }
                }
            });
            (reqwest::Body::wrap_stream(stream), len)
        }
    };
    // The registry's Authorization goes only back to the registry: a Location on another host
    // (blob storage, or a registry that lies) gets the bytes and nothing else.
    let same_host = reqwest::Url::parse(&start).is_ok_and(|s| same_origin(&s, &put));
    if !same_host && auth.is_some() {
        tracing::info!("{ctx}: upload Location {put} is on another host; no Authorization sent");
    }
    let mut rb = client
        .put(put)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(body);
    if let Some(a) = auth.as_ref().filter(|_| same_host) {
        rb = rb.header(reqwest::header::AUTHORIZATION, a);
    }
    // The body stream must be 'static, so progress is sampled from its byte counter while the
    // request runs rather than called from inside the stream.
    let send = rb.send();
    tokio::pin!(send);
    let resp = loop {
        tokio::select! {
            r = &mut send => break r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                progress(name, sent.load(std::sync::atomic::Ordering::Relaxed), len);
            }
        }
    };
    let resp = resp.map_err(|e| reg_err(&ctx, describe(&e)))?;
    match resp.status().as_u16() {
        201 | 204 => {
            progress(name, len, len);
            Ok(())
        }
        s => {
            let text = read_bounded(resp, 64 * 1024).await.unwrap_or_default();
            Err(reg_err(
                &ctx,
                format!("HTTP {s}: {}", String::from_utf8_lossy(&text).trim()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("oci://registry.example:5000/boot/set:2026.11").unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert_eq!(r.repository, "boot/set");
        assert_eq!(r.tag.as_deref(), Some("2026.11"));
        assert_eq!(
            r.to_string(),
            "oci://registry.example:5000/boot/set:2026.11"
        );
        let pin = format!("oci://h/boot/set@sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&pin).unwrap();
        assert!(r.digest.is_some() && r.tag.is_none());
        assert_eq!(r.repository_url(), "oci://h/boot/set");
        for bad in [
            "https://h/boot",
            "oci://h",
            "oci://h/Boot",
            "oci://h/boot//x",
            "oci://h/boot@sha256:12",
            "oci://h/boot:-tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regression_credentials_reach_a_realm_only_over_https_or_the_registrys_own_http_host() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        // HTTPS realm, anywhere (docker.io's auth.docker.io).
        assert!(realm_may_get_credentials(
            "https",
            "ghcr.io",
            &u("https://auth.example/token")
        ));
        // Cleartext from an HTTPS registry: never, even to the registry's own host.
        assert!(!realm_may_get_credentials(
            "https",
            "ghcr.io",
            &u("http://auth.example/token")
        ));
        assert!(!realm_may_get_credentials(
            "https",
            "ghcr.io",
            &u("http://ghcr.io/token")
        ));
        // A plain-HTTP registry may use a plain-HTTP realm on its own host (another port).
        assert!(realm_may_get_credentials(
            "http",
            "127.0.0.1:5000",
            &u("http://127.0.0.1:5001/t")
        ));
        assert!(realm_may_get_credentials(
            "http",
            "[::1]:5000",
            &u("http://[::1]:5001/t")
        ));
        // ...but not on another host, nor a non-network realm.
        assert!(!realm_may_get_credentials(
            "http",
            "127.0.0.1:5000",
            &u("http://localhost:5001/t")
        ));
        assert!(!realm_may_get_credentials(
            "http",
            "build.lan",
            &u("http://evil.example/t")
        ));
        assert!(!realm_may_get_credentials(
            "http",
            "build.lan",
            &u("file:///etc/passwd")
        ));
        assert!(same_origin(&u("http://h:5/v2/"), &u("http://h:5/up?x")));
        assert!(same_origin(&u("https://H/v2/"), &u("https://h:443/up")));
        assert!(!same_origin(
            &u("http://h:5/v2/"),
            &u("http://localhost:5/up")
        ));
        assert!(!same_origin(&u("https://h/v2/"), &u("http://h/up")));
    }

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (scheme, p) = parse_challenge("Basic realm=test");
        assert_eq!(scheme, "Basic");
        assert_eq!(p["realm"], "test");
    }

    #[test]
    fn schemes_and_mirrors() {
        let reg = Registry::from_options(&OciOptions {
            mirrors: vec![
                ("ghcr.io".into(), "http://mirror.lan:5000".into()),
                ("ghcr.io".into(), "p2p.lan".into()),
            ],
            insecure: vec!["build.lan".into()],
            credentials: vec![],
            deadline: None,
        });
        assert_eq!(reg.base("localhost:5000"), "http://localhost:5000");
        assert_eq!(reg.base("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(reg.base("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(reg.base("build.lan:8080"), "http://build.lan:8080");
        assert_eq!(reg.base("mirror.lan:5000"), "http://mirror.lan:5000");
        assert_eq!(reg.base("ghcr.io"), "https://ghcr.io");
        assert_eq!(reg.base("docker.io"), "https://registry-1.docker.io");
        assert_eq!(reg.base("p2p.lan"), "https://p2p.lan");
        let urls = reg.expand(&[
            "oci://ghcr.io/boot/set".to_string(),
            "https://cdn.example/k".to_string(),
        ]);
        assert_eq!(
            urls,
            [
                "oci://mirror.lan:5000/boot/set",
                "oci://p2p.lan/boot/set",
                "oci://ghcr.io/boot/set",
                "https://cdn.example/k"
            ]
        );
    }

    #[test]
    fn auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:with:colons");
        std::fs::write(
            &f,
            serde_json::json!({"auths": {
                "https://old.example/v1/": {"auth": auth},
                "new.example": {"username": "a", "password": "b"},
            }})
            .to_string(),
        )
        .unwrap();
        let d = DEFAULT_DEADLINE;
        let c = from_auth_file(&f, "old.example", d).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("u", "p:with:colons")
        );
        let c = from_auth_file(&f, "new.example", d).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        assert!(from_auth_file(&f, "other.example", d).is_none());
        assert!(!format!("{c:?}").contains('b'), "Debug hides the secret");
    }
}
