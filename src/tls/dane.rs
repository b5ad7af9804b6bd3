//! The DANE verifier for an MX host with a secure, usable TLSA RRset (RFC 7672 §3): DANE-EE
//! matches the server's own certificate or key (no name or date checks, RFC 7672 §3.1.1);
//! DANE-TA anchors the chain at the presented certificate a record names and checks the chain,
//! its dates and the MX host name from there (RFC 7672 §3.1.2, §3.2.2). Like the WebPKI
//! recorder, it lets the handshake finish and records its verdict for the policy to judge; the
//! handshake signatures are still checked, so the peer must hold the key it shows.

use crate::policy::dane::{match_end_entity, trust_anchor_candidates, DaneMatch, Tlsa};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::sync::{Arc, Mutex};

/// What DANE made of a presented chain. `Matched` holds the proof only this module makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneVerdict {
    Matched(DaneMatch),
    /// No record matched any presented certificate.
    NoMatch,
    /// A DANE-TA record matched, but the chain from it does not name the MX host.
    NameMismatch,
    /// A DANE-TA record matched, but a certificate of the chain is expired or not yet valid.
    Expired,
    /// A DANE-TA record matched, but the chain from it does not verify.
    Invalid,
}

impl DaneVerdict {
    pub fn is_matched(&self) -> bool {
        matches!(self, DaneVerdict::Matched(_))
    }

    /// What the policy judges: a match is the proof of verification, the failures keep the
    /// certificate result types a TLS report tells apart.
    pub fn cert_verdict(&self) -> super::CertVerdict {
        use super::CertVerdict;
        match self {
            DaneVerdict::Matched(_) => CertVerdict::Verified(super::Verified(())),
            DaneVerdict::NoMatch => CertVerdict::DaneNoMatch,
            DaneVerdict::NameMismatch => CertVerdict::NameMismatch,
            DaneVerdict::Expired => CertVerdict::Expired,
            DaneVerdict::Invalid => CertVerdict::Invalid,
        }
    }

    /// The log's `verdict` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            DaneVerdict::Matched(m) if m.usage == crate::policy::dane::Usage::EndEntity => {
                "dane_ee"
            }
            DaneVerdict::Matched(_) => "dane_ta",
            DaneVerdict::NoMatch => "dane_no_match",
            DaneVerdict::NameMismatch => "dane_name_mismatch",
            DaneVerdict::Expired => "dane_expired",
            DaneVerdict::Invalid => "dane_invalid",
        }
    }
}

/// Judges the chain `end_entity` + `intermediates` against `records` for `host` (the MX host
/// name, the TLSA base domain).
pub fn verify(
    records: &[Tlsa],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    host: &ServerName<'_>,
    now: UnixTime,
    provider: &Arc<CryptoProvider>,
) -> DaneVerdict {
    let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
        .chain(intermediates.iter().map(|c| c.as_ref()))
        .collect();
    if let Some(m) = match_end_entity(records, &chain) {
        return DaneVerdict::Matched(m);
    }
    let mut verdict = DaneVerdict::NoMatch;
    for candidate in trust_anchor_candidates(records, &chain) {
        // A TA record naming the server's own certificate anchors nothing above it.
        if candidate.depth == 0 {
            continue;
        }
        let mut roots = rustls::RootCertStore::empty();
        if roots
            .add(CertificateDer::from(chain[candidate.depth].to_vec()))
            .is_err()
        {
            verdict = DaneVerdict::Invalid;
            continue;
        }
        let Ok(webpki) =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
        else {
            verdict = DaneVerdict::Invalid;
            continue;
        };
        let below = &intermediates[..candidate.depth - 1];
        match webpki.verify_server_cert(end_entity, below, host, &[], now) {
            Ok(_) => return DaneVerdict::Matched(candidate),
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => verdict = DaneVerdict::NameMismatch,
            Err(Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => verdict = DaneVerdict::Expired,
            Err(_) => verdict = DaneVerdict::Invalid,
        }
    }
    verdict
}

/// A rustls verifier that records [`verify`]'s verdict and lets the handshake finish.
#[derive(Debug)]
pub struct DaneRecorder {
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
    signatures: crate::tls::HandshakeSignatures,
    verdict: Mutex<Option<DaneVerdict>>,
}

impl DaneRecorder {
    pub fn new(records: Vec<Tlsa>) -> Arc<DaneRecorder> {
        let provider = crate::tls::provider();
        Arc::new(DaneRecorder {
            records,
            signatures: crate::tls::HandshakeSignatures(provider.clone()),
            provider,
            verdict: Mutex::new(None),
        })
    }

    /// The verdict on the chain the server sent (`None`: the handshake never got that far).
    pub fn verdict(&self) -> Option<DaneVerdict> {
        self.verdict
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl ServerCertVerifier for DaneRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict = verify(
            &self.records,
            end_entity,
            intermediates,
            server_name,
            now,
            &self.provider,
        );
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

#[cfg(test)]
#[path = "dane_tests.rs"]
mod tests;
