//! Delivery of one notification to one webhook, and what its answer means.
//!
//! Every try carries the same `Idempotency-Key` (the notification's id) and,
//! when `notify.signing_secret` is set, `X-Vigil-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. Connection errors,
//! timeouts, 5xx and 429 are retried with exponential backoff and jitter
//! (429 and 503 honour `Retry-After`); any other 4xx is final: the
//! notification is dropped, counted and logged with the receiver's answer.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use vigil_shared::config::Secret;

use super::config::Webhook;
use super::dispatch::Notification;

/// What a try came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// Worth another try, after `after` when the receiver said so.
    Retry {
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// Refused for good (4xx other than 429).
    Refused {
        /// Status.
        status: u16,
        /// The start of the receiver's answer.
        body: String,
    },
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// A client for one webhook, with its TLS settings.
pub fn client(webhook: &Webhook, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
        .redirect(if webhook.http.follow_redirects {
            reqwest::redirect::Policy::limited(5)
        } else {
            reqwest::redirect::Policy::none()
        });
    if let Some(ca) = &webhook.http.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some((cert, key)) = &webhook.http.client_cert {
        let mut pem =
            std::fs::read(cert).map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("key_file {}: {e}", key.display()))?);
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|e| format!("cert_file/key_file: {e}"))?;
        builder = builder.identity(identity);
    }
    if webhook.http.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// One try.
pub async fn deliver(
    client: &reqwest::Client,
    webhook: &Webhook,
    n: &Notification,
    secret: Option<&Secret>,
    now_unix_seconds: i64,
) -> Outcome {
    let mut request = client
        .post(&webhook.url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", &n.id)
        .body(n.body.clone());
    if let Some(auth) = &webhook.http.authorization {
        request = request.header("Authorization", auth);
    }
    if let Some(secret) = secret {
        request = request.header(
            "X-Vigil-Signature",
            signature(secret.expose(), now_unix_seconds, n.body.as_bytes()),
        );
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            // Without the URL: a webhook's address often holds its secret
            // (`/services/T…/B…/token`, `user:password@`), and this goes
            // to the log.
            return Outcome::Retry {
                after: None,
                error: format!("{kind}: {}", e.without_url()),
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(512)
        .collect();
    match status {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Retry {
            after: retry_after,
            error: format!("HTTP {status}: {body}"),
        },
        _ => Outcome::Refused { status, body },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently with openssl:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
