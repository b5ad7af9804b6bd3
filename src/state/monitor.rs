//! Operator monitoring of outbound sessions: what each MX attempt shows goes into the partner
//! certificate inventory and the MX TLS memory, and from them into the expiry gauge, the
//! changed-certificate warning and the suspected-downgrade count (DESIGN, "Contract: operator
//! monitoring"). One call per MX attempt, from `outbound::establish::conclude`.

use super::inventory::{Inventory, Sighting};
use super::mx_tls::{MxTlsMemory, Shown};
use crate::config::Config;
use crate::log;
use crate::policy::{Applied, Offer};
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::time::Duration;

/// Everything monitoring keeps, shared by the outbound sessions and the admin endpoint.
#[derive(Clone)]
pub struct Monitor {
    pub inventory: Inventory,
    pub mx_tls: MxTlsMemory,
}

/// What one MX attempt showed, as `conclude` knows it.
pub struct MxAttempt<'a> {
    /// The session's id, for the log lines.
    pub session: &'a str,
    /// The recipient domain.
    pub domain: &'a str,
    /// The MX host name as routed.
    pub mx: &'a str,
    pub applied: &'a Applied,
    /// What the host offered, with the certificate's verdict for this domain.
    pub offer: &'a Offer,
    /// The TLS version reached (`TLSv1.3`, ...), when the handshake finished.
    pub version: Option<&'static str>,
    /// The chain the host presented, leaf first (empty without a handshake).
    pub chain: &'a [CertificateDer<'static>],
}

impl Monitor {
    /// Opens both memories in `state_directory`.
    pub fn open(dir: &Path) -> Monitor {
        Monitor {
            inventory: Inventory::open(dir),
            mx_tls: MxTlsMemory::open(dir),
        }
    }

    /// Records one MX attempt: its certificate, whether it offered STARTTLS and the version.
    pub fn mx_attempt(&self, attempt: &MxAttempt<'_>, window: Duration) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.certificate(attempt, now);
        self.downgrade(attempt, now, window);
    }

    fn certificate(&self, attempt: &MxAttempt<'_>, now: i64) {
        let Some(leaf) = attempt.chain.first() else {
            return;
        };
        let applied = attempt.applied;
        let policy_domain = applied.entry.is_some();
        let learnt = self.inventory.observe(&Sighting {
            domain: attempt.domain,
            mx: attempt.mx,
            leaf: leaf.as_ref(),
            verified: matches!(attempt.offer, Offer::Tls(v) if v.is_verified()),
            policy: applied.source.as_str(),
            mode: applied.mode.as_str(),
            policy_domain,
            now,
        });
        if !policy_domain {
            return;
        }
        if let Some(not_after) = learnt.not_after {
            crate::metrics::partner_certificate_expiry(attempt.domain, attempt.mx, not_after);
        }
        if let Some(old) = &learnt.replaced {
            log::warn("partner_certificate_changed")
                .field("domain", attempt.domain)
                .field("mx", attempt.mx)
                .field("old_sha256", old)
                .field("new_sha256", &learnt.sha256)
                .field("id", attempt.session)
                .field(
                    "not_after",
                    learnt
                        .not_after
                        .map_or("-".to_string(), crate::log::format_unix),
                )
                .emit();
        }
    }

    fn downgrade(&self, attempt: &MxAttempt<'_>, now: i64, window: Duration) {
        let shown = match attempt.offer {
            Offer::NotOffered => Shown::NoStarttls,
            _ => Shown::Starttls(attempt.version),
        };
        let Some(suspicion) = self
            .mx_tls
            .observe(attempt.mx, shown, attempt.session, now, window)
        else {
            return;
        };
        // Policy domains by name, the rest as `other`: the label set stays the operator's.
        crate::metrics::downgrade_suspected("outbound", &attempt.applied.label);
        log::warn("downgrade_suspected")
            .field("domain", attempt.domain)
            .field("mx", attempt.mx)
            .field("direction", "outbound")
            .field("id", attempt.session)
            .field("detail", suspicion.describe())
            .emit();
    }

    /// Sets the expiry gauge of every policy domain's MX hosts from the inventory (at start
    /// and after a reload: the gauge survives restarts, and follows the policy entries).
    pub fn publish_expiries(&self, config: &Config) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (domain, mx, not_after) in self.inventory.current_expiries() {
            if config.outbound_policy.lookup(&domain, now).entry.is_some() {
                crate::metrics::partner_certificate_expiry(&domain, &mx, not_after);
            }
        }
    }

    /// Writes what is unsaved (at shutdown).
    pub fn flush(&self) {
        self.inventory.flush();
        self.mx_tls.flush();
    }
}
