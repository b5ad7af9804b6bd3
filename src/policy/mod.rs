//! Outbound domain policy: which mode applies to a recipient domain (`[outbound_policy]`), and
//! the verdict on what a remote offered. Pure: no IO, so the tables in `tests.rs` cover it.
//!
//! Vocabulary follows Postfix's `smtp_tls_security_level`: `none` never starts TLS,
//! `opportunistic` uses TLS when it works and plaintext otherwise, `encrypt` requires TLS with any
//! certificate, `verify` requires TLS with a certificate valid to the trust anchors for the MX
//! host name or one of the `match` names.

pub mod dane;
pub mod mta_sts;
pub mod txt;

use crate::tls::{CertVerdict, TrustAnchors};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;

/// A policy mode, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    None,
    Opportunistic,
    /// DANE where the MX host publishes usable secure TLSA records, else MTA-STS if the domain
    /// publishes it, else opportunistic (Postfix's `dane`). Until discovery replaces it, a
    /// session under `dane` is judged as opportunistic.
    Dane,
    /// Only MX hosts with usable secure TLSA records are used.
    #[serde(rename = "dane-only")]
    DaneOnly,
    Encrypt,
    Verify,
}

impl Mode {
    /// The configuration spelling, also the `mode` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Opportunistic => "opportunistic",
            Mode::Dane => "dane",
            Mode::DaneOnly => "dane-only",
            Mode::Encrypt => "encrypt",
            Mode::Verify => "verify",
        }
    }

    /// Whether mail under this mode may never leave in plaintext. (`dane-only` never reaches a
    /// host without DANE, which is then judged as `verify`.)
    pub fn is_tls_required(self) -> bool {
        matches!(self, Mode::Encrypt | Mode::Verify | Mode::DaneOnly)
    }

    /// Whether DANE discovery applies to a domain under this mode.
    pub fn wants_dane(self) -> bool {
        matches!(self, Mode::Dane | Mode::DaneOnly)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[outbound_policy.domain]]` entry.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    /// `bank.example` (exact) or `.bank.example` (its subdomains), lowercase.
    pub domain: String,
    pub mode: Mode,
    /// Trust anchors for `verify` for this domain; `None`: the policy-wide ones.
    pub trust_anchors: Option<Arc<TrustAnchors>>,
    /// Names accepted in the certificate besides the MX host name (lowercase).
    pub match_names: Vec<String>,
    /// Until then (Unix seconds), an enforcement failure falls back to opportunistic.
    pub relax_until: Option<i64>,
}

impl DomainPolicy {
    fn matches(&self, domain: &str) -> bool {
        match self.domain.strip_prefix('.') {
            Some(_) => domain.ends_with(self.domain.as_str()),
            None => domain == self.domain,
        }
    }
}

/// `[outbound_policy]`, validated.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    pub default: Mode,
    pub trust_anchors: Arc<TrustAnchors>,
    pub domains: Vec<DomainPolicy>,
    /// Apply published MTA-STS policies to domains without an entry (`mta_sts`).
    pub mta_sts: bool,
    /// WebPKI roots for policy fetches and MX certificates under MTA-STS.
    pub mta_sts_anchors: Arc<TrustAnchors>,
}

/// Where the mode applied to a domain came from: the `policy` label of
/// `starttls_proxy_outbound_domain_sessions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `[[outbound_policy.domain]]` entry.
    Configured,
    /// The MX host's secure TLSA records (DANE).
    Dane,
    /// The domain's published MTA-STS policy.
    MtaSts,
    /// Neither: the default mode.
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dane => "dane",
            Source::Configured => "configured",
            Source::MtaSts => "mta-sts",
            Source::None => "none",
        }
    }
}

