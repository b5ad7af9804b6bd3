//! A DNSSEC-signed test zone with deliberately broken parts, served by Knot and validated by
//! unbound (../shared/notes/dane-mta-sts-tls-rpt-facts.md, section 1).
//!
//! [`SignedZone`] collects records, signs the zone offline with `dnssec-signzone` (one ECDSA
//! P-256 key as CSK, `-z -O full`), corrupts the RRSIGs a test asks for (bogus data), and adds
//! child zones: signed, unsigned (insecure delegation: no DS), signed with a validity window in
//! the past (expired) or delegated with a DS of another key (wrong DS). [`SignedZone::start`]
//! serves every zone from one `knotd` (files as they are: Knot never re-signs) and starts a
//! validating `unbound` whose only trust anchor is the zone's key. Both stop on `Drop`, and also
//! when the test process dies (each daemon's wrapper shell kills it when its stdin closes).
//! Startup takes about 0.2 s; tests that share one zone use [`shared`].
//!
//! ```ignore
//! let dns = SignedZone::new("test")
//!     .mx_at("dane-ee.test", "mx.dane-ee.test", mx_ip)
//!     .tlsa("mx.dane-ee.test", 25, &tlsa_3_1_1(&mx_leaf.cert_pem))
//!     .child(SignedZone::new("insecure.test").mx_at("insecure.test", "mx.insecure.test", mx_ip),
//!            Delegation::Insecure)
//!     .bogus("mx.dane-ee.test", "A")
//!     .start();
//! // proxy: [resolver] nameservers = [dns.resolver], dnssec_trust_anchor = dns.anchor
//! // or the whole catalogue: dane_catalogue(mx_ip, &leaf.cert_pem, &ca.cert_pem, 25).start()
//! ```

use super::{remove_at_exit, require_program, unique_ip, TempDir, PATIENCE};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// TTL of every record (unbound caps what it caches at 5 s, so answers never go stale for long).
pub const TTL: u32 = 300;

/// How a child zone is delegated from its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delegation {
    /// Signed with its own key, the parent holds its DS: secure.
    Secure,
    /// Unsigned, no DS in the parent (proven absent by NSEC): insecure.
    Insecure,
    /// Signed with a validity window in 2020 (key published in 2000), DS correct: bogus.
    Expired,
    /// Signed with its own key, the parent holds the DS of another key: bogus.
    WrongDs,
}

/// A zone (apex and records) to sign and serve; children are zones of their own.
pub struct SignedZone {
    apex: String,
    records: Vec<String>,
    bogus: Vec<(String, String)>,
    children: Vec<(SignedZone, Delegation)>,
}

