//! STARTTLS towards an MX host, with the client side's hygiene: bytes the host sends after its
//! `220` and before the handshake abort the attempt (response injection, CVE-2011-0411 class),
//! SNI is the MX host name, and the certificate's verdict is recorded for the policy.

use super::connect::{summary, MxConn, MxPeer, MxStream};
use super::Context;
use crate::log;
use crate::policy::{Applied, Offer};
use crate::session::TlsFacts;
use crate::smtp::LineReader;
use crate::tls;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// What one attempt came to: the offer for the policy verdict, the connection if it is still
/// usable (TLS up, or plaintext after STARTTLS was not offered or refused), and the TLS facts.
pub struct Attempt {
    /// Who it was with, whatever became of the connection.
    pub peer: MxPeer,
    pub offer: Offer,
    pub conn: Option<MxConn>,
    pub facts: Option<TlsFacts>,
    /// The certificate chain the host presented (transparent mode re-verifies it per domain).
    pub chain: Vec<CertificateDer<'static>>,
}

impl Attempt {
    fn failed(peer: MxPeer, offer: Offer) -> Attempt {
        Attempt {
            peer,
            offer,
            conn: None,
            facts: None,
            chain: Vec::new(),
        }
    }
}

pub async fn attempt(ctx: &Context, mut conn: MxConn, applied: &Applied, id: &str) -> Attempt {
    let peer = conn.peer();
    if !conn.offers("STARTTLS") {
        return Attempt {
            peer,
            offer: Offer::NotOffered,
            conn: Some(conn),
            facts: None,
            chain: Vec::new(),
        };
    }
    let reply = match conn.command(ctx, b"STARTTLS").await {
        Ok(r) => r,
        Err(e) => return Attempt::failed(peer, Offer::HandshakeFailed(e)),
    };
    if matches!(reply.code, 421 | 221) {
        // RFC 5321 §3.8, §4.2.2: the host is closing the channel. Nothing more may be sent on
        // it (not even QUIT); plaintext, where policy allows, needs a fresh connection.
        log::warn("starttls_closing")
            .field("id", id)
            .field("listener", &ctx.listener.name)
            .field("mx", &conn.label)
            .field("reply", summary(&reply))
            .emit();
        return Attempt::failed(peer, Offer::Closed(summary(&reply)));
    }
    if reply.code != 220 {
        return Attempt {
            peer,
            offer: Offer::Refused(summary(&reply)),
            conn: Some(conn),
            facts: None,
            chain: Vec::new(),
        };
    }
    let started = Instant::now();
    if !conn.reader.buffered().is_empty() {
        log::warn("response_injection")
            .field("id", id)
            .field("listener", &ctx.listener.name)
            .field("mx", &conn.label)
            .field("injected_bytes", conn.reader.buffered().len())
            .emit();
        ctx.metrics
            .handshake_failed("response_injection", started.elapsed());
        return Attempt::failed(peer, Offer::Injected);
    }
    let MxConn {
        reader,
        label,
        host,
        addr,
        local,
        greeting,
        ..
    } = conn;
    let (MxStream::Plain(tcp), _) = reader.into_parts() else {
        return Attempt::failed(peer, Offer::HandshakeFailed("TLS already active".into()));
    };
    let server_name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => match ServerName::try_from(host.clone()) {
            Ok(name) => name,
            Err(e) => {
                return Attempt::failed(
                    peer,
                    Offer::HandshakeFailed(format!(
                        "{host} is not usable as a TLS server name: {e}"
                    )),
                )
            }
        },
    };
    let (config, verifier) = match &applied.tlsa {
        Some(records) => {
            let (config, recorder) = tls::dane_client_config(records.as_ref().clone());
            (config, Recorder::Dane(recorder))
        }
        None => {
            let (config, verifier) =
                tls::client_config(applied.trust_anchors.clone(), applied.match_names.clone());
            (config, Recorder::WebPki(verifier))
        }
    };
    let timeout = ctx.config.limits.handshake_timeout;
    let connected = tokio::time::timeout(
        timeout,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await;
    let stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = tls::client_handshake_failure_reason(&e);
            ctx.metrics.handshake_failed(reason, started.elapsed());
            return Attempt::failed(
                peer,
                Offer::HandshakeFailed(format!("handshake failure: {e}")),
            );
        }
        Err(_) => {
            ctx.metrics.handshake_failed("timeout", started.elapsed());
            return Attempt::failed(
                peer,
                Offer::HandshakeFailed(format!("no handshake within {timeout:?}")),
            );
        }
    };
    let connection = stream.get_ref().1;
    let chain: Vec<CertificateDer<'static>> = connection
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default();
    let verdict = verifier.verdict();
    let facts = TlsFacts {
        version: tls::version_name(connection.protocol_version()),
        cipher: tls::cipher_name(connection.negotiated_cipher_suite().map(|s| s.suite())),
        sni: host
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| host.clone()),
        verdict: tls::Verdict::Cert(verdict),
    };
    ctx.metrics
        .handshake_ok(facts.version, facts.cipher, started.elapsed());
    let mut conn = MxConn {
        reader: LineReader::new(MxStream::Tls(Box::new(stream))),
        label,
        host,
        addr,
        local,
        ehlo: None,
        greeting,
    };
    // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
    if let Err(e) = conn.hello(ctx).await {
        return Attempt::failed(
            peer,
            Offer::HandshakeFailed(format!("EHLO after STARTTLS: {e}")),
        );
    }
    Attempt {
        peer,
        offer: Offer::Tls(verdict),
        conn: Some(conn),
        facts: Some(facts),
        chain,
    }
}

/// The verifier of one handshake: trust anchors, or the MX host's TLSA records.
enum Recorder {
    WebPki(std::sync::Arc<tls::RecordingVerifier>),
    Dane(std::sync::Arc<tls::dane::DaneRecorder>),
}

impl Recorder {
    /// The verdict on the chain the host sent (`Invalid` if the handshake never showed one).
    fn verdict(&self) -> tls::CertVerdict {
        let verdict = match self {
            Recorder::WebPki(v) => v.verdict(),
            Recorder::Dane(d) => d.verdict().map(|v| v.cert_verdict()),
        };
        verdict.unwrap_or(tls::CertVerdict::Invalid)
    }
}
