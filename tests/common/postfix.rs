//! Postfix instances, each from its own configuration directory (`postfix -c DIR start`), with
//! its own queue, data directory and loopback address: as the legacy MTA behind the proxy
//! (delivering to a Maildir the test reads), as a legacy sender relaying through it, or as a
//! remote MX host (with or without a certificate) the proxy delivers to.

use super::{eventually, require_program, unique_ip, Ca, Leaf, SmtpClient};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The domain Postfix backends accept mail for (delivered to one Maildir).
pub const MAIL_DOMAIN: &str = "example.org";

/// Services every instance needs; no chroot (the instance directories hold no chroot jail).
const MASTER_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// A running Postfix instance; `postfix -c DIR stop` on drop.
pub struct Postfix {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    conf: PathBuf,
}

/// What the instance is for.
pub enum Role<'a> {
    /// The legacy MTA: accepts mail for `example.org` into a Maildir. With `tls`, its smtpd
    /// offers STARTTLS itself (which the proxy must strip).
    Backend { tls: Option<&'a Leaf> },
    /// A legacy sender: relays everything to `relayhost` with `smtp_tls_security_level`
    /// `level`, trusting `ca` when set, from `bind` when set.
    Sender {
        relayhost: SocketAddr,
        level: &'a str,
        ca: Option<&'a Ca>,
        bind: Option<Ipv4Addr>,
    },
    /// A remote MX on port 25 accepting mail for `domains` into a Maildir; `tls`: its
    /// certificate (None: no STARTTLS). Received headers say whether TLS was used.
    Mx {
        domains: &'a [&'a str],
        tls: Option<&'a Leaf>,
    },
}

impl Role<'_> {
    /// A legacy sender that relays everything to `relayhost` (the proxy, or in transparent
    /// mode the MX itself) in plaintext.
    pub fn relay_to(relayhost: SocketAddr) -> Role<'static> {
        Role::Sender {
            relayhost,
            level: "none",
            ca: None,
            bind: None,
        }
    }

    /// The smtpd port: an MX listens where the proxy delivers (25).
    fn port(&self) -> u16 {
        match self {
            Role::Mx { .. } => 25,
            Role::Backend { .. } | Role::Sender { .. } => 2525,
        }
    }
}

impl Postfix {
    pub fn start(parent: &Path, name: &str, role: Role) -> Postfix {
        Self::start_on(parent, name, unique_ip(), role)
    }

    /// A remote MX on `ip:25` for `domains`, offering STARTTLS with `tls` when set.
    pub fn mx(
        parent: &Path,
        name: &str,
        ip: Ipv4Addr,
        domains: &[&str],
        tls: Option<&Leaf>,
    ) -> Postfix {
        Self::start_on(parent, name, ip, Role::Mx { domains, tls })
    }

    /// A legacy MTA behind the proxy (no TLS) with `main_cf` appended to its main.cf (e.g.
    /// `smtpd_upstream_proxy_protocol = haproxy`).
    pub fn backend_with(parent: &Path, name: &str, main_cf: &str) -> Postfix {
        Self::start_configured(
            parent,
            name,
            unique_ip(),
            Role::Backend { tls: None },
            main_cf,
        )
    }

    /// Starts with smtpd on `ip` (port 25 for an MX, 2525 otherwise).
    pub fn start_on(parent: &Path, name: &str, ip: Ipv4Addr, role: Role) -> Postfix {
        Self::start_configured(parent, name, ip, role, "")
    }