impl SignedZone {
    /// An empty zone at `apex` (e.g. `"test"`); SOA, NS and the name server's address are
    /// added when it is built.
    pub fn new(apex: &str) -> SignedZone {
        SignedZone {
            apex: fqdn(apex),
            records: Vec::new(),
            bogus: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Any record: `owner` (absolute, trailing dot optional), type and RDATA in zone-file syntax.
    pub fn record(mut self, owner: &str, rtype: &str, rdata: &str) -> Self {
        self.records
            .push(format!("{} {TTL} IN {rtype} {rdata}", fqdn(owner)));
        self
    }

    /// `domain` MX `host` with `preference`.
    pub fn mx(self, domain: &str, host: &str, preference: u16) -> Self {
        let rdata = format!("{preference} {}", fqdn(host));
        self.record(domain, "MX", &rdata)
    }

    /// `domain` MX `host` (preference 10), and `host` A `ip`: a domain with one MX host.
    pub fn mx_at(self, domain: &str, host: &str, ip: Ipv4Addr) -> Self {
        self.mx(domain, host, 10).a(host, ip)
    }

    /// `host` A `ip`.
    pub fn a(self, host: &str, ip: Ipv4Addr) -> Self {
        self.record(host, "A", &ip.to_string())
    }

    /// `host` AAAA `ip`.
    pub fn aaaa(self, host: &str, ip: Ipv6Addr) -> Self {
        self.record(host, "AAAA", &ip.to_string())
    }

    /// `_<port>._tcp.<host>` TLSA `rdata` (e.g. from [`tlsa_3_1_1`]); `port` is the one the
    /// proxy connects to (its `mx_port`).
    pub fn tlsa(self, host: &str, port: u16, rdata: &str) -> Self {
        self.record(&tlsa_owner(host, port), "TLSA", rdata)
    }

    /// `owner` TXT `text` (quoted here; split into 255-byte strings when longer).
    pub fn txt(self, owner: &str, text: &str) -> Self {
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|chunk| {
                let s = String::from_utf8_lossy(chunk);
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            })
            .collect();
        let rdata = if strings.is_empty() {
            "\"\"".to_string()
        } else {
            strings.join(" ")
        };
        self.record(owner, "TXT", &rdata)
    }

    /// MTA-STS discovery for `domain`: `_mta-sts.<domain>` TXT `v=STSv1; id=<id>;` and
    /// `mta-sts.<domain>` A `https_ip` (the policy host, see `https::PolicyHost`).
    pub fn mta_sts(self, domain: &str, id: &str, https_ip: Ipv4Addr) -> Self {
        let domain = domain.trim_end_matches('.');
        self.txt(&format!("_mta-sts.{domain}"), &format!("v=STSv1; id={id};"))
            .a(&format!("mta-sts.{domain}"), https_ip)
    }

    /// TLS-RPT discovery for `domain`: `_smtp._tls.<domain>` TXT `v=TLSRPTv1; rua=<rua>`.
    pub fn tls_rpt(self, domain: &str, rua: &str) -> Self {
        let domain = domain.trim_end_matches('.');
        self.txt(
            &format!("_smtp._tls.{domain}"),
            &format!("v=TLSRPTv1; rua={rua}"),
        )
    }

    /// Corrupts the RRSIG covering `owner`/`rtype` after signing (one character of the
    /// signature flipped): validators answer SERVFAIL (EDE 6), `+cd` still returns the data.
    pub fn bogus(mut self, owner: &str, rtype: &str) -> Self {
        self.bogus.push((fqdn(owner), rtype.to_ascii_uppercase()));
        self
    }

    /// Delegates `child` (whose apex must lie below this zone's) as `delegation` says.
    pub fn child(mut self, child: SignedZone, delegation: Delegation) -> Self {
        assert!(
            child.apex.ends_with(&format!(".{}", self.apex)),
            "child {} is not below {}",
            child.apex,
            self.apex
        );
        self.children.push((child, delegation));
        self
    }

    /// Signs everything, starts Knot and unbound, and waits until unbound answers the apex
    /// SOA with a validated NOERROR.
    pub fn start(self) -> Dnssec {
        let dir = TempDir::new("dnssec");
        let knot_ip = unique_ip();
        let built = self.build(dir.path(), knot_ip, Delegation::Secure);
        let anchor = dir.join("anchor.key");
        std::fs::write(&anchor, trust_anchor_line(&built.key)).expect("write trust anchor");
        let authoritative = SocketAddr::from((knot_ip, 53));
        let knot = start_knot(dir.path(), authoritative, &built.zones);
        knot.wait_until("knotd to serve the zone", || {
            query(authoritative, &self.apex, 6, false) == Some(0)
        });
        let resolver = SocketAddr::from((unique_ip(), 53));
        let unbound = start_unbound(dir.path(), resolver, authoritative, &self.apex, &anchor);
        unbound.wait_until("unbound to validate the zone", || {
            query(resolver, &self.apex, 6, false) == Some(0)
        });
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            format!("nameserver {}\noptions trust-ad\n", resolver.ip()),
        )
        .expect("write resolv.conf");
        Dnssec {
            resolver,
            authoritative,
            anchor,
            resolv_conf,
            apex: self.apex,
            _unbound: unbound,
            _knot: knot,
            dir,
        }
    }

