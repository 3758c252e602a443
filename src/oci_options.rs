//! Registry settings (plain data), below the HTTP options that hold them and the registry
//! client that reads them.

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name (or `<token>` for an identity token, as helpers return it).
    pub username: String,
    /// Password or token; never printed.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, ***)", self.username)
    }
}

/// Registry settings of a store (part of [`crate::FetchOptions`]).
#[derive(Clone, Debug, Default)]
pub struct OciOptions {
    /// `(registry host, mirror)`: the mirror (`host[:port]`, or with an `http://`/`https://`
    /// prefix to choose the scheme) is tried before the registry, in the order given.
    pub mirrors: Vec<(String, String)>,
    /// Hosts (`host[:port]` or `host`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials per host, before any config file.
    pub credentials: Vec<(String, Credential)>,
    /// Total deadline of one manifest fetch (every try, mirror and document of it), one token
    /// request and one credential-helper run; `None`: [`DEFAULT_DEADLINE`]. The idle timeout
    /// alone does not bound them: a server trickling a byte a second never goes idle.
    pub deadline: Option<std::time::Duration>,
}

/// Default of [`OciOptions::deadline`].
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

impl OciOptions {
    /// The deadline in force.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline.unwrap_or(DEFAULT_DEADLINE)
    }
}