    /// Starts with smtpd on `ip` and `main_cf` appended to main.cf (later lines win).
    pub fn start_configured(
        parent: &Path,
        name: &str,
        ip: Ipv4Addr,
        role: Role,
        main_cf: &str,
    ) -> Postfix {
        let postfix = require_program("postfix");
        let dir = parent.join(format!("postfix-{name}"));
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).expect("postfix directories");
        }
        let (uid, gid) = postfix_ids();
        for sub in ["data", "mail"] {
            chown(&dir.join(sub), uid, gid);
        }
        let addr = SocketAddr::from((ip, role.port()));
        let d = dir.display();
        let mut main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             myhostname = {name}.postfix.test\n\
             mydomain = postfix.test\n\
             myorigin = $myhostname\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             mydestination =\n\
             alias_maps =\n\
             alias_database =\n\
             smtputf8_enable = no\n\
             smtpd_banner = $myhostname ESMTP {name}-banner\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             smtp_dns_support_level = disabled\n\
             smtp_host_lookup = native\n\
             maximal_backoff_time = 1s\n\
             minimal_backoff_time = 1s\n\
             queue_run_delay = 1s\n"
        );
        let maildir = |domains: &str, tls: Option<&Leaf>| {
            let mut cf = format!(
                "virtual_mailbox_domains = {domains}\n\
                 virtual_mailbox_base = {d}/mail\n\
                 virtual_mailbox_maps = static:inbox/\n\
                 virtual_uid_maps = static:{uid}\n\
                 virtual_gid_maps = static:{gid}\n\
                 virtual_minimum_uid = 1\n"
            );
            match tls {
                Some(leaf) => {
                    cf += &format!(
                        "smtpd_tls_security_level = may\n\
                         smtpd_tls_chain_files = {}, {}\n",
                        leaf.key.display(),
                        leaf.cert.display()
                    )
                }
                None => cf += "smtpd_tls_security_level = none\n",
            }
            cf
        };
        match role {
            Role::Backend { tls } => main += &maildir(MAIL_DOMAIN, tls),
            Role::Mx { domains, tls } => {
                main += &maildir(&domains.join(" "), tls);
                main += "smtpd_tls_received_header = yes\n";
            }
            Role::Sender {
                relayhost,
                level,
                ca,
                bind,
            } => {
                if let Some(ip) = bind {
                    main += &format!("smtp_bind_address = {ip}\n");
                }
                if let Some(ca) = ca {
                    main += &format!(
                        "smtp_tls_CAfile = {}\n\
                         smtp_tls_loglevel = 1\n",
                        ca.path.display()
                    );
                }
                main += &format!(
                    "relayhost = [{}]:{}\n\
                     smtp_tls_security_level = {level}\n\
                     smtpd_tls_security_level = none\n",
                    relayhost.ip(),
                    relayhost.port()
                );
            }
        }
        main += main_cf;
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        let master = format!("{addr} inet n - n - - smtpd\n{MASTER_SERVICES}");
        std::fs::write(conf.join("master.cf"), master).expect("master.cf");
        let instance = Postfix {
            dir: dir.clone(),
            addr,
            conf: conf.clone(),
        };
        for action in ["check", "start"] {
            let out = Command::new(&postfix)
                .arg("-c")
                .arg(&conf)
                .arg(action)
                .output()
                .expect("run postfix");
            assert!(
                out.status.success(),
                "postfix -c {} {action} failed: {}{}\nmaillog:\n{}",
                conf.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                instance.maillog()
            );
        }
        eventually("postfix smtpd to accept connections", || {
            std::net::TcpStream::connect(addr).ok()
        });
        instance
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Messages delivered to the backend's Maildir so far.
    pub fn delivered(&self) -> Vec<String> {
        let new = self.dir.join("mail/inbox/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }

    /// Waits until `n` messages are in the Maildir.
    pub fn wait_delivered(&self, n: usize) -> Vec<String> {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("{n} message(s) delivered by postfix"), || {
                let m = self.delivered();
                (m.len() >= n).then_some(m)
            })
        }));
        found.unwrap_or_else(|_| panic!("not delivered; maillog:\n{}", self.maillog()))
    }

    /// The queue as `postqueue -j` reports it: one JSON object per message.
    pub fn queue(&self) -> Vec<String> {
        let out = Command::new(require_program("postqueue"))
            .arg("-c")
            .arg(&self.conf)
            .arg("-j")
            .output()
            .expect("run postqueue");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `postqueue -f`: deliver what is deferred now rather than at the next queue run, whose
    /// timing a loaded machine stretches.
    pub fn flush(&self) {
        let out = Command::new(require_program("postqueue"))
            .arg("-c")
            .arg(&self.conf)
            .arg("-f")
            .output()
            .expect("run postqueue");
        assert!(out.status.success(), "postqueue -f: {out:?}");
    }

    /// Waits until a queued message's delay reason contains `needle`; returns that entry.
    pub fn wait_deferred(&self, needle: &str) -> String {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("a deferred message with {needle:?}"), || {
                self.queue().into_iter().find(|m| m.contains(needle))
            })
        }));
        found.unwrap_or_else(|_| {
            panic!(
                "no deferral with {needle:?}; queue: {:?}\nmaillog:\n{}",
                self.queue(),
                self.maillog()
            )
        })
    }

    /// Waits until the queue is empty (everything delivered or bounced).
    pub fn wait_queue_empty(&self) {
        eventually("the sender's queue to empty", || {
            self.queue().is_empty().then_some(())
        });
    }

    /// Sends one message by SMTP to this instance's smtpd and asserts it was queued.
    pub fn submit(&self, from: &str, to: &str, body: &str) {
        let (mut c, greeting) = SmtpClient::connected(self.addr);
        assert_eq!(greeting.code, 220, "{greeting:?}");
        assert_eq!(c.cmd("EHLO submitter.test").code, 250);
        let replies = c.mail(from, &[to], body);
        let last = replies.last().unwrap();
        assert_eq!(last.code, 250, "submission refused: {replies:?}");
        c.cmd("QUIT");
    }

    /// Changes `main.cf` settings (`postconf -e`) and reloads: new sessions see them (an MX
    /// whose certificate changes, or that stops offering STARTTLS).
    pub fn reconfigure(&self, settings: &[(&str, &str)]) {
        for (key, value) in settings {
            let out = Command::new(require_program("postconf"))
                .arg("-c")
                .arg(&self.conf)
                .arg("-e")
                .arg(format!("{key}={value}"))
                .output()
                .expect("run postconf");
            assert!(out.status.success(), "postconf -e {key}={value}: {out:?}");
        }
        let out = Command::new(require_program("postfix"))
            .arg("-c")
            .arg(&self.conf)
            .arg("reload")
            .output()
            .expect("run postfix reload");
        assert!(out.status.success(), "postfix reload: {out:?}");
    }

    /// Waits for a line in the maillog containing `needle`.
    pub fn wait_maillog(&self, needle: &str) -> String {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("{needle:?} in the postfix maillog"), || {
                self.maillog()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            })
        }));
        found.unwrap_or_else(|_| panic!("{needle:?} never logged; maillog:\n{}", self.maillog()))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(require_program("postfix"))
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
        if std::thread::panicking() {
            eprintln!(
                "---- postfix {} maillog ----\n{}",
                self.dir.display(),
                self.maillog()
            );
        }
    }
}

fn postfix_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postfix")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("the postfix package creates a postfix user")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postfix");
}
