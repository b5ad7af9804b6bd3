use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};

/// A CA and a leaf it signed, as DER, with the leaf's and the CA's SPKI.
struct Chain {
    leaf: Vec<u8>,
    ca: Vec<u8>,
    leaf_spki: Vec<u8>,
    ca_spki: Vec<u8>,
}

fn chain() -> Chain {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "DANE Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_spki = ca_key.subject_public_key_info();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["mx.dane.example".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Chain {
        leaf: leaf.der().to_vec(),
        ca: ca.der().to_vec(),
        leaf_spki: leaf_key.subject_public_key_info(),
        ca_spki,
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

fn sha512(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA512, b).as_ref().to_vec()
}

fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

#[test]
fn spki_is_the_subject_public_key_info() {
    let c = chain();
    assert_eq!(spki(&c.leaf), Some(c.leaf_spki.as_slice()));
    assert_eq!(spki(&c.ca), Some(c.ca_spki.as_slice()));
    assert_eq!(spki(b"not a certificate"), None);
}

#[test]
fn end_entity_records_table() {
    let c = chain();
    let presented: [&[u8]; 2] = [&c.leaf, &c.ca];
    let table = [
        (tlsa(3, 0, 0, c.leaf.clone()), true),
        (tlsa(3, 0, 1, sha256(&c.leaf)), true),
        (tlsa(3, 0, 2, sha512(&c.leaf)), true),
        (tlsa(3, 1, 0, c.leaf_spki.clone()), true),
        (tlsa(3, 1, 1, sha256(&c.leaf_spki)), true),
        (tlsa(3, 1, 2, sha512(&c.leaf_spki)), true),
        // The CA's key is not the server's: DANE-EE looks at the leaf only.
        (tlsa(3, 1, 1, sha256(&c.ca_spki)), false),
        (tlsa(3, 1, 1, vec![0; 32]), false),
        // Selector and matching type must agree with the data.
        (tlsa(3, 0, 1, sha256(&c.leaf_spki)), false),
        (tlsa(3, 1, 2, sha256(&c.leaf_spki)), false),
    ];
    for (record, matches) in table {
        let label = record.label();
        let found = match_end_entity(&[record], &presented);
        assert_eq!(found.is_some(), matches, "{label}");
        if let Some(m) = found {
            assert_eq!((m.usage, m.depth, m.record), (Usage::EndEntity, 0, label));
        }
    }
    assert_eq!(
        match_end_entity(&[tlsa(3, 0, 0, c.leaf.clone())], &[]),
        None
    );
}

#[test]
fn trust_anchor_records_find_the_chain_certificate() {
    let c = chain();
    let presented: [&[u8]; 2] = [&c.leaf, &c.ca];
    for record in [
        tlsa(2, 1, 1, sha256(&c.ca_spki)),
        tlsa(2, 0, 1, sha256(&c.ca)),
        tlsa(2, 0, 2, sha512(&c.ca)),
        tlsa(2, 1, 0, c.ca_spki.clone()),
    ] {
        let found = trust_anchor_candidates(std::slice::from_ref(&record), &presented);
        assert_eq!(found.len(), 1, "{}", record.label());
        assert_eq!((found[0].usage, found[0].depth), (Usage::TrustAnchor, 1));
    }
    // A TA record naming the leaf's key makes the leaf a (self-anchored) candidate.
    let leaf_ta = trust_anchor_candidates(&[tlsa(2, 1, 1, sha256(&c.leaf_spki))], &presented);
    assert_eq!(leaf_ta.len(), 1);
    assert_eq!(leaf_ta[0].depth, 0);
    // The CA not sent in the chain: nothing to anchor to.
    assert!(trust_anchor_candidates(&[tlsa(2, 1, 1, sha256(&c.ca_spki))], &[&c.leaf]).is_empty());
    // DANE-EE records are not trust anchors, nor the reverse.
    assert!(trust_anchor_candidates(&[tlsa(3, 1, 1, sha256(&c.ca_spki))], &presented).is_empty());
    assert!(match_end_entity(&[tlsa(2, 1, 1, sha256(&c.leaf_spki))], &presented).is_none());
}

#[test]
fn only_dane_usages_with_well_formed_data_are_usable() {
    let good = tlsa(3, 1, 1, vec![7; 32]);
    let unusable = [
        tlsa(0, 1, 1, vec![7; 32]),
        tlsa(1, 1, 1, vec![7; 32]),
        tlsa(4, 1, 1, vec![7; 32]),
        tlsa(3, 2, 1, vec![7; 32]),
        tlsa(3, 1, 3, vec![7; 32]),
        tlsa(3, 1, 1, vec![7; 31]),
        tlsa(3, 1, 2, vec![7; 32]),
        tlsa(3, 0, 0, vec![]),
        tlsa(255, 255, 255, vec![]),
    ];
    assert_eq!(classify(unusable.to_vec()), TlsaSet::Unusable);
    let mut mixed = unusable.to_vec();
    mixed.push(good.clone());
    assert_eq!(classify(mixed), TlsaSet::Usable(vec![good]));
}

#[test]
fn rdata_needs_three_octets_before_the_data() {
    assert_eq!(Tlsa::from_rdata(&[3, 1]), None);
    assert_eq!(Tlsa::from_rdata(&[3, 1, 1]), Some(tlsa(3, 1, 1, vec![])));
    assert_eq!(
        Tlsa::from_rdata(&[2, 0, 1, 0xab, 0xcd]),
        Some(tlsa(2, 0, 1, vec![0xab, 0xcd]))
    );
}
