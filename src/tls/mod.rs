//! rustls (ring) configuration: certificate loading, protocol policy, names for metrics and logs.
//!
//! Policy (OSA "Email TLS"): TLS 1.2 minimum, 1.3 preferred, forward secrecy only. rustls offers
//! no static-RSA key exchange at all, so every suite of the ring provider is ECDHE or TLS 1.3.

pub mod dane;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ProtocolVersion, ServerConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lowest TLS version accepted from clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// A certificate ready to serve, with what the expiry inventory needs.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Label for the expiry gauge: the certificate's path, or `self-signed`.
    pub label: String,
    /// notAfter of the leaf, seconds since the epoch.
    pub not_after: Option<i64>,
    pub subject: String,
    /// The lowest version served (`evidence` reports it).
    pub min_version: MinVersion,
}

impl ServerTls {
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, expires {})",
            self.label,
            self.subject,
            self.not_after.map_or("?".into(), crate::log::format_unix)
        )
    }
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    /// The file could not be read (missing, no permission, a directory): a runtime failure.
    #[error("cannot read certificate file {0}: {1}")]
    CertUnreadable(PathBuf, String),
    #[error("cannot parse certificate file {0}: {1}")]
    CertRead(PathBuf, String),
    #[error("no PEM certificate found in {0}")]
    CertEmpty(PathBuf),
    /// The file could not be read (missing, no permission, a directory): a runtime failure.
    #[error("cannot read private key file {0}: {1}")]
    KeyUnreadable(PathBuf, String),
    #[error("cannot parse private key file {0}: {1}")]
    KeyRead(PathBuf, String),
    #[error("unsupported private key in {0}: {1}")]
    KeyUnsupported(PathBuf, String),
    #[error("private key {0} does not match the certificate {1}")]
    Mismatch(PathBuf, PathBuf),
    #[error("certificate {0} is not a valid X.509 certificate: {1}")]
    CertInvalid(PathBuf, String),
}

impl TlsLoadError {
    /// Which configuration key the administrator must fix.
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            Self::KeyUnreadable(..)
                | Self::KeyRead(..)
                | Self::KeyUnsupported(..)
                | Self::Mismatch(..)
        )
    }

    /// The file could not be read at all (I/O), as opposed to content that is wrong: the
    /// configuration may be right and the system not ready (permissions, a credential not yet
    /// in place), so `run` exits 1 (runtime failure) instead of 2.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, Self::CertUnreadable(..) | Self::KeyUnreadable(..))
    }
}

/// The versions served from `min` up, as the metric labels spell them (newest first).
pub fn versions_from(min: MinVersion) -> &'static [&'static str] {
    match min {
        MinVersion::Tls12 => &["TLSv1.3", "TLSv1.2"],
        MinVersion::Tls13 => &["TLSv1.3"],
    }
}

/// The IANA names of the suites offered for `versions` (both directions use the ring
/// provider's suites, all forward secret), in preference order.
pub fn suite_names(versions: &[&str]) -> Vec<&'static str> {
    provider()
        .cipher_suites
        .iter()
        .filter(|s| {
            let version = match s {
                rustls::SupportedCipherSuite::Tls13(_) => "TLSv1.3",
                rustls::SupportedCipherSuite::Tls12(_) => "TLSv1.2",
            };
            versions.contains(&version)
        })
        .map(|s| cipher_name(Some(s.suite())))
        .collect()
}

/// The ring provider; all its suites are forward secret.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key, and checks they belong together.
pub fn load_server(
    cert_path: &Path,
    key_path: &Path,
    min: MinVersion,
) -> Result<ServerTls, TlsLoadError> {
    let cert_error = |e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(io) => {
            TlsLoadError::CertUnreadable(cert_path.to_owned(), unreadable(&io))
        }
        other => TlsLoadError::CertRead(cert_path.to_owned(), pem_error(other)),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(TlsLoadError::CertEmpty(cert_path.to_owned()));
    }
    let (subject, not_after) =
        leaf_facts(&chain[0]).map_err(|e| TlsLoadError::CertInvalid(cert_path.to_owned(), e))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(io) => {
            TlsLoadError::KeyUnreadable(key_path.to_owned(), unreadable(&io))
        }
        other => TlsLoadError::KeyRead(key_path.to_owned(), pem_error(other)),
    })?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsLoadError::KeyUnsupported(key_path.to_owned(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|_| TlsLoadError::Mismatch(key_path.to_owned(), cert_path.to_owned()))?;
    Ok(ServerTls {
        config: server_config(certified, min),
        label: cert_path.display().to_string(),
        not_after: Some(not_after),
        subject,
        min_version: min,
    })
}

