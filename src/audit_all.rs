//! Auditing every host of a deployment at once, and the result as JSON and as an exit code. `audit` and the
//! audit that ends `up` both come here; what one host's checks are lives in `audit.rs`.

use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use crate::audit::{self, AuditOptions, CloudView, HostAudit};
use crate::deploy::{Deployment, Session, for_each_host};
use crate::engine::Current;
use crate::error::{Exit, report};
use crate::provider::Provider;
use crate::provider::catalog::ProviderData;
use crate::render::HostTarget;
use crate::spec::Spec;

/// What the audit's cloud checks see: the provider's view of the deployment, when it has a cloud firewall.
pub fn cloud_view(spec: &Spec, provider: &dyn Provider, current: Current) -> Option<CloudView> {
    let data = ProviderData::get(spec.provider.kind);
    data.has_firewall().then(|| CloudView {
        provider: provider.name(),
        firewall: current.firewall,
        servers: current.servers,
        needs_outbound_rules: data.firewall.explicit_outbound,
    })
}

/// Audits every host concurrently, reusing open sessions (by host name) where there are some; results in the
/// order given.
pub async fn audit_all(dep: &Arc<Deployment>, hosts: &[HostTarget], cloud_view: Option<CloudView>, opts: AuditOptions, sessions: Vec<Session>) -> Vec<(HostTarget, Result<HostAudit>)> {
    let view = Arc::new(cloud_view);
    let sessions = Arc::new(sessions);
    for_each_host(dep, hosts, |dep, host| {
        let view = Arc::clone(&view);
        let session = sessions.iter().find(|s| s.host.name == host.name).cloned();
        async move { audit::audit_host(&dep, &host, view.as_ref().as_ref(), opts, session).await }
    })
    .await
}

/// The audit as JSON: `{"ok", "hosts": [{"name", "address", "checks": [{"id", "status", "detail"}], "cause"}]}`.
pub fn to_json(results: &[(HostTarget, Result<HostAudit>)]) -> serde_json::Value {
    let ok = results.iter().all(|(_, r)| r.as_ref().is_ok_and(|a| !a.failed()));
    let hosts: Vec<serde_json::Value> = results
        .iter()
        .map(|(h, r)| match r {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(e) => json!({ "name": h.name, "address": h.address, "checks": [], "error": format!("{e:#}") }),
        })
        .collect();
    json!({ "ok": ok, "hosts": hosts })
}

/// The audit as text, the hosts that could be audited.
pub fn to_text(results: &[(HostTarget, Result<HostAudit>)]) -> String {
    let audits: Vec<HostAudit> = results.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
    audit::to_text(&audits)
}

/// The exit code of an audit: 1 when a host could not be audited (its error is printed), 3 when a check
/// failed, 0 otherwise.
pub fn exit_of(results: &[(HostTarget, Result<HostAudit>)]) -> Exit {
    let mut could_not_run = false;
    for (_, r) in results {
        if let Err(e) = r {
            report(e);
            could_not_run = true;
        }
    }
    if could_not_run {
        Exit::Failed
    } else if results.iter().any(|(_, r)| r.as_ref().is_ok_and(HostAudit::failed)) {
        Exit::CheckFailed
    } else {
        Exit::Success
    }
}