    /// Writes (and unless `Insecure`, signs) this zone and its children below `dir`. Children
    /// are built first and in parallel (their DS records go into this zone), while this zone's
    /// key is made.
    fn build(&self, dir: &Path, ns_ip: Ipv4Addr, delegation: Delegation) -> Built {
        let apex: &str = &self.apex;
        let keys = dir.join(format!("keys-{apex}"));
        let signed_zone = delegation != Delegation::Insecure;
        let expired = delegation == Delegation::Expired;
        let (key, children) = std::thread::scope(|scope| {
            let children: Vec<_> = self
                .children
                .iter()
                .map(|(child, how)| scope.spawn(move || child.build(dir, ns_ip, *how)))
                .collect();
            let key = signed_zone.then(|| keygen(&keys, apex, expired));
            let children: Vec<Built> = children
                .into_iter()
                .map(|c| c.join().expect("child zone built"))
                .collect();
            (key, children)
        });
        let mut text = format!(
            "$TTL {TTL}\n{apex} IN SOA ns.{apex} hostmaster.{apex} 1 3600 600 86400 {TTL}\n\
             {apex} IN NS ns.{apex}\nns.{apex} IN A {ns_ip}\n"
        );
        for record in &self.records {
            text.push_str(record);
            text.push('\n');
        }
        let mut zones = Vec::new();
        for ((child, _), built) in self.children.iter().zip(children) {
            let c = &child.apex;
            text.push_str(&format!("{c} IN NS ns.{c}\nns.{c} IN A {ns_ip}\n"));
            text.push_str(&built.ds);
            zones.extend(built.zones);
        }
        let unsigned = dir.join(format!("{apex}zone"));
        std::fs::write(&unsigned, text).expect("write zone file");
        let Some(key) = key else {
            assert!(
                self.bogus.is_empty(),
                "{apex} is unsigned: it has no RRSIG to corrupt"
            );
            zones.push((apex.to_string(), unsigned));
            return Built {
                zones,
                key: None,
                ds: String::new(),
            };
        };
        let signed = dir.join(format!("{apex}zone.signed"));
        let mut args = vec!["-q", "-S", "-K", path_str(&keys), "-z", "-O", "full"];
        // dsset- files go here, not into the working directory.
        args.extend(["-d", path_str(dir)]);
        if expired {
            // A window in the past: -P skips the self-check that would refuse it.
            args.extend(["-P", "-s", "20200101000000", "-e", "20200201000000"]);
        }
        args.extend(["-o", apex, "-f", path_str(&signed), path_str(&unsigned)]);
        run("dnssec-signzone", &args);
        if !self.bogus.is_empty() {
            corrupt(&signed, &self.bogus);
        }
        zones.push((apex.to_string(), signed));
        let ds_key = if delegation == Delegation::WrongDs {
            keygen(&dir.join(format!("spare-keys-{apex}")), apex, false)
        } else {
            key.clone()
        };
        let ds = run("dnssec-dsfromkey", &["-2", path_str(&ds_key)]);
        Built {
            zones,
            key: Some(key),
            ds,
        }
    }
}

/// A zone and its children written and signed.
struct Built {
    /// `(apex, file)` for Knot, children first.
    zones: Vec<(String, PathBuf)>,
    /// The `.key` file of the zone's key (`None`: unsigned).
    key: Option<PathBuf>,
    /// The DS record(s) the parent publishes (empty for an insecure delegation).
    ds: String,
}

/// A running Knot (authoritative for the zone and its children) and unbound (validating with
/// the zone's key as its only trust anchor); both stopped on drop.
pub struct Dnssec {
    /// unbound: the validating resolver (AD on secure answers, SERVFAIL + EDE 6 on bogus).
    pub resolver: SocketAddr,
    /// Knot: the authoritative server (never sets AD; passes RRSIGs to DO queries).
    pub authoritative: SocketAddr,
    /// The trust anchor: one line `<apex> 300 IN DNSKEY 257 3 13 …`, readable by unbound and by
    /// hickory's `TrustAnchors::from_file`.
    pub anchor: PathBuf,
    /// `nameserver <resolver>` plus `options trust-ad` (glibc hides AD without it), for
    /// bind-mounting over /etc/resolv.conf in a namespace.
    pub resolv_conf: PathBuf,
    /// The zone's apex, absolute (`test.`).
    pub apex: String,
    _unbound: Daemon,
    _knot: Daemon,
    /// Last: removed after both daemons stopped.
    dir: TempDir,
}

impl Dnssec {
    /// The directory with the zone files, keys, configurations and the daemons' logs
    /// (`knot.log`, `unbound.log`; kept with `KEEP_TEST_DIRS`). An instance kept in a `static`
    /// is never dropped: pass this to `remove_at_exit`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The instance shared by every test of this binary, built by the first caller's `build`
/// (every caller must pass an equivalent builder). It is never dropped: its daemons end and its
/// directory is removed when the test process exits (their wrappers see stdin close).
pub fn shared(build: impl FnOnce() -> SignedZone) -> &'static Dnssec {
    static SHARED: OnceLock<Dnssec> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dns = build().start();
        remove_at_exit(dns.dir());
        dns
    })
}