/// A certificate generated in memory for `hostname` (ECDSA P-256), for the demo and first boot.
pub fn self_signed(hostname: &str, min: MinVersion) -> ServerTls {
    // rcgen fails only on names it cannot encode or on ring errors; the hostname is validated
    // before we get here, so a failure is a broken build, not bad input.
    let key_pair = rcgen::KeyPair::generate().expect("ECDSA P-256 key generation");
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.to_string()]).expect("validated host name");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - std::time::Duration::from_secs(86_400);
    params.not_after = now + std::time::Duration::from_secs(365 * 86_400);
    let generated = params.self_signed(&key_pair).expect("self-signing");
    let cert = CertificateDer::from(generated.der().to_vec());
    let key = PrivateKeyDer::try_from(key_pair.serialize_der()).expect("rcgen emits PKCS#8");
    let (subject, not_after) = leaf_facts(&cert).unwrap_or_else(|_| (hostname.to_string(), 0));
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .expect("rcgen key loads in ring");
    ServerTls {
        config: server_config(CertifiedKey::new(vec![cert], signing_key), min),
        label: "self-signed".to_string(),
        not_after: Some(not_after),
        subject,
        min_version: min,
    }
}

fn server_config(certified: CertifiedKey, min: MinVersion) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // Mail clients rarely resume; tickets would only cost memory per idle session.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// Subject CN (or whole subject) and notAfter of a DER certificate.
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(String, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string))
        .unwrap_or_else(|| cert.subject().to_string());
    Ok((subject, cert.validity().not_after.timestamp()))
}

/// An I/O error reading a certificate or key, with what to check when it is a permission.
fn unreadable(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "{e}: the user the proxy runs as must be able to read it (systemd: hand it over with LoadCredential=)"
        ),
        _ => e.to_string(),
    }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind found".into()
        }
        other => format!("{other:?}"),
    }
}

/// `TLSv1.2` / `TLSv1.3`, as the metric label and openssl spell it.
pub fn version_name(v: Option<ProtocolVersion>) -> &'static str {
    match v {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(_) => "other",
        None => "none",
    }
}

/// The IANA name of a suite (`TLS_AES_256_GCM_SHA384`, not rustls's `TLS13_` spelling).
pub fn cipher_name(suite: Option<CipherSuite>) -> &'static str {
    match suite {
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256",
        Some(CipherSuite::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384",
        Some(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256",
        Some(s) => s.as_str().unwrap_or("other"),
        None => "none",
    }
}

/// Fixed-set reason for a failed server handshake, for the failures metric.
pub fn handshake_failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "client_closed"
            }
            std::io::ErrorKind::InvalidData => "not_tls",
            _ => "io",
        };
    };
    match tls {
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => "not_tls",
        E::PeerIncompatible(rustls::PeerIncompatible::SupportedVersionsExtensionRequired)
        | E::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
        | E::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled) => {
            "protocol_version"
        }
        E::PeerIncompatible(_) => "no_shared_parameters",
        E::AlertReceived(_) => "client_alert",
        E::PeerMisbehaved(_) => "client_misbehaved",
        _ => "other",
    }
}

// ---- Outbound (client side): trust anchors, certificate verdicts, client configuration ----

/// Proof that a chain was verified to the trust anchors for an accepted name: only
/// [`TrustAnchors::verdict`] makes one (rustls's `PeerVerified` idea), so no code can claim a
/// verified peer it did not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified(());

