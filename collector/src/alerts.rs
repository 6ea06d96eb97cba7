//! The wire between the rules and notifications: the rule engine's alerts,
//! as the notifier takes them ([`vigil_notify::AlertSource`]).
//!
//! Neither crate knows the other; this adapter adds external labels, drops
//! pending alerts (Prometheus never sends them) and builds each alert's
//! `generatorURL`, which the collector serves at `/graph`.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil_notify::{AlertSource, NotifyAlert};
use vigil_rules::AlertState;
use vigil_rules::manager::RuleManager;

/// The rule manager's alerts, for notifications.
pub struct RuleAlerts(pub Arc<RuleManager>);

impl AlertSource for RuleAlerts {
    fn alerts(&self) -> Vec<NotifyAlert> {
        let (external_labels, external_url) = self.0.external();
        self.0
            .alerts_with_expr()
            .into_iter()
            .filter(|(_, _, a)| a.state != AlertState::Pending)
            .map(|(_, expr, a)| {
                let mut labels: BTreeMap<String, String> = external_labels.clone();
                labels.extend(a.labels.iter().cloned());
                NotifyAlert {
                    labels,
                    annotations: a.annotations.iter().cloned().collect(),
                    starts_at: a.fired_at.unwrap_or(a.active_at),
                    ends_at: if a.state == AlertState::Inactive {
                        a.resolved_at
                    } else {
                        None
                    },
                    generator_url: format!(
                        "{external_url}/graph?g0.expr={}&g0.tab=1",
                        vigil_template::query_escape(&expr)
                    ),
                    fired_sample_ms: a.fired_sample_ms,
                }
            })
            .collect()
    }

    fn external_url(&self) -> String {
        self.0.external().1
    }

    fn evaluated(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.0.evaluated)
    }
}
