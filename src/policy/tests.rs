use super::*;

fn anchors() -> Arc<TrustAnchors> {
    Arc::new(TrustAnchors::from_roots(
        "empty".into(),
        rustls::RootCertStore::empty(),
    ))
}

fn entry(domain: &str, mode: Mode, relax_until: Option<i64>) -> DomainPolicy {
    DomainPolicy {
        domain: domain.into(),
        mode,
        trust_anchors: None,
        match_names: Vec::new(),
        relax_until,
    }
}

fn policy() -> OutboundPolicy {
    OutboundPolicy {
        default: Mode::Opportunistic,
        trust_anchors: anchors(),
        domains: vec![
            entry(".example", Mode::Encrypt, None),
            entry("bank.example", Mode::Verify, None),
            entry(".eu.bank.example", Mode::Verify, Some(2_000)),
            entry("plain.example", Mode::None, None),
        ],
        mta_sts: true,
        mta_sts_anchors: anchors(),
    }
}

#[test]
fn lookup_table() {
    let p = policy();
    let now = 1_000;
    let table = [
        ("bank.example", "bank.example", Mode::Verify, false),
        ("mx.bank.example", ".example", Mode::Encrypt, false),
        ("x.eu.bank.example", ".eu.bank.example", Mode::Verify, true),
        ("eu.bank.example", ".example", Mode::Encrypt, false),
        ("plain.example", "plain.example", Mode::None, false),
        ("example", "other", Mode::Opportunistic, false),
        ("elsewhere.org", "other", Mode::Opportunistic, false),
        ("notexample", "other", Mode::Opportunistic, false),
    ];
    for (domain, label, mode, relaxed) in table {
        let applied = p.lookup(domain, now);
        assert_eq!(applied.label, label, "{domain}");
        assert_eq!(applied.mode, mode, "{domain}");
        assert_eq!(applied.relaxed, relaxed, "{domain}");
    }
}

/// Change control: every entry whose mode or relaxation differs, added and removed ones too.
#[test]
fn changes_between_configurations_table() {
    let old = policy();
    let mut new = policy();
    new.default = Mode::Encrypt;
    new.domains.retain(|d| d.domain != "plain.example");
    new.domains[1].mode = Mode::Encrypt; // bank.example: verify -> encrypt
    new.domains[2].relax_until = Some(3_000); // relaxation moved
    new.domains
        .push(entry("new.example", Mode::Verify, Some(9)));
    let change = |domain: &str, from, to, relax_from, relax_to| PolicyChange {
        domain: domain.into(),
        from,
        to,
        relax_from,
        relax_to,
    };
    assert_eq!(
        new.changes_from(&old),
        [
            change(
                ".eu.bank.example",
                Some(Mode::Verify),
                Some(Mode::Verify),
                Some(2_000),
                Some(3_000)
            ),
            change(
                "bank.example",
                Some(Mode::Verify),
                Some(Mode::Encrypt),
                None,
                None
            ),
            change(
                "default",
                Some(Mode::Opportunistic),
                Some(Mode::Encrypt),
                None,
                None
            ),
            change("new.example", None, Some(Mode::Verify), None, Some(9)),
            change("plain.example", Some(Mode::None), None, None, None),
        ]
    );
    assert!(old.changes_from(&policy()).is_empty());
}

#[test]
fn relaxation_expires_by_itself() {
    let p = policy();
    assert!(p.lookup("a.eu.bank.example", 1_999).relaxed);
    assert!(!p.lookup("a.eu.bank.example", 2_000).relaxed);
    assert!(!p.lookup("a.eu.bank.example", 3_000).relaxed);
}