/// What the certificate of an MX host came to. Opportunistic and encrypt record it; verify
/// requires `Verified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertVerdict {
    /// Chain valid to the trust anchors and a name matches (MX host or a `match` name).
    Verified(Verified),
    /// Chain valid, but no name matches.
    NameMismatch,
    /// Chain does not lead to a trust anchor (self-signed, private CA).
    Untrusted,
    /// Expired or not yet valid.
    Expired,
    /// Anything else the verifier refused (bad encoding, bad signature, revoked).
    Invalid,
    /// DANE: no TLSA record of the MX host matches the presented chain.
    DaneNoMatch,
}

impl CertVerdict {
    pub fn is_verified(self) -> bool {
        matches!(self, CertVerdict::Verified(_))
    }

    /// The log's `verdict` field.
    pub fn as_str(self) -> &'static str {
        match self {
            CertVerdict::Verified(_) => "verified",
            CertVerdict::NameMismatch => "name_mismatch",
            CertVerdict::Untrusted => "untrusted",
            CertVerdict::Expired => "expired",
            CertVerdict::Invalid => "invalid",
            CertVerdict::DaneNoMatch => "dane_no_match",
        }
    }

    /// What failed, in words for a `451 4.7.5` reply.
    pub fn describe(self) -> &'static str {
        match self {
            CertVerdict::Verified(_) => "certificate verified",
            CertVerdict::NameMismatch => "certificate name does not match the MX host",
            CertVerdict::Untrusted => "certificate not signed by a trusted CA",
            CertVerdict::Expired => "certificate expired or not yet valid",
            CertVerdict::Invalid => "certificate invalid",
            CertVerdict::DaneNoMatch => "no TLSA record matches the certificate chain",
        }
    }

    /// A verified verdict for unit tables of the code that reads verdicts.
    #[cfg(test)]
    pub fn verified_for_tests() -> CertVerdict {
        CertVerdict::Verified(Verified(()))
    }
}

/// What a session's log says of the peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No certificate asked for (inbound clients).
    NotAsked,
    /// Transparent mode: judged per recipient domain at each RCPT.
    PerDomain,
    Cert(CertVerdict),
}

impl Verdict {
    /// The log's `verdict` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotAsked => "none",
            Verdict::PerDomain => "per_domain",
            Verdict::Cert(v) => v.as_str(),
        }
    }

    pub fn is_verified(self) -> bool {
        matches!(self, Verdict::Cert(v) if v.is_verified())
    }
}

/// A set of trust anchors (a PEM bundle) and the webpki verifier built on it.
#[derive(Debug)]
pub struct TrustAnchors {
    /// The file it came from, for logs and `policy` output.
    pub label: String,
    /// Number of CA certificates loaded.
    pub count: usize,
    /// `None` when the bundle holds no usable CA: every chain is then `Untrusted`.
    verifier: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl TrustAnchors {
    /// Loads a PEM bundle of CA certificates.
    pub fn load(path: &Path) -> Result<TrustAnchors, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(pem_error)?
            .collect::<Result<_, _>>()
            .map_err(pem_error)?;
        if certs.is_empty() {
            return Err("no PEM certificate found".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err("no usable CA certificate found".into());
        }
        Ok(Self::from_roots(path.display().to_string(), roots))
    }

    /// Trust anchors from a root store already built (tests, empty defaults).
    pub fn from_roots(label: String, roots: rustls::RootCertStore) -> TrustAnchors {
        let count = roots.len();
        let verifier = (count > 0)
            .then(|| {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .ok()
            })
            .flatten();
        TrustAnchors {
            label,
            count,
            verifier,
        }
    }

    /// The WebPKI verifier on these anchors (`None`: the bundle holds no usable CA).
    pub fn webpki(&self) -> Option<Arc<rustls::client::WebPkiServerVerifier>> {
        self.verifier.clone()
    }

    /// The verdict on a chain presented by `host`, accepting any of `names` as well.
    pub fn verdict(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        host: &rustls::pki_types::ServerName<'_>,
        names: &[String],
        now: rustls::pki_types::UnixTime,
    ) -> CertVerdict {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::{CertificateError as C, Error as E};
        let Some(verifier) = &self.verifier else {
            return CertVerdict::Untrusted;
        };
        let check = |name: &rustls::pki_types::ServerName<'_>| {
            verifier.verify_server_cert(end_entity, intermediates, name, &[], now)
        };
        let classify = |e: &E| match e {
            E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                CertVerdict::NameMismatch
            }
            E::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => CertVerdict::Expired,
            E::InvalidCertificate(C::UnknownIssuer) => CertVerdict::Untrusted,
            _ => CertVerdict::Invalid,
        };
        match check(host) {
            Ok(_) => CertVerdict::Verified(Verified(())),
            Err(e) => match classify(&e) {
                // The chain is good (webpki checks names last): try the `match` names.
                CertVerdict::NameMismatch => {
                    let matched = names.iter().any(|n| {
                        rustls::pki_types::ServerName::try_from(n.as_str())
                            .is_ok_and(|name| check(&name).is_ok())
                    });
                    if matched {
                        CertVerdict::Verified(Verified(()))
                    } else {
                        CertVerdict::NameMismatch
                    }
                }
                other => other,
            },
        }
    }
}