/// The usual catalogue of DANE cases under `test.`, all with one MX host `mx.<domain>` at
/// `mx_ip` and TLSA at `_<port>._tcp.mx.<domain>`:
///
/// | domain | what |
/// |---|---|
/// | `dane-ee.test` | TLSA `3 1 1` of `mx_cert_pem`: secure |
/// | `dane-ta.test` | TLSA `2 1 1` of `ca_cert_pem` (the MX must send the CA in its chain) |
/// | `dane-bad.test` | TLSA `3 1 1` of a key nobody has: secure, never matches |
/// | `dane-bogus.test` | TLSA `3 1 1` of `mx_cert_pem` with a corrupted RRSIG: bogus |
/// | `dane-none.test` | no TLSA: secure NXDOMAIN for the TLSA name |
/// | `dane-child.test` | signed child zone (secure delegation), TLSA `3 1 1`: secure |
/// | `insecure.test` | unsigned child zone, TLSA `3 1 1`: insecure |
/// | `expired.test` | child signed for January 2020: bogus |
/// | `wrongds.test` | child with a DS of another key: bogus |
///
/// Tests add their own records (e.g. `mta_sts`) to the result before starting it.
pub fn dane_catalogue(
    mx_ip: Ipv4Addr,
    mx_cert_pem: &str,
    ca_cert_pem: &str,
    port: u16,
) -> SignedZone {
    let ee = tlsa_3_1_1(mx_cert_pem);
    let ta = tlsa_2_1_1(ca_cert_pem);
    let nobody = format!("3 1 1 {}", hex(&sha256(b"a key nobody has")));
    let domain = |zone: SignedZone, d: &str, tlsa: Option<&str>| {
        let mx = format!("mx.{d}");
        let zone = zone.mx_at(d, &mx, mx_ip);
        match tlsa {
            Some(rdata) => zone.tlsa(&mx, port, rdata),
            None => zone,
        }
    };
    let mut zone = SignedZone::new("test");
    zone = domain(zone, "dane-ee.test", Some(&ee));
    zone = domain(zone, "dane-ta.test", Some(&ta));
    zone = domain(zone, "dane-bad.test", Some(&nobody));
    zone = domain(zone, "dane-bogus.test", Some(&ee))
        .bogus(&tlsa_owner("mx.dane-bogus.test", port), "TLSA");
    zone = domain(zone, "dane-none.test", None);
    let children = [
        ("dane-child.test", Delegation::Secure, Some(&ee)),
        ("insecure.test", Delegation::Insecure, Some(&ee)),
        ("expired.test", Delegation::Expired, None),
        ("wrongds.test", Delegation::WrongDs, None),
    ];
    for (name, delegation, tlsa) in children {
        let child = domain(SignedZone::new(name), name, tlsa.map(String::as_str));
        zone = zone.child(child, delegation);
    }
    zone
}

/// `_<port>._tcp.<host>`: where the TLSA records of an MX listening on `port` live.
pub fn tlsa_owner(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

/// TLSA RDATA `3 1 1 <sha256 of the leaf's SPKI>` (DANE-EE) for the first certificate in
/// `cert_pem` (a chain file starts with the leaf).
pub fn tlsa_3_1_1(cert_pem: &str) -> String {
    tlsa(3, 1, 1, cert_pem)
}

/// TLSA RDATA `2 1 1 <sha256 of the CA's SPKI>` (DANE-TA).
pub fn tlsa_2_1_1(ca_cert_pem: &str) -> String {
    tlsa(2, 1, 1, ca_cert_pem)
}

/// TLSA RDATA for any usage, selector (0 full certificate, 1 SPKI) and matching type (0 exact,
/// 1 SHA-256, 2 SHA-512) of the first certificate in `cert_pem`.
pub fn tlsa(usage: u8, selector: u8, matching: u8, cert_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("PEM certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).expect("X.509 certificate");
    let selected: &[u8] = match selector {
        0 => &pem.contents,
        1 => cert.tbs_certificate.subject_pki.raw,
        other => panic!("TLSA selector {other} is not defined"),
    };
    let data = match matching {
        0 => selected.to_vec(),
        1 => sha256(selected),
        2 => ring::digest::digest(&ring::digest::SHA512, selected)
            .as_ref()
            .to_vec(),
        other => panic!("TLSA matching type {other} is not defined"),
    };
    format!("{usage} {selector} {matching} {}", hex(&data))
}

/// Sends one query (`qtype` by number: 1 A, 6 SOA, 15 MX, 16 TXT, 52 TLSA) to `server` over
/// UDP, with DO set when `dnssec`; returns the RCODE of the answer, `None` on no answer.
pub fn query(server: SocketAddr, name: &str, qtype: u16, dnssec: bool) -> Option<u8> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    // Id 0x5a5a, RD, one question.
    let mut q = vec![0x5a, 0x5a, 1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(dnssec)];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if dnssec {
        // OPT: root owner, type 41, UDP size 1232, no extended rcode, version 0, DO.
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
    // Connected: a closed port fails at once (ICMP) instead of after the read timeout.
    socket.connect(server).ok()?;
    socket.send(&q).ok()?;
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) if n >= 12 && buf[0..2] == [0x5a, 0x5a] => Some(buf[3] & 0x0f),
        _ => None,
    }
}

