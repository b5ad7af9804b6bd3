//! DANE's record handling (RFC 6698, RFC 7671, RFC 7672 §3): TLSA RDATA as a name server could
//! send it, classified and matched against certificate "chains" of arbitrary bytes:
//! - never a panic, whatever the record or the certificates;
//! - a record that reads back has the RDATA's fields; unusable records (PKIX usages, unknown
//!   selector or matching type, a digest of the wrong length) are never kept as usable;
//! - a `3 0 1` record made from the server's certificate always matches it (DANE-EE by digest),
//!   and `3 0 0` with the certificate itself too.

#![no_main]

use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use starttls_proxy::policy::dane::{
    classify, match_end_entity, trust_anchor_candidates, SecureTlsa, Tlsa, TlsaSet,
};

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    let records: Vec<Tlsa> = (0..input.byte() % 4)
        .filter_map(|_| {
            let n = usize::from(input.byte()) + 3;
            let rdata = input.take(n);
            let t = Tlsa::from_rdata(rdata)?;
            assert_eq!((t.usage, t.selector, t.matching), (rdata[0], rdata[1], rdata[2]));
            assert_eq!(t.data, &rdata[3..]);
            Some(t)
        })
        .collect();
    let chain_bytes = input.rest();
    let chain: Vec<&[u8]> = chain_bytes.split(|&b| b == 0).collect();

    let _ = match_end_entity(&records, &chain);
    for candidate in trust_anchor_candidates(&records, &chain) {
        assert!(candidate.depth < chain.len());
    }
    let shown = SecureTlsa::new(records.clone());
    assert_eq!(shown.strings.len(), records.len());
    if let TlsaSet::Usable(kept) = classify(records) {
        for t in &kept {
            assert!(matches!(t.usage, 2 | 3) && t.selector <= 1, "{t:?}");
            match t.matching {
                0 => assert!(!t.data.is_empty()),
                1 => assert_eq!(t.data.len(), 32),
                2 => assert_eq!(t.data.len(), 64),
                other => panic!("matching type {other} kept"),
            }
        }
    }

    let leaf = chain[0];
    if !leaf.is_empty() {
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
        let by_digest = Tlsa {
            usage: 3,
            selector: 0,
            matching: 1,
            data: digest.as_ref().to_vec(),
        };
        let exact = Tlsa {
            usage: 3,
            selector: 0,
            matching: 0,
            data: leaf.to_vec(),
        };
        for record in [by_digest, exact] {
            let m = match_end_entity(std::slice::from_ref(&record), &chain);
            assert!(m.is_some_and(|m| m.depth == 0), "{record:?}");
        }
    }
});