/// The policy that applies to one recipient domain at one moment.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Index of the `[[outbound_policy.domain]]` entry, `None` for the default.
    pub entry: Option<usize>,
    /// The entry's `domain` (metric label), or `other` for the default.
    pub label: String,
    pub mode: Mode,
    /// `relax_until` is set and still in the future: failures fall back to opportunistic.
    pub relaxed: bool,
    pub relax_until: Option<i64>,
    pub trust_anchors: Arc<TrustAnchors>,
    pub match_names: Vec<String>,
    pub source: Source,
    /// The mode results and reports judge an attempt by: `mode`, except MTA-STS `testing`,
    /// which delivers as opportunistic and reports what `enforce` would have refused.
    pub judged_as: Mode,
    /// What a TLS report names as the policy (RFC 8460 §4.3).
    pub policy_type: PolicyType,
    pub policy_strings: Vec<String>,
    /// The MX host's usable secure TLSA records: its certificate is judged by them, not by
    /// `trust_anchors` (set only by [`Applied::under_dane`]).
    pub tlsa: Option<Arc<Vec<dane::Tlsa>>>,
    /// What DANE found for the MX host (the log's `tlsa=`: `usable`, `unusable`).
    pub tlsa_found: Option<&'static str>,
    /// The MTA-STS policy's mode when one applies (the log's `sts_mode=`).
    pub sts_mode: Option<mta_sts::StsMode>,
    /// The domain's MTA-STS policy could not be fetched or read (and none was cached): what a
    /// session otherwise successful is recorded as.
    pub sts_failure: Option<ResultType>,
}

impl Applied {
    /// One MX host with a secure TLSA RRset (RFC 7672 §2.2, §3): usable records → TLS
    /// authenticated by them (judged as `verify`); records that are all unusable → TLS required
    /// without authentication (`encrypt`). `relax_until` keeps working.
    pub fn under_dane(mut self, tlsa: &dane::SecureTlsa) -> Applied {
        let mode = match &tlsa.set {
            dane::TlsaSet::Usable(records) => {
                self.tlsa = Some(Arc::new(records.clone()));
                Mode::Verify
            }
            dane::TlsaSet::Unusable => Mode::Encrypt,
        };
        self.mode = mode;
        self.judged_as = mode;
        self.match_names = Vec::new();
        self.tlsa_found = Some(tlsa.as_str());
        self.sts_mode = None;
        self.sts_failure = None;
        self.source = Source::Dane;
        self.policy_type = PolicyType::Tlsa;
        self.policy_strings = tlsa.strings.clone();
        self
    }

    /// A domain without an entry, under its published MTA-STS `policy` (RFC 8461 §4–5):
    /// `enforce` requires TLS with a certificate valid to the WebPKI `anchors` for the MX host
    /// name (the MX patterns are applied to the route by the caller); `testing` delivers as
    /// opportunistic and judges as `enforce`; `none` is no policy.
    pub fn under_mta_sts(
        mut self,
        mode: mta_sts::StsMode,
        strings: Vec<String>,
        anchors: Arc<TrustAnchors>,
    ) -> Applied {
        let (deliver, judge) = match mode {
            mta_sts::StsMode::Enforce => (Mode::Verify, Mode::Verify),
            mta_sts::StsMode::Testing => (Mode::Opportunistic, Mode::Verify),
            mta_sts::StsMode::None => return self,
        };
        self.mode = deliver;
        self.judged_as = judge;
        self.trust_anchors = anchors;
        self.match_names = Vec::new();
        self.source = Source::MtaSts;
        self.sts_mode = Some(mode);
        self.policy_type = PolicyType::Sts;
        self.policy_strings = strings;
        self
    }
}

impl OutboundPolicy {
    /// The policy for `domain` (lowercase, no trailing dot) at `now` (Unix seconds): an exact
    /// entry wins, then the longest matching `.suffix`, then the default.
    pub fn lookup(&self, domain: &str, now: i64) -> Applied {
        let exact = self
            .domains
            .iter()
            .position(|d| !d.domain.starts_with('.') && d.matches(domain));
        let best = exact.or_else(|| {
            self.domains
                .iter()
                .enumerate()
                .filter(|(_, d)| d.domain.starts_with('.') && d.matches(domain))
                .max_by_key(|(_, d)| d.domain.len())
                .map(|(i, _)| i)
        });
        match best {
            Some(i) => {
                let d = &self.domains[i];
                Applied {
                    entry: Some(i),
                    label: d.domain.clone(),
                    mode: d.mode,
                    relaxed: d.relax_until.is_some_and(|until| until > now),
                    relax_until: d.relax_until,
                    trust_anchors: d
                        .trust_anchors
                        .clone()
                        .unwrap_or_else(|| self.trust_anchors.clone()),
                    match_names: d.match_names.clone(),
                    source: Source::Configured,
                    judged_as: d.mode,
                    policy_type: PolicyType::NoPolicyFound,
                    policy_strings: Vec::new(),
                    tlsa: None,
                    tlsa_found: None,
                    sts_mode: None,
                    sts_failure: None,
                }
            }
            None => Applied {
                entry: None,
                label: "other".to_string(),
                mode: self.default,
                relaxed: false,
                relax_until: None,
                trust_anchors: self.trust_anchors.clone(),
                match_names: Vec::new(),
                source: Source::None,
                judged_as: self.default,
                policy_type: PolicyType::NoPolicyFound,
                policy_strings: Vec::new(),
                tlsa: None,
                tlsa_found: None,
                sts_mode: None,
                sts_failure: None,
            },
        }
    }
}