#[test]
fn decide_table() {
    use CertVerdict as V;
    use Decision as D;
    use Mode as M;
    let proceed = D::Proceed { relaxed: None };
    let retry = D::RetryPlain { relaxed: None };
    let refused = Offer::Refused("454 4.7.0 TLS not available".into());
    let failed = Offer::HandshakeFailed("alert".into());
    // STARTTLS answered 421/221: the channel is closing (RFC 5321 §3.8).
    let closed = Offer::Closed("421 4.3.2 shutting down".into());
    let table: Vec<(Mode, bool, Offer, Decision)> = vec![
        (M::Opportunistic, false, Offer::NotOffered, proceed.clone()),
        (M::Opportunistic, false, closed.clone(), retry.clone()),
        (
            M::Encrypt,
            false,
            closed.clone(),
            D::Refuse(TlsFailure::Refused("421 4.3.2 shutting down".into())),
        ),
        (
            M::Verify,
            true,
            closed.clone(),
            D::RetryPlain {
                relaxed: Some(TlsFailure::Refused("421 4.3.2 shutting down".into())),
            },
        ),
        (M::Opportunistic, false, refused.clone(), proceed.clone()),
        (M::Opportunistic, false, Offer::Injected, retry.clone()),
        (M::Opportunistic, false, failed.clone(), retry.clone()),
        (
            M::Opportunistic,
            false,
            Offer::Tls(V::Untrusted),
            proceed.clone(),
        ),
        (
            M::Encrypt,
            false,
            Offer::NotOffered,
            D::Refuse(TlsFailure::NotOffered),
        ),
        (
            M::Encrypt,
            false,
            refused.clone(),
            D::Refuse(TlsFailure::Refused("454 4.7.0 TLS not available".into())),
        ),
        (
            M::Encrypt,
            false,
            Offer::Injected,
            D::Refuse(TlsFailure::Injected),
        ),
        (
            M::Encrypt,
            false,
            failed.clone(),
            D::Refuse(TlsFailure::Handshake("alert".into())),
        ),
        (M::Encrypt, false, Offer::Tls(V::Untrusted), proceed.clone()),
        (
            M::Encrypt,
            false,
            Offer::Tls(V::NameMismatch),
            proceed.clone(),
        ),
        (
            M::Verify,
            false,
            Offer::Tls(V::verified_for_tests()),
            proceed.clone(),
        ),
        (
            M::Verify,
            false,
            Offer::Tls(V::NameMismatch),
            D::Refuse(TlsFailure::Certificate(V::NameMismatch)),
        ),
        (
            M::Verify,
            false,
            Offer::Tls(V::Untrusted),
            D::Refuse(TlsFailure::Certificate(V::Untrusted)),
        ),
        (
            M::Verify,
            false,
            Offer::NotOffered,
            D::Refuse(TlsFailure::NotOffered),
        ),
        (
            M::Verify,
            true,
            Offer::Tls(V::Untrusted),
            D::Proceed {
                relaxed: Some(TlsFailure::Certificate(V::Untrusted)),
            },
        ),
        (
            M::Verify,
            true,
            Offer::NotOffered,
            D::Proceed {
                relaxed: Some(TlsFailure::NotOffered),
            },
        ),
        (
            M::Encrypt,
            true,
            failed.clone(),
            D::RetryPlain {
                relaxed: Some(TlsFailure::Handshake("alert".into())),
            },
        ),
        (
            M::Verify,
            true,
            Offer::Tls(V::verified_for_tests()),
            proceed.clone(),
        ),
    ];
    for (mode, relaxed, offer, expected) in table {
        assert_eq!(
            decide(mode, relaxed, &offer),
            expected,
            "{mode} relaxed={relaxed} {offer:?}"
        );
    }
}

/// Certificates for the verdict table: a CA, leaves it signs, a self-signed one, an expired one.
mod verdicts {
    use crate::tls::{CertVerdict, TrustAnchors};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::time::Duration;

    fn params(names: &[&str], expired: bool) -> CertificateParams {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        if expired {
            p.not_before = now - Duration::from_secs(10 * 86_400);
            p.not_after = now - Duration::from_secs(86_400);
        } else {
            p.not_before = now - Duration::from_secs(86_400);
            p.not_after = now + Duration::from_secs(86_400);
        }
        p
    }

