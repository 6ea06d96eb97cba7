//! The HTTP port's web configuration file, in the format Prometheus and
//! node_exporter take with `--web.config.file` (exporter-toolkit's), so a
//! user reuses the file they have:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/vigil/tls/collector.crt
//!   key_file: /etc/vigil/tls/collector.key
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: /etc/vigil/tls/clients-ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   grafana: $2y$10$...        # bcrypt, as htpasswd -nBC 10 writes it
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! ```
//!
//! Basic authentication applies to every path but `/-/healthy`; a request
//! with the admin token (`Authorization: Bearer`) passes it too, so that
//! admin calls need one credential, not two. Successful bcrypt checks are
//! remembered (by a SHA-256 of the password, never the password) so a busy
//! Grafana does not pay bcrypt's cost on every query; failures are not, and
//! each one is counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::Digest as _;
use tracing::warn;

use super::HttpState;

/// Why a web configuration file is refused.
#[derive(Debug, thiserror::Error)]
#[error("web config {file}: {message}", file = .file.display())]
pub struct WebConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, with the key.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    http_server_config: Option<RawHttpServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpServer {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Accepted for compatibility; the collector serves HTTP/1.1.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
}

/// A validated web configuration.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// TLS for the HTTP port.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name → bcrypt hash.
    users: BTreeMap<String, String>,
    /// Headers added to every response.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `file`; relative paths inside start at its folder.
    pub fn load(file: &Path) -> Result<Self, WebConfigError> {
        let fail = |message: String| WebConfigError {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
        let raw: RawWebConfig = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut users = BTreeMap::new();
        for (user, hash) in raw.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(fail(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 {user} writes one)"
                )));
            }
            users.insert(user, hash);
        }
        let mut headers = Vec::new();
        if let Some(server) = raw.http_server_config {
            for (name, value) in server.headers {
                let n = HeaderName::try_from(name.as_str())
                    .map_err(|e| fail(format!("http_server_config.headers.{name}: {e}")))?;
                if [
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::CONTENT_LENGTH,
                ]
                .contains(&n)
                {
                    return Err(fail(format!(
                        "http_server_config.headers.{name}: this header cannot be set"
                    )));
                }
                let v = HeaderValue::try_from(value.as_str())
                    .map_err(|e| fail(format!("http_server_config.headers.{name}: {e}")))?;
                headers.push((n, v));
            }
        }
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(server_tls(&t, &resolve).map_err(fail)?)),
        };
        Ok(Self {
            tls,
            users,
            headers,
        })
    }

    /// True when basic authentication is on.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }
}

fn tls_version(key: &str, text: &Option<String>) -> Result<Option<u8>, String> {
    match text.as_deref() {
        None => Ok(None),
        Some("TLS12") => Ok(Some(12)),
        Some("TLS13") => Ok(Some(13)),
        Some(other) => Err(format!(
            "tls_server_config.{key}: {other:?}; Vigil supports TLS12 and TLS13"
        )),
    }
}

fn server_tls(
    t: &RawTls,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_file = resolve(&t.cert_file);
    let key_file = resolve(&t.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no certificate in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key_file.display()))?;
    let min = tls_version("min_version", &t.min_version)?.unwrap_or(12);
    let max = tls_version("max_version", &t.max_version)?.unwrap_or(13);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let mode = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match mode {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let Some(ca) = &t.client_ca_file else {
                return Err(format!(
                    "tls_server_config.client_auth_type {mode} needs client_ca_file"
                ));
            };
            let ca = resolve(ca);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca)
                .map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
                roots.add(cert).map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if mode == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {mode}: a certificate that is not verified proves nothing; use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?}: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: cert_file and key_file: {e}"))
}

/// Remembered successful logins and failure counters.
#[derive(Default)]
pub struct BasicAuthState {
    accepted: Mutex<std::collections::HashSet<(String, [u8; 32])>>,
    /// Failed logins.
    pub failures: AtomicU64,
}

/// Most remembered successful logins.
const MAX_REMEMBERED: usize = 1024;

fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl HttpState {
    /// True when `headers` carry a valid basic-auth login.
    fn basic_auth_ok(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_credentials)
        else {
            return false;
        };
        let Some(hash) = self.web.users.get(&user) else {
            return false;
        };
        let key = (user, sha2::Sha256::digest(password.as_bytes()).into());
        let remembered = || {
            self.basic_auth
                .accepted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if remembered().contains(&key) {
            return true;
        }
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            let mut accepted = remembered();
            if accepted.len() >= MAX_REMEMBERED {
                accepted.clear();
            }
            accepted.insert(key);
            true
        } else {
            false
        }
    }

    /// True when the request is from a basic-auth user (only when basic
    /// authentication is on).
    pub fn is_basic_auth_user(&self, headers: &axum::http::HeaderMap) -> bool {
        self.web.has_users() && self.basic_auth_ok(headers)
    }
}

/// The middleware: basic authentication (when configured) on every path
/// but `/-/healthy`, then the configured response headers.
pub async fn guard(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    if state.web.has_users() && request.uri().path() != "/-/healthy" {
        let headers = request.headers().clone();
        let admin = super::admin::has_admin_token(&state, &headers);
        let st = Arc::clone(&state);
        let ok = admin
            || tokio::task::spawn_blocking(move || st.basic_auth_ok(&headers))
                .await
                .unwrap_or(false);
        if !ok {
            state.basic_auth.failures.fetch_add(1, Ordering::Relaxed);
            warn!(path = %request.uri().path(), "HTTP request without a valid basic-auth login refused");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"vigil\"")],
                "401 Unauthorized: basic authentication required\n",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    for (name, value) in &state.web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_name_the_key() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("web.yml");
        std::fs::write(&file, "basic_auth_users:\n  alice: plaintext\n")?;
        let e = WebConfig::load(&file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
        std::fs::write(
            &file,
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
        )?;
        let e = WebConfig::load(&file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cert_file"), "{e}");
        std::fs::write(&file, "unknown: 1\n")?;
        assert!(WebConfig::load(&file).is_err());
        let hash = bcrypt::hash("secret", 4)?;
        std::fs::write(
            &file,
            format!(
                "basic_auth_users:\n  alice: '{hash}'\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
            ),
        )?;
        let w = WebConfig::load(&file)?;
        assert!(w.has_users());
        Ok(())
    }
}
