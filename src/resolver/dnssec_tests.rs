use super::*;
use hickory_resolver::net::NoRecords;
use hickory_resolver::proto::op::{Message, OpCode};
use hickory_resolver::proto::rr::rdata::{A, CNAME, SOA, TLSA as HickoryTlsa};
use std::net::Ipv4Addr;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn record(owner: &str, data: RData, proof: Proof) -> Record {
    let mut r = Record::from_rdata(name(owner), 300, data);
    r.proof = proof;
    r
}

fn a(owner: &str, proof: Proof) -> Record {
    record(owner, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))), proof)
}

fn soa(proof: Proof) -> Record {
    let data = SOA::new(name("ns.test."), name("h.test."), 1, 3600, 600, 86400, 300);
    record("test.", RData::SOA(data), proof)
}

fn response(code: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> DnsResponse {
    let mut m = Message::response(1, OpCode::Query);
    m.metadata.response_code = code;
    m.add_query(Query::query(name("x.test."), RecordType::A));
    for r in answers {
        m.add_answer(r);
    }
    for r in authorities {
        m.add_authority(r);
    }
    DnsResponse::from_message(m).unwrap()
}

fn query() -> Query {
    Query::query(name("x.test."), RecordType::A)
}

fn verdict(result: Result<DnsResponse, NetError>) -> &'static str {
    match judge(&query(), result) {
        Validated::Secure(_) => "secure",
        Validated::Insecure(_) => "insecure",
        Validated::SecureDenial(Denial::NoSuchName) => "secure nxdomain",
        Validated::SecureDenial(Denial::NoRecords) => "secure nodata",
        Validated::InsecureDenial(Denial::NoSuchName) => "insecure nxdomain",
        Validated::InsecureDenial(Denial::NoRecords) => "insecure nodata",
        Validated::Bogus(_) => "bogus",
        Validated::Error(_) => "error",
    }
}

#[test]
fn answers_are_judged_by_their_weakest_record() {
    use Proof::*;
    use ResponseCode::*;
    let cname = |proof| {
        let data = RData::CNAME(CNAME(name("y.test.")));
        record("x.test.", data, proof)
    };
    let table: Vec<(Vec<Record>, &str)> = vec![
        (vec![a("x.test.", Secure)], "secure"),
        (vec![a("x.test.", Secure), a("x.test.", Secure)], "secure"),
        (vec![a("x.test.", Insecure)], "insecure"),
        (vec![a("x.test.", Secure), a("x.test.", Bogus)], "bogus"),
        (vec![a("x.test.", Indeterminate)], "error"),
        // The CNAME on the way counts as much as the target's records.
        (vec![cname(Bogus), a("y.test.", Secure)], "bogus"),
        (vec![cname(Insecure), a("y.test.", Secure)], "insecure"),
        (vec![cname(Secure), a("y.test.", Secure)], "secure"),
    ];
    for (answers, expected) in table {
        let got = verdict(Ok(response(NoError, answers.clone(), vec![])));
        assert_eq!(got, expected, "{answers:?}");
    }
}

#[test]
fn denials_are_judged_by_their_authority_records() {
    use Proof::*;
    use ResponseCode::*;
    let table = [
        (NXDomain, vec![soa(Secure)], "secure nxdomain"),
        (NoError, vec![soa(Secure)], "secure nodata"),
        (NXDomain, vec![soa(Insecure)], "insecure nxdomain"),
        (NoError, vec![], "insecure nodata"),
        (NoError, vec![soa(Bogus)], "bogus"),
        (ServFail, vec![], "error"),
    ];
    for (code, authorities, expected) in table {
        let got = verdict(Ok(response(code, vec![], authorities.clone())));
        assert_eq!(got, expected, "{code} {authorities:?}");
    }
}