/// One domain's entry changed between two configurations (change control: who relaxed what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    /// The entry's `domain`, or `default` for `[outbound_policy] default`.
    pub domain: String,
    /// The mode before and after (`None`: no entry).
    pub from: Option<Mode>,
    pub to: Option<Mode>,
    /// `relax_until` before and after (Unix seconds).
    pub relax_from: Option<i64>,
    pub relax_to: Option<i64>,
}

impl OutboundPolicy {
    /// What changed from `old` to `self`, entry by entry, in domain order.
    pub fn changes_from(&self, old: &OutboundPolicy) -> Vec<PolicyChange> {
        let entries = |p: &OutboundPolicy| {
            let mut map: std::collections::BTreeMap<String, (Mode, Option<i64>)> = p
                .domains
                .iter()
                .map(|d| (d.domain.clone(), (d.mode, d.relax_until)))
                .collect();
            map.insert("default".to_string(), (p.default, None));
            map
        };
        let (before, after) = (entries(old), entries(self));
        let mut domains: Vec<&String> = before.keys().chain(after.keys()).collect();
        domains.sort();
        domains.dedup();
        domains
            .into_iter()
            .filter_map(|domain| {
                let (b, a) = (before.get(domain), after.get(domain));
                (b != a).then(|| PolicyChange {
                    domain: domain.clone(),
                    from: b.map(|e| e.0),
                    to: a.map(|e| e.0),
                    relax_from: b.and_then(|e| e.1),
                    relax_to: a.and_then(|e| e.1),
                })
            })
            .collect()
    }
}

/// What one STARTTLS attempt with one MX host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// STARTTLS was not in the EHLO reply (or the host only speaks HELO).
    NotOffered,
    /// STARTTLS was answered with something other than 220 (the reply text).
    Refused(String),
    /// STARTTLS was answered with `421` or `221` (the reply text): the host is closing the
    /// connection, so plaintext needs a fresh one; for enforcement it is a refusal (4.7.4).
    Closed(String),
    /// The host sent bytes after its 220 and before the handshake (response injection).
    Injected,
    /// The handshake failed (the reason).
    HandshakeFailed(String),
    /// TLS is up; the certificate got this verdict.
    Tls(CertVerdict),
}

/// RFC 8460 §4.3 policy types.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
pub enum PolicyType {
    #[serde(rename = "tlsa")]
    Tlsa,
    #[serde(rename = "sts")]
    Sts,
    #[serde(rename = "no-policy-found")]
    NoPolicyFound,
}

/// The RFC 8460 §4.3 result types: what a failed session is counted as in a TLS report and the
/// session results.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub const ALL: [ResultType; 11] = [
        ResultType::StarttlsNotSupported,
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::TlsaInvalid,
        ResultType::DnssecInvalid,
        ResultType::DaneRequired,
        ResultType::StsPolicyFetchError,
        ResultType::StsPolicyInvalid,
        ResultType::StsWebpkiInvalid,
    ];

    /// The registry's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// A failure that enforcement turns into a refusal: `451 4.7.4` or `451 4.7.5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// 4.7.4: STARTTLS not offered.
    NotOffered,
    /// 4.7.4: STARTTLS refused with this reply.
    Refused(String),
    /// 4.7.5: bytes after the 220 to STARTTLS.
    Injected,
    /// 4.7.5: handshake failure.
    Handshake(String),
    /// 4.7.5: certificate not verified.
    Certificate(CertVerdict),
}

