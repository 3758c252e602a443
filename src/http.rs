//! The store's HTTP settings and its one client builder, below the asset fetcher and the
//! registry client that both use them.

use std::path::PathBuf;
use std::time::Duration;

/// Network behaviour of a store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Rounds over the URL list after the first (so `retries + 1` tries per URL at most).
    pub retries: u32,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub idle_timeout: Duration,
    /// First backoff delay; doubled each round, with full jitter.
    pub backoff: Duration,
    /// Largest backoff delay (and cap on Retry-After).
    pub max_backoff: Duration,
    /// Extra trusted CA certificates (PEM files), on top of the OS trust store and the
    /// bundled web roots: for a host behind a corporate CA or a private registry.
    pub ca_certificates: Vec<PathBuf>,
    /// Largest download of an asset whose manifest gives no size (a lying `Content-Length`
    /// or an endless body is cut off here).
    pub max_size: u64,
    /// Free space kept on the state dir's filesystem: a download that would leave less fails
    /// (checked before it starts, with the announced size, and every 64 MiB while it runs).
    pub min_free_bytes: u64,
    /// OCI registries (`oci://` sources): mirrors, plain-HTTP hosts, credentials.
    pub oci: crate::oci_options::OciOptions,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            ca_certificates: Vec::new(),
            max_size: 16 << 30,
            min_free_bytes: 64 << 20,
            oci: crate::oci_options::OciOptions::default(),
        }
    }
}

/// The default client: connect and idle timeouts, the OS trust store plus the bundled web
/// roots, and any extra CA of `opts`.
pub(crate) fn build_client(opts: &FetchOptions) -> std::result::Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.idle_timeout)
        .user_agent(concat!("bootvault/", env!("CARGO_PKG_VERSION")));
    for path in &opts.ca_certificates {
        let pem = crate::manifest::read_text(path, 1 << 20)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}