    #[test]
    fn verdict_table() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // rcgen's default subject is the same for every certificate: a self-signed leaf would
        // then name the CA as issuer and fail as a bad signature, not as untrusted.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Verdict Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_cert.der().to_vec()))
            .unwrap();
        let anchors = TrustAnchors::from_roots("test".into(), roots);
        let signed = |names: &[&str], expired: bool| {
            let key = KeyPair::generate().unwrap();
            let cert = params(names, expired).signed_by(&key, &issuer).unwrap();
            CertificateDer::from(cert.der().to_vec())
        };
        let self_signed = {
            let key = KeyPair::generate().unwrap();
            let cert = params(&["mx.bank.example"], false)
                .self_signed(&key)
                .unwrap();
            CertificateDer::from(cert.der().to_vec())
        };
        let host = ServerName::try_from("mx.bank.example").unwrap();
        let table: Vec<(CertificateDer, Vec<String>, CertVerdict)> = vec![
            (
                signed(&["mx.bank.example"], false),
                vec![],
                CertVerdict::verified_for_tests(),
            ),
            (
                signed(&["other.example"], false),
                vec![],
                CertVerdict::NameMismatch,
            ),
            (
                signed(&["mail.bank.example"], false),
                vec!["mail.bank.example".into()],
                CertVerdict::verified_for_tests(),
            ),
            (
                signed(&["*.bank.example"], false),
                vec![],
                CertVerdict::verified_for_tests(),
            ),
            (self_signed, vec![], CertVerdict::Untrusted),
            (
                signed(&["mx.bank.example"], true),
                vec![],
                CertVerdict::Expired,
            ),
        ];
        for (i, (cert, names, expected)) in table.into_iter().enumerate() {
            let got = anchors.verdict(&cert, &[], &host, &names, UnixTime::now());
            assert_eq!(got, expected, "row {i}");
        }
        // No trust anchors at all: nothing can be verified.
        let empty = TrustAnchors::from_roots("empty".into(), rustls::RootCertStore::empty());
        let cert = signed(&["mx.bank.example"], false);
        assert_eq!(
            empty.verdict(&cert, &[], &host, &[], UnixTime::now()),
            CertVerdict::Untrusted
        );
    }
}

#[test]
fn dane_modes_judge_as_opportunistic_until_discovery_and_tlsa_makes_verify() {
    use dane::{SecureTlsa, Tlsa};
    let mut p = policy();
    p.default = Mode::Dane;
    let applied = p.lookup("elsewhere.test", 0);
    assert_eq!((applied.mode, applied.source), (Mode::Dane, Source::None));
    // No TLSA, no MTA-STS: a `dane` domain is delivered as opportunistic.
    for offer in [Offer::NotOffered, Offer::Tls(CertVerdict::Untrusted)] {
        assert_eq!(
            decide(Mode::Dane, false, &offer),
            Decision::Proceed { relaxed: None }
        );
    }
    let ee = Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    };
    let usable = applied
        .clone()
        .under_dane(&SecureTlsa::new(vec![ee.clone()]));
    assert_eq!(
        (usable.mode, usable.source, usable.policy_type),
        (Mode::Verify, Source::Dane, PolicyType::Tlsa)
    );
    assert_eq!(usable.tlsa.as_deref(), Some(&vec![ee]));
    assert_eq!(
        usable.policy_strings,
        vec![format!("3 1 1 {}", "07".repeat(32))]
    );
    assert_eq!(
        decide(usable.mode, false, &Offer::Tls(CertVerdict::DaneNoMatch)),
        Decision::Refuse(TlsFailure::Certificate(CertVerdict::DaneNoMatch))
    );
    // PKIX usages only: TLS without authentication (RFC 7672 §2.2).
    let pkix = Tlsa {
        usage: 1,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    };
    let unusable = applied.under_dane(&SecureTlsa::new(vec![pkix]));
    assert_eq!(
        (unusable.mode, unusable.tlsa_found),
        (Mode::Encrypt, Some("unusable"))
    );
    assert!(unusable.tlsa.is_none());
    assert!(matches!(
        decide(unusable.mode, false, &Offer::NotOffered),
        Decision::Refuse(_)
    ));
}