/// A daemon run in the foreground under `sh`, which prints its pid and kills it when its
/// stdin closes (the test dropped it, or the test process died without running `Drop`).
struct Daemon {
    pid: u32,
    log: PathBuf,
    wrapper: Child,
    stdin: Option<ChildStdin>,
}

impl Daemon {
    fn spawn(program: &str, args: &[&str], log: &Path) -> Daemon {
        let program = require_program(program);
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; "$@" >"$log" 2>&1 & echo $!; read -r _; kill $! 2>/dev/null; wait"#)
            .arg("sh")
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Not the test's: the wrapper may outlive the test process by a moment (nextest
            // would call the test leaky). The daemon writes to its log.
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon wrapper");
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("wrapper stdout"))
            .read_line(&mut line)
            .expect("read daemon pid");
        let pid = line.trim().parse().expect("daemon pid");
        let stdin = wrapper.stdin.take();
        Daemon {
            pid,
            log: log.to_owned(),
            wrapper,
            stdin,
        }
    }

    /// Polls `ready` until it holds; fails with the daemon's log if the daemon exits first or
    /// `PATIENCE` runs out.
    fn wait_until(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready() {
            // Exited: a zombie (the wrapper reaps it only when told to stop) or gone.
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid));
            let exited = stat.map_or(true, |s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            });
            if exited || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let why = if exited { "it exited" } else { "timed out" };
                panic!("waiting for {what}: {why}; {}:\n{log}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}

fn start_knot(dir: &Path, listen: SocketAddr, zones: &[(String, PathBuf)]) -> Daemon {
    let run_dir = dir.join("knot");
    std::fs::create_dir_all(&run_dir).expect("create knot directory");
    let d = run_dir.display();
    let mut conf = format!(
        "server:\n  listen: {ip}@{port}\n  rundir: {d}\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n  storage: {d}\n\
         template:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n    \
         zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
         zone:\n",
        ip = listen.ip(),
        port = listen.port(),
    );
    for (apex, file) in zones {
        conf.push_str(&format!(
            "  - domain: {apex}\n    file: {}\n",
            file.display()
        ));
    }
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf).expect("write knot.conf");
    Daemon::spawn(
        "knotd",
        &["-c", path_str(&conf_path)],
        &dir.join("knot.log"),
    )
}

fn start_unbound(
    dir: &Path,
    listen: SocketAddr,
    stub: SocketAddr,
    apex: &str,
    anchor: &Path,
) -> Daemon {
    let conf = format!(
        r#"server:
    interface: {ip}
    port: {port}
    interface-automatic: no
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    # unbound refuses to query 127.x name servers otherwise.
    do-not-query-localhost: no
    # unbound answers test. itself (RFC 6761) otherwise.
    local-zone: "{apex}" nodefault
    # The zone's key is the only anchor: names outside it are insecure.
    trust-anchor-file: "{anchor}"
    # SERVFAIL for bogus data carries EDE 6 (DNSSEC Bogus).
    ede: yes
    val-log-level: 2
    cache-max-ttl: 5
    cache-max-negative-ttl: 5
    val-bogus-ttl: 1
    infra-host-ttl: 5
remote-control:
    control-enable: no
stub-zone:
    name: "{apex}"
    stub-addr: {stub}@{stub_port}
"#,
        ip = listen.ip(),
        port = listen.port(),
        dir = dir.display(),
        anchor = anchor.display(),
        stub = stub.ip(),
        stub_port = stub.port(),
    );
    let conf_path = dir.join("unbound.conf");
    std::fs::write(&conf_path, conf).expect("write unbound.conf");
    Daemon::spawn(
        "unbound",
        &["-d", "-c", path_str(&conf_path)],
        &dir.join("unbound.log"),
    )
}

