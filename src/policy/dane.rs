//! DANE for SMTP as data (RFC 7672, with RFC 6698/7671's record rules): which TLSA records an
//! SMTP client may use, and whether a presented certificate matches one. Pure: the TLSA lookup
//! and its DNSSEC proof happen before, the chain and name check of DANE-TA in the verifier
//! (`tls`), which calls [`match_end_entity`] and [`trust_anchor_candidates`].

use ring::digest;

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl From<crate::resolver::dnssec::Tlsa> for Tlsa {
    fn from(t: crate::resolver::dnssec::Tlsa) -> Tlsa {
        Tlsa {
            usage: t.usage,
            selector: t.selector,
            matching: t.matching,
            data: t.data,
        }
    }
}

/// RFC 7672 §3.1: the two certificate usages an SMTP client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// DANE-TA(2): a certificate of the chain is the trust anchor; chain and name are checked.
    TrustAnchor,
    /// DANE-EE(3): the server's own certificate or key; no name or date checks.
    EndEntity,
}

/// What a secure, non-empty TLSA RRset offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaSet {
    /// At least one record DANE for SMTP can use; the others are dropped.
    Usable(Vec<Tlsa>),
    /// Records exist but none is usable (PKIX usages, unknown selector or matching type, a digest
    /// of the wrong length): RFC 7672 §2.2 still requires TLS, without authentication.
    Unusable,
}

/// A certificate matched a TLSA record: made only by the matchers here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneMatch {
    pub usage: Usage,
    /// Position in the presented chain (0: the server's certificate).
    pub depth: usize,
    /// The record that matched, as `usage selector matching` (for logs and reports).
    pub record: String,
}

impl Tlsa {
    /// RDATA as on the wire: usage, selector, matching type, association data.
    pub fn from_rdata(rdata: &[u8]) -> Option<Tlsa> {
        let (&[usage, selector, matching], data) = rdata.split_first_chunk::<3>()?;
        Some(Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        })
    }

    fn usage(&self) -> Option<Usage> {
        match self.usage {
            2 => Some(Usage::TrustAnchor),
            3 => Some(Usage::EndEntity),
            // PKIX-TA(0) and PKIX-EE(1): RFC 7672 §3.1.3, not for SMTP.
            _ => None,
        }
    }

    /// RFC 7671 §4–5: a record the client can act on.
    fn is_usable(&self) -> bool {
        let data_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        self.usage().is_some() && self.selector <= 1 && data_ok
    }

    /// Whether `cert_der` is the certificate (or holds the key) this record names.
    fn matches(&self, cert_der: &[u8]) -> bool {
        let selected: &[u8] = match self.selector {
            0 => cert_der,
            _ => match spki(cert_der) {
                Some(spki) => spki,
                None => return false,
            },
        };
        match self.matching {
            0 => self.data == selected,
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }

    fn label(&self) -> String {
        format!("{} {} {}", self.usage, self.selector, self.matching)
    }
}

/// A secure, non-empty TLSA RRset of one MX host, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureTlsa {
    pub set: TlsaSet,
    /// Every record in presentation form (`3 1 1 ab12…`): a TLS report's policy strings.
    pub strings: Vec<String>,
}

impl SecureTlsa {
    pub fn new(records: Vec<Tlsa>) -> SecureTlsa {
        let strings = records.iter().map(Tlsa::presentation).collect();
        SecureTlsa {
            set: classify(records),
            strings,
        }
    }

    /// The log's `tlsa=` field.
    pub fn as_str(&self) -> &'static str {
        match self.set {
            TlsaSet::Usable(_) => "usable",
            TlsaSet::Unusable => "unusable",
        }
    }
}

impl Tlsa {
    /// RFC 6698 §2.2 presentation form, the association data in lowercase hex.
    pub fn presentation(&self) -> String {
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {hex}", self.usage, self.selector, self.matching)
    }
}

/// Sorts a secure, non-empty RRset into usable records or none.
pub fn classify(records: Vec<Tlsa>) -> TlsaSet {
    let usable: Vec<Tlsa> = records.into_iter().filter(Tlsa::is_usable).collect();
    if usable.is_empty() {
        TlsaSet::Unusable
    } else {
        TlsaSet::Usable(usable)
    }
}

/// DANE-EE: the server's certificate (`chain[0]`) matches a `3 x x` record.
pub fn match_end_entity(records: &[Tlsa], chain: &[&[u8]]) -> Option<DaneMatch> {
    let leaf = chain.first()?;
    records
        .iter()
        .find(|r| r.usage() == Some(Usage::EndEntity) && r.matches(leaf))
        .map(|r| DaneMatch {
            usage: Usage::EndEntity,
            depth: 0,
            record: r.label(),
        })
}

/// DANE-TA: chain certificates that match a `2 x x` record, nearest the server first. Each is a
/// candidate anchor; the verifier must still build the chain from it and check the name.
pub fn trust_anchor_candidates(records: &[Tlsa], chain: &[&[u8]]) -> Vec<DaneMatch> {
    let mut found = Vec::new();
    for (depth, cert) in chain.iter().enumerate() {
        if let Some(r) = records
            .iter()
            .find(|r| r.usage() == Some(Usage::TrustAnchor) && r.matches(cert))
        {
            found.push(DaneMatch {
                usage: Usage::TrustAnchor,
                depth,
                record: r.label(),
            });
        }
    }
    found
}

/// The DER SubjectPublicKeyInfo inside a certificate (selector 1).
fn spki(cert_der: &[u8]) -> Option<&[u8]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw)
}

#[cfg(test)]
#[path = "dane_tests.rs"]
mod tests;