impl TlsFailure {
    /// What a TLS report counts it as.
    pub fn result_type(&self) -> ResultType {
        match self {
            TlsFailure::NotOffered | TlsFailure::Refused(_) => ResultType::StarttlsNotSupported,
            TlsFailure::Injected | TlsFailure::Handshake(_) => ResultType::ValidationFailure,
            TlsFailure::Certificate(v) => match v {
                CertVerdict::NameMismatch => ResultType::CertificateHostMismatch,
                CertVerdict::Expired => ResultType::CertificateExpired,
                CertVerdict::Untrusted => ResultType::CertificateNotTrusted,
                // RFC 8460 §4.3.2.2: none of the TLSA records was found valid for the chain.
                CertVerdict::DaneNoMatch => ResultType::TlsaInvalid,
                CertVerdict::Verified(_) | CertVerdict::Invalid => ResultType::ValidationFailure,
            },
        }
    }

    /// The refusal the MTA gets when this failure at `mx` (`host[ip]`) stops delivery to
    /// `domain`: Postfix's wording, so administrators recognise it.
    pub fn reply(&self, domain: &str, mx: &str) -> crate::smtp::Reply {
        use crate::smtp::reply;
        match self {
            TlsFailure::NotOffered => reply::tls_not_offered(domain, mx),
            TlsFailure::Refused(r) => reply::starttls_refused(domain, mx, r),
            TlsFailure::Injected => reply::tls_failed(
                domain,
                mx,
                "response injection (data after its 220 to STARTTLS)",
            ),
            TlsFailure::Handshake(e) => {
                reply::tls_failed(domain, mx, &format!("Cannot start TLS: {e}"))
            }
            TlsFailure::Certificate(v) => reply::tls_failed(
                domain,
                mx,
                &format!("Server certificate not verified: {}", v.describe()),
            ),
        }
    }

    /// Label for `starttls_proxy_policy_rejections_total` and the relaxed counter.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsFailure::NotOffered => "starttls_not_offered",
            TlsFailure::Refused(_) => "starttls_refused",
            TlsFailure::Injected => "response_injection",
            TlsFailure::Handshake(_) => "handshake_failed",
            TlsFailure::Certificate(_) => "certificate_not_verified",
        }
    }
}

/// What the session does next with this MX connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the connection as it is (TLS or plaintext); `relaxed` holds the failure that
    /// an expiring relaxation let through.
    Proceed { relaxed: Option<TlsFailure> },
    /// Drop this connection and deliver over a fresh plaintext one (opportunistic after a
    /// failed handshake: the TLS state of the old one is unusable).
    RetryPlain { relaxed: Option<TlsFailure> },
    /// Policy forbids delivery over this connection.
    Refuse(TlsFailure),
}

/// What failed in `offer` as `mode` sees it (`None`: nothing): STARTTLS missing or broken
/// always counts (a TLS report tells the partner even when opportunistic delivery went on in
/// plaintext); the certificate only where the mode checks it.
pub fn failure(mode: Mode, offer: &Offer) -> Option<TlsFailure> {
    match offer {
        Offer::NotOffered => Some(TlsFailure::NotOffered),
        Offer::Refused(r) | Offer::Closed(r) => Some(TlsFailure::Refused(r.clone())),
        Offer::Injected => Some(TlsFailure::Injected),
        Offer::HandshakeFailed(e) => Some(TlsFailure::Handshake(e.clone())),
        Offer::Tls(v) if mode == Mode::Verify && !v.is_verified() => {
            Some(TlsFailure::Certificate(*v))
        }
        Offer::Tls(_) => None,
    }
}

/// The verdict for `mode` on what a host offered (`mode` is never `None` here: that mode does
/// not try STARTTLS at all).
pub fn decide(mode: Mode, relaxed: bool, offer: &Offer) -> Decision {
    let Some(failure) = failure(mode, offer) else {
        return Decision::Proceed { relaxed: None };
    };
    // What opportunistic does with this failure: a refused or missing STARTTLS leaves a usable
    // plaintext session; a broken handshake does not.
    let fallback = |relaxed: Option<TlsFailure>| match offer {
        Offer::NotOffered | Offer::Refused(_) | Offer::Tls(_) => Decision::Proceed { relaxed },
        Offer::Closed(_) | Offer::Injected | Offer::HandshakeFailed(_) => {
            Decision::RetryPlain { relaxed }
        }
    };
    if !mode.is_tls_required() {
        return fallback(None);
    }
    if relaxed {
        return fallback(Some(failure));
    }
    Decision::Refuse(failure)
}

#[cfg(test)]
mod tests;