#[test]
fn errors_keep_bogus_apart_from_failure() {
    use ResponseCode::*;
    // (`DnsError::Nsec` is non-exhaustive: its cases are proven against Knot in tests/dnssec.rs.)
    assert_eq!(
        verdict(Err(NetError::Dns(HickoryDnsError::DnssecBogus))),
        "bogus"
    );
    let servfail = Err(NetError::Dns(HickoryDnsError::ResponseCode(ServFail)));
    assert_eq!(verdict(servfail), "error");
    assert_eq!(verdict(Err(NetError::Timeout)), "error");
    // A denial that never went through validation is no proof of anything.
    let unvalidated = Err(NetError::Dns(HickoryDnsError::NoRecordsFound(
        NoRecords::new(query(), NXDomain),
    )));
    assert_eq!(verdict(unvalidated), "error");
}

#[test]
fn tlsa_rdata_becomes_plain_values() {
    let data = HickoryTlsa::new(3.into(), 1.into(), 1.into(), vec![0xab; 32]);
    let record = record("_25._tcp.mx.test.", RData::TLSA(data), Proof::Secure);
    let Validated::Secure(records) = judge(
        &Query::query(name("_25._tcp.mx.test."), RecordType::TLSA),
        Ok(response(ResponseCode::NoError, vec![record], vec![])),
    ) else {
        panic!("not secure");
    };
    let RData::TLSA(t) = &records[0].data else {
        panic!("not TLSA");
    };
    let plain = Tlsa {
        usage: t.cert_usage.into(),
        selector: t.selector.into(),
        matching: t.matching.into(),
        data: t.cert_data.clone(),
    };
    assert_eq!(
        plain,
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32]
        }
    );
}

#[test]
fn address_families_are_judged_together() {
    use Validated::*;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let v4 = || Secure(vec![ip("192.0.2.1")]);
    type Addrs = Validated<Vec<IpAddr>>;
    let table: Vec<(Addrs, Addrs, &str)> = vec![
        (v4(), SecureDenial(Denial::NoRecords), "secure"),
        (v4(), Secure(vec![ip("2001:db8::1")]), "secure"),
        (v4(), InsecureDenial(Denial::NoRecords), "insecure"),
        (v4(), Bogus("aaaa".into()), "bogus"),
        (Error("a".into()), Bogus("aaaa".into()), "bogus"),
        (v4(), Error("timeout".into()), "error"),
        (
            SecureDenial(Denial::NoSuchName),
            SecureDenial(Denial::NoSuchName),
            "secure",
        ),
        (
            SecureDenial(Denial::NoRecords),
            InsecureDenial(Denial::NoRecords),
            "insecure",
        ),
    ];
    for (a, aaaa, expected) in table {
        let got = combine(a.clone(), aaaa.clone());
        assert_eq!(got.result(), expected, "{a:?} + {aaaa:?}");
    }
    assert_eq!(
        combine(v4(), Secure(vec![ip("2001:db8::1")])),
        Secure(vec![ip("192.0.2.1"), ip("2001:db8::1")])
    );
    assert_eq!(
        combine(
            SecureDenial(Denial::NoSuchName),
            SecureDenial(Denial::NoSuchName)
        ),
        SecureDenial(Denial::NoSuchName)
    );
}

#[test]
fn trust_anchor_zones_are_the_dnskey_owners() {
    let text = "; a comment DNSKEY\n\
                test. 300 IN DNSKEY 257 3 13 AAAA\n\
                test 300 IN DNSKEY 257 3 13 BBBB ; second key, same zone\n\
                . 172800 IN DNSKEY 257 3 8 CCCC\n\
                example.org. 300 IN DS 1 13 2 DDDD\n";
    let zones = anchor_zones(text).unwrap();
    assert_eq!(zones, vec![name("test."), name(".")]);
    assert!(anchor_zones("; nothing\n").is_err());
}

#[test]
fn metric_labels_follow_the_proof() {
    let labels: Vec<&str> = [
        Validated::Secure(()),
        Validated::SecureDenial(Denial::NoSuchName),
        Validated::Insecure(()),
        Validated::InsecureDenial(Denial::NoRecords),
        Validated::Bogus(String::new()),
        Validated::Error(String::new()),
    ]
    .iter()
    .map(Validated::result)
    .collect();
    assert_eq!(
        labels,
        ["secure", "secure", "insecure", "insecure", "bogus", "error"]
    );
}
