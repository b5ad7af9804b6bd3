//! HAProxy as the L4 balancer in front of proxy nodes (`mode tcp`, a PROXY header towards the
//! nodes, optionally an HTTP health check on each node's admin `/healthz`), run in the
//! foreground from its own configuration file.

use super::{eventually, require_program, unique_ip};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One server line of the balancer's backend.
pub struct Node {
    /// Where the balancer sends SMTP sessions (a proxy node's inbound listener).
    pub smtp: SocketAddr,
    /// The node's admin endpoint: when set, HAProxy checks `GET /healthz` there.
    pub admin: Option<SocketAddr>,
    /// Without `admin`: a TCP check on the SMTP port itself, with `check-send-proxy` (a v2
    /// `LOCAL` header under `send-proxy-v2`).
    pub check_smtp: bool,
}

/// A running `haproxy -db -f CFG`; killed on drop.
pub struct Haproxy {
    child: Child,
    /// Where clients connect.
    pub front: SocketAddr,
    /// The address HAProxy connects to the nodes from (the nodes' `proxy_protocol_from`).
    pub source: Ipv4Addr,
    pub config: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    /// `send_proxy`: `"send-proxy"` (v1) or `"send-proxy-v2"`; `source`: the address it
    /// connects to the nodes from (chosen first, so the nodes can trust it before it starts).
    pub fn start(dir: &Path, send_proxy: &str, source: Ipv4Addr, nodes: &[Node]) -> Haproxy {
        let haproxy = require_program("haproxy");
        let front = SocketAddr::from((unique_ip(), 2525));
        // Readiness is probed here, not on `front`: a probe there would reach a node.
        let monitor = SocketAddr::from((unique_ip(), 8404));
        let mut servers = String::new();
        for (i, node) in nodes.iter().enumerate() {
            servers += &format!(
                "    server node{i} {} {send_proxy} source {source}",
                node.smtp
            );
            if let Some(admin) = node.admin {
                // Fast checks so a draining node leaves the rotation within a few hundred ms.
                servers += &format!(
                    " check addr {} port {} inter 200ms fall 1 rise 2",
                    admin.ip(),
                    admin.port()
                );
            } else if node.check_smtp {
                servers += " check check-send-proxy inter 200ms";
            }
            servers += "\n";
        }
        let check = match nodes.iter().any(|n| n.admin.is_some()) {
            true => "    option httpchk GET /healthz\n    http-check expect status 200\n",
            false => "",
        };
        let config_text = format!(
            "global\n    maxconn 256\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    \
             timeout server 120s\n    retries 3\n    option redispatch\n\n\
             frontend monitor\n    mode http\n    bind {monitor}\n    monitor-uri /ready\n\n\
             frontend smtp\n    bind {front}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n{check}{servers}"
        );
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, &config_text).expect("write haproxy.cfg");
        let log = dir.join("haproxy.log");
        let check = Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c: {}{}\n{config_text}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("haproxy log"))
            .spawn()
            .expect("spawn haproxy");
        let haproxy = Haproxy {
            child,
            front,
            source,
            config,
            log,
        };
        eventually("haproxy to accept connections", || {
            std::net::TcpStream::connect(monitor).ok()
        });
        haproxy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- haproxy log ----\n{}", self.log());
        }
    }
}