/// The handshake-signature half of every verifier here: whatever the certificate's verdict, the
/// peer must hold the key of the certificate it shows.
#[derive(Debug)]
pub(crate) struct HandshakeSignatures(pub(crate) Arc<CryptoProvider>);

impl HandshakeSignatures {
    pub(crate) fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub(crate) fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub(crate) fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A verifier that lets every handshake finish and records the certificate's verdict, so the
/// session can apply the domain's policy (and log the verdict even when opportunistic). Handshake
/// signatures are still checked: the peer must own the key of the certificate it shows.
#[derive(Debug)]
pub struct RecordingVerifier {
    anchors: Arc<TrustAnchors>,
    names: Vec<String>,
    verdict: std::sync::Mutex<Option<CertVerdict>>,
    signatures: HandshakeSignatures,
}

impl RecordingVerifier {
    /// The verdict of the last certificate seen (`None`: the handshake never got that far).
    pub fn verdict(&self) -> Option<CertVerdict> {
        self.verdict.lock().map(|v| *v).unwrap_or(None)
    }
}

impl rustls::client::danger::ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verdict =
            self.anchors
                .verdict(end_entity, intermediates, server_name, &self.names, now);
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A client configuration for one STARTTLS attempt (TLS 1.2 minimum, forward secret suites
/// only) and the verifier that will hold the certificate's verdict.
pub fn client_config(
    anchors: Arc<TrustAnchors>,
    match_names: Vec<String>,
) -> (Arc<rustls::ClientConfig>, Arc<RecordingVerifier>) {
    let provider = provider();
    let verifier = Arc::new(RecordingVerifier {
        anchors,
        names: match_names,
        verdict: std::sync::Mutex::new(None),
        signatures: HandshakeSignatures(provider.clone()),
    });
    (with_verifier(provider, verifier.clone()), verifier)
}

/// The client configuration for an MX host with usable secure TLSA records: its certificate is
/// judged by them ([`dane::DaneRecorder`]) instead of trust anchors.
pub fn dane_client_config(
    records: Vec<crate::policy::dane::Tlsa>,
) -> (Arc<rustls::ClientConfig>, Arc<dane::DaneRecorder>) {
    let recorder = dane::DaneRecorder::new(records);
    (with_verifier(provider(), recorder.clone()), recorder)
}

fn with_verifier(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// Fixed-set reason for a failed client handshake, for the failures metric.
pub fn client_handshake_failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match err.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::AlertReceived(_)) => "server_alert",
        Some(E::PeerMisbehaved(_)) => "server_misbehaved",
        Some(E::PeerIncompatible(_)) => "no_shared_parameters",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => "not_tls",
        Some(_) => "other",
        None => match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "server_closed"
            }
            std::io::ErrorKind::InvalidData => "not_tls",
            _ => "io",
        },
    }
}
