use super::*;
use crate::policy::dane::Usage;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};
use ring::digest;
use std::time::Duration;

struct Pki {
    ca: CertificateDer<'static>,
    ca_spki: Vec<u8>,
    leaf: CertificateDer<'static>,
    leaf_spki: Vec<u8>,
    expired_leaf: CertificateDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "DANE-TA Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_spki = ca_key.subject_public_key_info();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["mx.dane.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let old_key = KeyPair::generate().unwrap();
    let mut old = CertificateParams::new(vec!["mx.dane.test".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    old.not_before = now - Duration::from_secs(10 * 86_400);
    old.not_after = now - Duration::from_secs(86_400);
    let expired_leaf = old.signed_by(&old_key, &issuer).unwrap();
    Pki {
        ca: CertificateDer::from(ca.der().to_vec()),
        ca_spki,
        leaf: CertificateDer::from(leaf.der().to_vec()),
        leaf_spki: leaf_key.subject_public_key_info(),
        expired_leaf: CertificateDer::from(expired_leaf.der().to_vec()),
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

fn tlsa(usage: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector: 1,
        matching: 1,
        data,
    }
}

fn judge(
    records: &[Tlsa],
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    host: &str,
) -> DaneVerdict {
    let host = ServerName::try_from(host.to_string()).unwrap();
    verify(
        records,
        leaf,
        chain,
        &host,
        UnixTime::now(),
        &crate::tls::provider(),
    )
}

#[test]
fn dane_ee_matches_the_key_whatever_the_name_or_dates() {
    let p = pki();
    let ee = [tlsa(3, sha256(&p.leaf_spki))];
    let got = judge(&ee, &p.leaf, &[], "another-name.test");
    assert!(
        matches!(&got, DaneVerdict::Matched(m) if m.usage == Usage::EndEntity && m.depth == 0),
        "{got:?}"
    );
    assert_eq!(got.as_str(), "dane_ee");
    assert_eq!(
        judge(&[tlsa(3, vec![0; 32])], &p.leaf, &[], "mx.dane.test"),
        DaneVerdict::NoMatch
    );
}

#[test]
fn dane_ta_checks_chain_name_and_dates_from_the_matched_anchor() {
    let p = pki();
    let ta = [tlsa(2, sha256(&p.ca_spki))];
    let chain = [p.ca.clone()];
    let got = judge(&ta, &p.leaf, &chain, "mx.dane.test");
    assert!(
        matches!(&got, DaneVerdict::Matched(m) if m.usage == Usage::TrustAnchor && m.depth == 1),
        "{got:?}"
    );
    assert_eq!(got.as_str(), "dane_ta");
    assert_eq!(
        judge(&ta, &p.leaf, &chain, "mx.other.test"),
        DaneVerdict::NameMismatch
    );
    assert_eq!(
        judge(&ta, &p.expired_leaf, &chain, "mx.dane.test"),
        DaneVerdict::Expired
    );
    // The anchor must be in the chain the server sends (RFC 7672 §3.1.2).
    assert_eq!(
        judge(&ta, &p.leaf, &[], "mx.dane.test"),
        DaneVerdict::NoMatch
    );
    // A TA record naming the leaf anchors nothing above it.
    assert_eq!(
        judge(
            &[tlsa(2, sha256(&p.leaf_spki))],
            &p.leaf,
            &chain,
            "mx.dane.test"
        ),
        DaneVerdict::NoMatch
    );
}

#[test]
fn an_expired_leaf_still_matches_dane_ee() {
    let p = pki();
    let spki = crate::policy::dane::Tlsa {
        usage: 3,
        selector: 0,
        matching: 1,
        data: sha256(p.expired_leaf.as_ref()),
    };
    assert!(judge(&[spki], &p.expired_leaf, &[], "mx.dane.test").is_matched());
}
