//! dnsmasq as the test zone's name server: MX, A and TXT records for test domains, on a loopback
//! address of the test's own, `.test` answered locally (NXDOMAIN for unknown names), and one
//! domain forwarded to a dead server so its questions fail temporarily.

use super::{eventually, require_program, unique_ip};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Domain whose look-ups fail temporarily (SERVFAIL/REFUSED from a dead upstream).
pub const TEMPFAIL_DOMAIN: &str = "tempfail.test";

/// The records dnsmasq serves (besides `.test` being local and the tempfail domain).
#[derive(Default)]
pub struct Zone {
    args: Vec<String>,
    /// Lines of a configuration file: only there does dnsmasq read a quoted TXT text with
    /// commas as one string (on the command line a comma always splits).
    conf: Vec<String>,
}

impl Zone {
    /// `domain` MX `host` with `preference`.
    pub fn mx(mut self, domain: &str, host: &str, preference: u16) -> Self {
        self.args
            .push(format!("--mx-host={domain},{host},{preference}"));
        self
    }

    /// `domain` MX `host` (preference 10), and `host` A `ip`: a domain with one MX host.
    pub fn mx_at(self, domain: &str, host: &str, ip: Ipv4Addr) -> Self {
        self.mx(domain, host, 10).a(host, ip)
    }

    /// `host` AAAA `ip`.
    pub fn aaaa(mut self, host: &str, ip: std::net::Ipv6Addr) -> Self {
        self.args.push(format!("--host-record={host},{ip}"));
        self
    }

    /// `name` TXT `text`, one character-string (under 255 bytes).
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        assert!(!text.contains('"') && text.len() < 255, "{text}");
        self.conf.push(format!("txt-record={name},\"{text}\""));
        self
    }

    /// `host` A `ip`.
    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Self {
        self.args.push(format!("--host-record={host},{ip}"));
        self
    }
}

/// A running dnsmasq; killed on drop.
pub struct Dns {
    pub addr: SocketAddr,
    child: Child,
    conf: Option<std::path::PathBuf>,
}

impl Dns {
    pub fn start(zone: Zone) -> Dns {
        let dnsmasq = require_program("dnsmasq");
        let ip = unique_ip();
        let addr = SocketAddr::from((ip, 53));
        let dead = unique_ip();
        let conf = (!zone.conf.is_empty()).then(|| {
            let path = std::env::temp_dir().join(format!("stp-dnsmasq-{ip}.conf"));
            std::fs::write(&path, zone.conf.join("\n") + "\n").expect("write dnsmasq conf");
            path
        });
        let conf_arg = match &conf {
            Some(path) => format!("--conf-file={}", path.display()),
            None => "--conf-file=/dev/null".to_string(),
        };
        let child = Command::new(dnsmasq)
            .arg(conf_arg)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--port=53",
                "--local=/test/",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--server=/{TEMPFAIL_DOMAIN}/{dead}#53"))
            .args(&zone.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dnsmasq");
        let dns = Dns { addr, child, conf };
        // Ready when it answers a question (any answer).
        eventually("dnsmasq to answer", || dns.answers().then_some(()));
        dns
    }

    fn answers(&self) -> bool {
        let socket = UdpSocket::bind((self.addr.ip(), 0)).expect("bind probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Query id 1, RD, one question: "probe.test" A IN.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["probe", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if socket.send_to(&q, self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[0..2] == [0, 1])
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(conf) = &self.conf {
            let _ = std::fs::remove_file(conf);
        }
    }
}
