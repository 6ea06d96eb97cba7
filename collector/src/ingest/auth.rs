//! Who may push. A bearer token is bound to one agent's `instance` (or to
//! `"*"`, any agent, a token only trusted senders hold); a token presented
//! for another agent is refused, and a bound token may write only series
//! whose `instance` label is its own ([`Binding`]). With no
//! tokens configured, only agents on the collector's own host (loopback) may
//! push, unless `ingest.unauthenticated = "none"`. Tokens are compared in
//! constant time and never logged.

use std::net::SocketAddr;

use crate::config::{AgentToken, Unauthenticated};
use crate::ingest::RejectReason;

/// Checks pushes against the configured tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Vec<AgentToken>,
    unauthenticated: Unauthenticated,
}

/// What an accepted push may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Any series: the `"*"` token, or an agent on this host when no
    /// tokens are configured.
    Any,
    /// Only series whose `instance` label is this.
    Instance(String),
}

impl Binding {
    /// The first series of `batch` this binding may not write, described
    /// for the refusal; `None` when every series is allowed.
    pub fn foreign_series(&self, batch: &vigil_shared::batch::Batch<'_>) -> Option<String> {
        let Binding::Instance(instance) = self else {
            return None;
        };
        batch.families.iter().find_map(|family| {
            family.series.iter().find_map(|series| {
                let own = series
                    .labels()
                    .find(|(name, _)| *name == "instance")
                    .is_some_and(|(_, value)| value == instance);
                (!own).then(|| vigil_shared::labels::describe_series(family.name, series.labels()))
            })
        })
    }
}

/// A refused push: the reason and a message the agent's operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RejectReason,
    /// What to do about it.
    pub message: String,
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// An authenticator over these tokens.
    pub fn new(tokens: Vec<AgentToken>, unauthenticated: Unauthenticated) -> Self {
        Self {
            tokens,
            unauthenticated,
        }
    }

    /// Decides whether `agent_id`, connecting from `peer` with `authorization`, may push.
    pub fn check(
        &self,
        agent_id: &str,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
    ) -> Result<Binding, Refusal> {
        let refuse = |reason, message: String| Err(Refusal { reason, message });
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if self.tokens.is_empty() {
            let loopback = peer.is_some_and(|p| p.ip().is_loopback());
            return match (self.unauthenticated, loopback) {
                (Unauthenticated::Loopback, true) => Ok(Binding::Any),
                (Unauthenticated::Loopback, false) => refuse(
                    RejectReason::Unauthenticated,
                    "this collector has no agent tokens ([[ingest.agents]]) and accepts agents on its own host only; \
                     add a token for this agent to the collector's config and the agent's [collector] token_file"
                        .into(),
                ),
                (Unauthenticated::None, _) => refuse(
                    RejectReason::Unauthenticated,
                    "this collector accepts no agent (ingest.unauthenticated = \"none\" and no [[ingest.agents]])".into(),
                ),
            };
        }
        let Some(presented) = presented else {
            return refuse(
                RejectReason::Unauthenticated,
                format!(
                    "agent {agent_id:?} sent no bearer token; set [collector] token_file in the agent's config"
                ),
            );
        };
        let matching = self.tokens.iter().filter(|t| t.token.accepts(presented));
        let mut bound_to = None;
        for t in matching {
            if t.instance == "*" {
                return Ok(Binding::Any);
            }
            if t.instance == agent_id {
                return Ok(Binding::Instance(t.instance.clone()));
            }
            bound_to = Some(t.instance.clone());
        }
        match bound_to {
            Some(other) => refuse(
                RejectReason::PermissionDenied,
                format!("the token belongs to agent {other:?}, not {agent_id:?}"),
            ),
            None => refuse(
                RejectReason::Unauthenticated,
                format!(
                    "agent {agent_id:?} sent a token this collector does not know; check the agent's token_file against [[ingest.agents]]"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenCheck;
    use vigil_shared::config::Secret;

    fn hash_of(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn peer(ip: [u8; 4]) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, 40000)))
    }

    #[test]
    fn without_tokens_only_loopback_agents_may_push() {
        let auth = Authenticator::new(vec![], Unauthenticated::Loopback);
        assert!(auth.check("a", peer([127, 0, 0, 1]), None).is_ok());
        let refusal = auth.check("a", peer([192, 0, 2, 1]), None).err();
        assert_eq!(
            refusal.map(|r| r.reason),
            Some(RejectReason::Unauthenticated)
        );
        let none = Authenticator::new(vec![], Unauthenticated::None);
        assert!(none.check("a", peer([127, 0, 0, 1]), None).is_err());
    }

    #[test]
    fn tokens_are_bound_to_their_agent() {
        let auth = Authenticator::new(
            vec![
                AgentToken {
                    instance: "web-1".into(),
                    token: TokenCheck::Plain(Secret::new("token-web-1-0123456")),
                },
                AgentToken {
                    instance: "*".into(),
                    token: TokenCheck::Plain(Secret::new("fleet-token-0123456")),
                },
                AgentToken {
                    instance: "db-1".into(),
                    // sha256("token-db-1-0123456789")
                    token: TokenCheck::Sha256(hash_of("token-db-1-0123456789")),
                },
            ],
            Unauthenticated::Loopback,
        );
        let local = peer([127, 0, 0, 1]);
        assert!(
            auth.check("web-1", local, Some("Bearer token-web-1-0123456"))
                .is_ok()
        );
        assert_eq!(
            auth.check("db-1", local, Some("Bearer token-db-1-0123456789")),
            Ok(Binding::Instance("db-1".into()))
        );
        assert!(
            auth.check("db-1", local, Some("Bearer token-db-1-012345678X"))
                .is_err()
        );
        assert!(
            auth.check("db-9", local, Some("Bearer fleet-token-0123456"))
                .is_ok()
        );
        let r = auth
            .check("web-2", local, Some("Bearer token-web-1-0123456"))
            .err();
        assert_eq!(
            r.as_ref().map(|r| r.reason),
            Some(RejectReason::PermissionDenied)
        );
        assert!(r.is_some_and(|r| r.message.contains("web-1")));
        let r = auth.check("web-1", local, Some("Bearer wrong")).err();
        assert_eq!(r.map(|r| r.reason), Some(RejectReason::Unauthenticated));
        // With tokens configured, loopback is no excuse.
        let r = auth.check("web-1", local, None).err();
        assert!(r.is_some_and(|r| r.message.contains("no bearer token")));
    }
}