/// Makes an ECDSA P-256 key flagged KSK (a CSK with `-z`) for `apex` in `keys`; `past` dates
/// its publication and activation to 2000 (for signatures with a window in the past). Returns
/// the `.key` file.
fn keygen(keys: &Path, apex: &str, past: bool) -> PathBuf {
    std::fs::create_dir_all(keys).expect("create key directory");
    let mut args = vec!["-q", "-K", path_str(keys), "-a", "ECDSAP256SHA256"];
    args.extend(["-f", "KSK", "-n", "ZONE"]);
    if past {
        args.extend(["-P", "20000101000000", "-A", "20000101000000"]);
    }
    args.push(apex);
    let name = run("dnssec-keygen", &args);
    keys.join(format!("{}.key", name.trim()))
}

/// The DNSKEY line of a key file with TTL and class (hickory needs the class).
fn trust_anchor_line(key_file: &Option<PathBuf>) -> String {
    let key_file = key_file.as_ref().expect("the top zone is signed");
    let text = std::fs::read_to_string(key_file).expect("read key file");
    let line = text
        .lines()
        .find(|l| !l.starts_with(';') && l.split_whitespace().nth(2) == Some("DNSKEY"))
        .expect("DNSKEY line in key file");
    let fields: Vec<&str> = line.split_whitespace().collect();
    format!("{} {TTL} IN DNSKEY {}\n", fields[0], fields[3..].join(" "))
}

/// Flips the first character of the signature of every RRSIG covering one of `targets` in a
/// zone signed with `-O full` (one record per line: the signature starts at field 13).
fn corrupt(signed: &Path, targets: &[(String, String)]) {
    let text = std::fs::read_to_string(signed).expect("read signed zone");
    let mut hit = vec![false; targets.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let target = (fields.len() > 12 && fields[3] == "RRSIG")
            .then(|| {
                targets.iter().position(|(owner, rtype)| {
                    fields[0].eq_ignore_ascii_case(owner) && fields[4].eq_ignore_ascii_case(rtype)
                })
            })
            .flatten();
        match target {
            Some(i) => {
                hit[i] = true;
                let signature = &mut fields[12];
                let flipped = if signature.starts_with('A') { "B" } else { "A" };
                signature.replace_range(0..1, flipped);
                out.push_str(&fields.join(" "));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (i, (owner, rtype)) in targets.iter().enumerate() {
        assert!(hit[i], "no RRSIG for {owner} {rtype} to corrupt");
    }
    std::fs::write(signed, out).expect("write corrupted zone");
}

/// Runs a BIND tool; panics with its stderr on failure; returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(require_program(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is ASCII")
}

fn fqdn(name: &str) -> String {
    let name = name.trim_end_matches('.');
    format!("{name}.")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `dig` said about one question (an independent view of the fixture).
#[derive(Debug)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, …
    pub status: String,
    /// Header flags: `qr`, `aa`, `rd`, `ra`, `ad`, `cd`.
    pub flags: Vec<String>,
    /// The EDE lines (`6 (DNSSEC Bogus)`, …).
    pub ede: Vec<String>,
    /// The answer section, one record per line, fields separated by single spaces.
    pub answer: Vec<String>,
    /// dig's whole output, for failure messages.
    pub output: String,
}

impl Dig {
    /// The AD (authenticated data) bit.
    pub fn ad(&self) -> bool {
        self.flags.iter().any(|f| f == "ad")
    }

    /// The RDATA of the answer records of type `rtype`.
    pub fn rdata(&self, rtype: &str) -> Vec<String> {
        self.answer
            .iter()
            .filter_map(|record| {
                let fields: Vec<&str> = record.split(' ').collect();
                (fields.len() > 4 && fields[3] == rtype).then(|| fields[4..].join(" "))
            })
            .collect()
    }
}

/// Asks `server` with dig (`+dnssec`: DO set), plus `extra` options such as `+cd`. Patient
/// (two tries of 5 s): on a loaded machine unbound's first look-up through Knot can be slow.
pub fn dig(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new(require_program("dig"))
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+dnssec", "+tries=2", "+time=5", "+nomultiline", "+nosplit"])
        .args(extra)
        .args([name, rtype])
        .output()
        .expect("run dig");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {name} {rtype} failed: {output}");
    let status = output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output: {output}"))
        .to_string();
    let flags = output
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let ede = output
        .lines()
        .filter_map(|l| l.strip_prefix("; EDE: "))
        .map(str::to_string)
        .collect();
    let answer = output
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|s| {
            s.lines()
                .take_while(|l| !l.is_empty())
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    Dig {
        status,
        flags,
        ede,
        answer,
        output,
    }
}
