//! A real CNCF distribution registry (Debian's `docker-registry`, 2.8) on loopback, for the
//! tests and benches of `oci://` sources and `publish`. No Docker engine: the registry binary
//! runs with a generated config file, its storage in a temp dir, on a free port. Auth is
//! anonymous, htpasswd Basic (`htpasswd -Bbn` from apache2-utils), or the Bearer token flow
//! with a small token server here that signs RS256 JWTs with `openssl`.

use crate::serve::Server;
use base64::Engine as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How clients authenticate to a test registry.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    Anonymous,
    /// htpasswd Basic auth with one user.
    Basic { user: String, password: String },
    /// The Bearer token flow: a token server that checks these credentials by Basic auth.
    Token { user: String, password: String },
}

/// A running `docker-registry`; dropping it kills the process.
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    token: Option<TokenServer>,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn run(cmd: &mut Command) -> io::Result<Vec<u8>> {
    let out = cmd.stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

impl Registry {
    /// Whether the registry binary is installed (`.ci/run` installs it).
    pub fn available() -> bool {
        Path::new(REGISTRY_BIN).exists()
    }

    /// Starts a registry with `auth`.
    pub fn start(auth: RegistryAuth) -> io::Result<Registry> {
        Self::launch(auth, None)
    }

    /// Starts a pull-through cache of the registry at `remote` (`http://HOST:PORT`): the
    /// registry's proxy mode, what a mirror in front of a fleet's registry is.
    pub fn start_mirror(remote: &str) -> io::Result<Registry> {
        Self::launch(RegistryAuth::Anonymous, Some(remote.to_string()))
    }

    fn launch(auth: RegistryAuth, proxy_of: Option<String>) -> io::Result<Registry> {
        // The free port is found by binding and releasing it; another process may take it in
        // between (tests run in parallel), so a registry that exits at once is started again.
        let mut last = None;
        for _ in 0..3 {
            match Self::launch_once(&auth, proxy_of.as_deref()) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("docker-registry did not start")))
    }

    fn launch_once(auth: &RegistryAuth, proxy_of: Option<&str>) -> io::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: bootvault-test-secret\n",
            storage.display()
        );
        let mut token = None;
        match auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Basic { user, password } => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]))?;
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, line)?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: bootvault-test\n    path: {}\n",
                    file.display()
                ));
            }
            RegistryAuth::Token { user, password } => {
                let server = TokenServer::start(dir.path(), user, password)?;
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    server.cert.display()
                ));
                token = Some(server);
            }
        }
        if let Some(remote) = proxy_of {
            config.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut reg = Registry {
            child: Some(child),
            dir,
            addr,
            token,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"))
                    .unwrap_or_default();
                return Err(io::Error::other(format!(
                    "docker-registry did not start on {}: {log}",
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the registry keeps the bytes of blob `sha256:<hex>` (to tamper with them).
    pub fn blob_data_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Token requests answered by the token server (0 without one).
    pub fn tokens_issued(&self) -> u32 {
        self.token
            .as_ref()
            .map_or(0, |t| t.shared.issued.load(Relaxed))
    }

    /// Kills the registry process (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

const SERVICE: &str = "bootvault-test-registry";
const ISSUER: &str = "bootvault-testkit";

#[derive(Default)]
struct TokenShared {
    user: String,
    password: String,
    key: PathBuf,
    /// The certificate, DER in base64, for the JWT `x5c` header.
    x5c: String,
    issued: AtomicU32,
}

/// The token server of the Bearer flow: checks Basic credentials, answers `{"token": JWT}`.
struct TokenServer {
    addr: SocketAddr,
    cert: PathBuf,
    shared: Arc<TokenShared>,
    /// Stops and joins the token server when dropped.
    _server: Server,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> io::Result<TokenServer> {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=bootvault-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        let pem = std::fs::read_to_string(&cert)?;
        let x5c: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let shared = Arc::new(TokenShared {
            user: user.into(),
            password: password.into(),
            key,
            x5c,
            issued: AtomicU32::new(0),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(Arc::clone(&shared));
        let server = Server::axum("bootvault-token", 1, app)?;
        Ok(TokenServer {
            addr: server.addr(),
            cert,
            shared,
            _server: server,
        })
    }

    fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn issue(
    axum::extract::State(s): axum::extract::State<Arc<TokenShared>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.user, s.password))
    );
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    // Grant what each `scope=repository:NAME:ACTIONS` asks for.
    let mut access = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(v) = pair.strip_prefix("scope=") else {
            continue;
        };
        let v = percent_decode(v);
        let mut parts = v.splitn(3, ':');
        if let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        {
            access.push(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = s.issued.fetch_add(1, Relaxed);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [s.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": s.user, "aud": SERVICE,
        "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("bv-{now}-{n}"),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = s.key.clone();
    let signed = tokio::task::spawn_blocking(move || sign(&key, input.as_bytes())).await;
    match signed {
        Ok(Ok(sig)) => {
            let token = format!("{}.{}", String::from_utf8_lossy(&sig.0), b64url(&sig.1));
            axum::Json(serde_json::json!({"token": token, "expires_in": 600})).into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response(),
    }
}

/// RS256 over `input` with `openssl dgst` (the test kit only; the library never shells out).
fn sign(key: &Path, input: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?
        .write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok((input.to_vec(), out.stdout))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
