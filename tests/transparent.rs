//! `client_address = "transparent"` (issue 13, point 1): the backend connection is made from the
//! client's own address, over IPv4 and IPv6, in three network namespaces joined by veth pairs
//! (client — appliance — backend, on separate networks, no forwarding on the appliance), with
//! the policy routing the README documents (an nft `socket transparent` mark and a local route
//! for it). A real Postfix logs the client's address; without the capability the proxy exits 1
//! naming the listener and the capability.

mod common;

use common::backend::EhloMode;
use common::peers::run_with_deadline;
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

/// Set in the copy of the test that runs inside the backend's namespace; the value names the
/// namespaces: `CLIENT PROXY`.
const NETNS_MARKER: &str = "STARTTLS_PROXY_TEST_TRANSPARENT_NETNS";

const CLIENT_V4: &str = "10.61.0.2";
const PROXY_CLIENT_SIDE_V4: &str = "10.61.0.1";
const BACKEND_V4: &str = "10.62.0.2";
const CLIENT_V6: &str = "fd61::2";
const PROXY_CLIENT_SIDE_V6: &str = "fd61::1";
const BACKEND_V6: &str = "fd62::2";

/// The namespaces and veth pairs of one test run; deleted on drop (which removes the veths).
struct Namespaces {
    client: String,
    proxy: String,
    backend: String,
}

impl Namespaces {
    /// `nft`: the appliance's ruleset (the README's recipe for the mode under test).
    fn create(nft: &str) -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces {
            client: format!("stp{pid}c"),
            proxy: format!("stp{pid}p"),
            backend: format!("stp{pid}b"),
        };
        for name in [&ns.client, &ns.proxy, &ns.backend] {
            run_ok("ip", &["netns", "add", name]);
        }
        let (vc, vp1, vp2, vb) = (
            format!("stc{pid}"),
            format!("stp{pid}a"),
            format!("stp{pid}z"),
            format!("stb{pid}"),
        );
        run_ok(
            "ip",
            &["link", "add", &vc, "type", "veth", "peer", "name", &vp1],
        );
        run_ok(
            "ip",
            &["link", "add", &vp2, "type", "veth", "peer", "name", &vb],
        );
        run_ok("ip", &["link", "set", &vc, "netns", &ns.client]);
        run_ok("ip", &["link", "set", &vp1, "netns", &ns.proxy]);
        run_ok("ip", &["link", "set", &vp2, "netns", &ns.proxy]);
        run_ok("ip", &["link", "set", &vb, "netns", &ns.backend]);
        let inside = |name: &str, args: &[&str]| {
            let mut all = vec!["netns", "exec", name, "ip"];
            all.extend_from_slice(args);
            run_ok("ip", &all);
        };
        // Client: its own network, everything else through the appliance.
        inside(&ns.client, &["link", "set", "lo", "up"]);
        inside(
            &ns.client,
            &["addr", "add", &format!("{CLIENT_V4}/24"), "dev", &vc],
        );
        inside(
            &ns.client,
            &[
                "-6",
                "addr",
                "add",
                &format!("{CLIENT_V6}/64"),
                "dev",
                &vc,
                "nodad",
            ],
        );
        inside(&ns.client, &["link", "set", &vc, "up"]);
        inside(
            &ns.client,
            &["route", "add", "default", "via", PROXY_CLIENT_SIDE_V4],
        );
        inside(
            &ns.client,
            &["-6", "route", "add", "default", "via", PROXY_CLIENT_SIDE_V6],
        );
        // Backend: its own network; its route to clients passes the appliance.
        inside(&ns.backend, &["link", "set", "lo", "up"]);
        inside(
            &ns.backend,
            &["addr", "add", &format!("{BACKEND_V4}/24"), "dev", &vb],
        );
        inside(
            &ns.backend,
            &[
                "-6",
                "addr",
                "add",
                &format!("{BACKEND_V6}/64"),
                "dev",
                &vb,
                "nodad",
            ],
        );
        inside(&ns.backend, &["link", "set", &vb, "up"]);
        inside(
            &ns.backend,
            &["route", "add", "default", "via", "10.62.0.1"],
        );
        inside(
            &ns.backend,
            &["-6", "route", "add", "default", "via", "fd62::1"],
        );
        // Appliance: both networks, no forwarding; the README's policy routing.
        inside(&ns.proxy, &["link", "set", "lo", "up"]);
        inside(
            &ns.proxy,
            &[
                "addr",
                "add",
                &format!("{PROXY_CLIENT_SIDE_V4}/24"),
                "dev",
                &vp1,
            ],
        );
        inside(
            &ns.proxy,
            &[
                "-6",
                "addr",
                "add",
                &format!("{PROXY_CLIENT_SIDE_V6}/64"),
                "dev",
                &vp1,
                "nodad",
            ],
        );
        inside(&ns.proxy, &["addr", "add", "10.62.0.1/24", "dev", &vp2]);
        inside(
            &ns.proxy,
            &["-6", "addr", "add", "fd62::1/64", "dev", &vp2, "nodad"],
        );
        inside(&ns.proxy, &["link", "set", &vp1, "up"]);
        inside(&ns.proxy, &["link", "set", &vp2, "up"]);
        inside(&ns.proxy, &["rule", "add", "fwmark", "1", "lookup", "100"]);
        inside(
            &ns.proxy,
            &[
                "route",
                "add",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "100",
            ],
        );
        inside(
            &ns.proxy,
            &["-6", "rule", "add", "fwmark", "1", "lookup", "100"],
        );
        inside(
            &ns.proxy,
            &[
                "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100",
            ],
        );
        let rules = std::env::temp_dir().join(format!("starttls-proxy-transparent-{pid}.nft"));
        std::fs::write(&rules, nft).unwrap();
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                &ns.proxy,
                "nft",
                "-f",
                rules.to_str().unwrap(),
            ],
        );
        let _ = std::fs::remove_file(&rules);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.client, &self.proxy, &self.backend] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The README's rule: replies addressed to a client, arriving for one of our transparent
/// sockets, are marked so that policy routing delivers them locally.
const TRANSPARENT_NFT: &str = "table inet starttls_proxy_transparent {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1
  }
}
";

#[test]
fn transparent_backend_connections_come_from_the_client_in_network_namespaces() {
    if let Some(names) = std::env::var_os(NETNS_MARKER) {
        let names = names.to_string_lossy().into_owned();
        let (client, proxy) = names.split_once(' ').expect("CLIENT PROXY");
        return scenario(client, proxy);
    }
    run_in_backend_namespace(
        TRANSPARENT_NFT,
        "transparent_backend_connections_come_from_the_client_in_network_namespaces",
    );
}

/// Builds the namespaces with `nft` on the appliance and re-runs `test` inside the backend's.
fn run_in_backend_namespace(nft: &str, test: &str) {
    for program in ["ip", "nft", "postfix", "swaks", "openssl"] {
        require_program(program);
    }
    let ns = Namespaces::create(nft);
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.backend])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_MARKER, format!("{} {}", ns.client, ns.proxy))
        .output()
        .expect("run the namespace half");
    common::netns::assert_half_passed(&out);
}

/// Inside the backend's namespace: Postfix (IPv4) and a recording backend (IPv6) here, the
/// proxy in `proxy_ns`, swaks in `client_ns`.
fn scenario(client_ns: &str, proxy_ns: &str) {
    let dir = TempDir::new("transparent");
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf("mx", &["mx.test"]);
    let backend_v4: Ipv4Addr = BACKEND_V4.parse().unwrap();
    let postfix = Postfix::start_configured(
        dir.path(),
        "legacy",
        backend_v4,
        Role::Backend { tls: None },
        // No reverse look-ups: there is no DNS in these namespaces.
        "smtpd_peername_lookup = no\ninet_interfaces = all\n",
    );
    let recorder = FakeBackend::start_at(
        SocketAddr::new(BACKEND_V6.parse().unwrap(), 2525),
        EhloMode::Extensions(vec!["PIPELINING".into()]),
    );
    let config = format!(
        r#"hostname = "proxy.test"
state_directory = {state:?}
[tls]
certificate = {cert:?}
private_key = {key:?}
[[inbound]]
name = "v4"
listen = "{PROXY_CLIENT_SIDE_V4}:25"
backend = "{postfix}"
client_address = "transparent"
[[inbound]]
name = "v6"
listen = "[{PROXY_CLIENT_SIDE_V6}]:25"
backend = "{recorder}"
client_address = "transparent"
"#,
        state = dir.join("state").display().to_string(),
        cert = leaf.cert.display().to_string(),
        key = leaf.key.display().to_string(),
        postfix = postfix.addr,
        recorder = recorder.addr,
    );
    let path = dir.join("starttls-proxy.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = Proxy::start_wrapped(&["ip", "netns", "exec", proxy_ns], &path, false);

    // IPv4, over STARTTLS, to Postfix: it logs and writes the client's own address.
    let run = swaks_in(
        client_ns,
        PROXY_CLIENT_SIDE_V4,
        &["--tls", "--header", "Subject: transparent v4"],
    );
    assert_eq!(run.code, 0, "swaks over IPv4:\n{}", run.all());
    let mail = postfix.wait_delivered(1);
    assert!(
        mail[0].contains(&format!("(unknown [{CLIENT_V4}])")),
        "Postfix did not see the client {CLIENT_V4}:\n{}",
        mail[0]
    );
    postfix.wait_maillog(&format!("connect from unknown[{CLIENT_V4}]"));
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["client_address"], "transparent", "{session:?}");
    assert!(
        session["client"].starts_with(&format!("{CLIENT_V4}:")),
        "{session:?}"
    );

    // IPv6 to the recording backend, with openssl's STARTTLS client (swaks needs a Perl module
    // for IPv6): the connection the backend accepted came from the client.
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", client_ns])
        .arg(require_program("openssl"))
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-ign_eof",
            "-connect",
        ])
        .arg(format!("[{PROXY_CLIENT_SIDE_V6}]:25"));
    let run = run_with_deadline(command, b"EHLO client.test\nQUIT\n");
    assert!(
        run.stdout.contains("221"),
        "openssl over IPv6 did not finish its session:\n{}",
        run.all()
    );
    let peers = recorder.peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].ip().to_string(), CLIENT_V6, "{peers:?}");
    let session = proxy.wait_sessions(2).swap_remove(1);
    assert!(
        session["client"].starts_with(&format!("[{CLIENT_V6}]:")),
        "{session:?}"
    );
}

fn swaks_in(namespace: &str, server: &str, args: &[&str]) -> common::peers::Run {
    swaks_to(namespace, server, 25, args)
}

fn swaks_to(namespace: &str, server: &str, port: u16, args: &[&str]) -> common::peers::Run {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace])
        .arg(require_program("swaks"))
        .args([
            "--server",
            server,
            "--port",
            &port.to_string(),
            "--timeout",
            "15",
        ])
        .args(["--from", "sender@partner.example"])
        .args(["--to", &format!("user@{MAIL_DOMAIN}")])
        .args(args);
    run_with_deadline(command, b"")
}

/// The README's inline recipe: port-2525 connections passing the appliance (to the backend's
/// network) are handed to the proxy's transparent listeners (10025 for IPv4, 10026 for IPv6),
/// and the replies of its transparent backend connections are delivered locally.
const TPROXY_NFT: &str = "table inet starttls_proxy_tproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    meta nfproto ipv4 tcp dport 2525 tproxy ip to :10025 meta mark set 1 accept
    meta nfproto ipv6 tcp dport 2525 tproxy ip6 to :10026 meta mark set 1 accept
  }
}
";

#[test]
fn tproxy_interception_relays_each_session_to_its_original_destination() {
    if let Some(names) = std::env::var_os(NETNS_MARKER) {
        let names = names.to_string_lossy().into_owned();
        let (client, proxy) = names.split_once(' ').expect("CLIENT PROXY");
        return tproxy_scenario(client, proxy);
    }
    run_in_backend_namespace(
        TPROXY_NFT,
        "tproxy_interception_relays_each_session_to_its_original_destination",
    );
}

/// Inside the backend's namespace: the client addresses the backend itself; the appliance on
/// the wire (no forwarding) intercepts, offers STARTTLS, and relays to where it was going.
fn tproxy_scenario(client_ns: &str, proxy_ns: &str) {
    let dir = TempDir::new("tproxy");
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf("mx", &["mx.test"]);
    let postfix = Postfix::start_configured(
        dir.path(),
        "legacy",
        BACKEND_V4.parse().unwrap(),
        Role::Backend { tls: None },
        "smtpd_peername_lookup = no\ninet_interfaces = all\n",
    );
    let recorder = FakeBackend::start_at(
        SocketAddr::new(BACKEND_V6.parse().unwrap(), 2525),
        EhloMode::Extensions(vec!["PIPELINING".into()]),
    );
    let config = format!(
        r#"hostname = "inline.proxy.test"
state_directory = {state:?}
[tls]
certificate = {cert:?}
private_key = {key:?}
[[inbound]]
name = "inline"
listen = "0.0.0.0:10025"
interception = "tproxy"
backend = "original-destination"
client_address = "transparent"
[[inbound]]
name = "inline6"
listen = "[::]:10026"
interception = "tproxy"
backend = "original-destination"
client_address = "transparent"
"#,
        state = dir.join("state").display().to_string(),
        cert = leaf.cert.display().to_string(),
        key = leaf.key.display().to_string(),
    );
    let path = dir.join("starttls-proxy.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = Proxy::start_wrapped(&["ip", "netns", "exec", proxy_ns], &path, false);

    // The client talks to the backend's own address; the proxy answers on the wire.
    let run = swaks_to(
        client_ns,
        BACKEND_V4,
        2525,
        &["--tls", "--header", "Subject: intercepted v4"],
    );
    assert_eq!(
        run.code,
        0,
        "swaks to the backend's address:\n{}",
        run.all()
    );
    let mail = postfix.wait_delivered(1);
    assert!(
        mail[0].contains(&format!("(unknown [{CLIENT_V4}])")),
        "Postfix did not see the client {CLIENT_V4}:\n{}",
        mail[0]
    );
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["listener"], "inline", "{session:?}");
    assert_eq!(session["backend"], postfix.addr.to_string(), "{session:?}");
    assert_eq!(session["tls"], "yes", "{session:?}");

    // IPv6 the same way, to the recording backend.
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", client_ns])
        .arg(require_program("openssl"))
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-ign_eof",
            "-connect",
        ])
        .arg(format!("[{BACKEND_V6}]:2525"));
    let run = run_with_deadline(command, b"EHLO client.test\nQUIT\n");
    assert!(
        run.stdout.contains("221"),
        "openssl over IPv6:\n{}",
        run.all()
    );
    let peers = recorder.peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].ip().to_string(), CLIENT_V6, "{peers:?}");

    // Loop guard: a connection addressed to the proxy's own listener is refused without
    // connecting anywhere.
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", client_ns])
        .arg(require_program("swaks"))
        .args([
            "--server",
            PROXY_CLIENT_SIDE_V4,
            "--port",
            "10025",
            "--timeout",
            "15",
        ])
        .args(["--quit-after", "EHLO"]);
    let run = run_with_deadline(command, b"");
    assert!(
        run.stdout.contains("554 5.4.6"),
        "no loop-guard refusal:\n{}",
        run.all()
    );
    proxy.wait_event("loop_guard", &[("listener", "inline")]);
    let from_client = format!(": connect from unknown[{CLIENT_V4}]");
    let connects = postfix.maillog().matches(&from_client).count();
    assert_eq!(connects, 1, "{}", postfix.maillog());
}

/// Outbound: the legacy MTA's port-25 connections passing the appliance go to the proxy's
/// transparent-mode listener.
const TPROXY_OUTBOUND_NFT: &str = "table inet starttls_proxy_tproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    meta nfproto ipv4 tcp dport 25 tproxy ip to :10027 meta mark set 1 accept
  }
}
";

#[test]
fn tproxy_interception_in_outbound_transparent_mode_upgrades_to_the_mx() {
    if let Some(names) = std::env::var_os(NETNS_MARKER) {
        let names = names.to_string_lossy().into_owned();
        let (client, proxy) = names.split_once(' ').expect("CLIENT PROXY");
        return tproxy_outbound_scenario(client, proxy);
    }
    run_in_backend_namespace(
        TPROXY_OUTBOUND_NFT,
        "tproxy_interception_in_outbound_transparent_mode_upgrades_to_the_mx",
    );
}

/// Inside the MX's namespace: the legacy MTA (client namespace) sends in plaintext to the MX's
/// address; the appliance intercepts and delivers with STARTTLS.
fn tproxy_outbound_scenario(mta_ns: &str, proxy_ns: &str) {
    let dir = TempDir::new("tproxy-out");
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf("mx", &["mx.bank.test"]);
    let mx = Postfix::start_configured(
        dir.path(),
        "mx",
        BACKEND_V4.parse().unwrap(),
        Role::Mx {
            domains: &["bank.test"],
            tls: Some(&leaf),
        },
        "smtpd_peername_lookup = no\ninet_interfaces = all\n",
    );
    let config = format!(
        r#"hostname = "relay.proxy.test"
state_directory = {state:?}
[[outbound]]
name = "intercept"
listen = "0.0.0.0:10027"
mode = "transparent"
interception = "tproxy"
[outbound_policy]
default = "opportunistic"
mta_sts = false
trust_anchors = {ca:?}
"#,
        state = dir.join("state").display().to_string(),
        ca = ca.path.display().to_string(),
    );
    let path = dir.join("starttls-proxy.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = Proxy::start_wrapped(&["ip", "netns", "exec", proxy_ns], &path, false);

    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", mta_ns])
        .arg(require_program("swaks"))
        .args(["--server", BACKEND_V4, "--port", "25", "--timeout", "15"])
        .args(["--from", "alice@legacy.test", "--to", "bob@bank.test"])
        .args(["--header", "Subject: intercepted outbound"]);
    let run = run_with_deadline(command, b"");
    assert_eq!(run.code, 0, "swaks from the legacy MTA:\n{}", run.all());
    let mail = mx.wait_delivered(1);
    assert!(mail[0].contains("intercepted outbound"), "{}", mail[0]);
    assert!(
        mail[0].contains("using TLSv1."),
        "not upgraded:\n{}",
        mail[0]
    );
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["listener"], "intercept", "{session:?}");
    assert!(
        session["client"].starts_with(&format!("{CLIENT_V4}:")),
        "{session:?}"
    );

    // Loop guard: straight to the proxy's own listener.
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", mta_ns])
        .arg(require_program("swaks"))
        .args([
            "--server",
            PROXY_CLIENT_SIDE_V4,
            "--port",
            "10027",
            "--timeout",
            "15",
        ])
        .args(["--quit-after", "CONNECT"]);
    let run = run_with_deadline(command, b"");
    assert!(
        run.stdout.contains("554 5.4.6"),
        "no loop-guard refusal:\n{}",
        run.all()
    );
    proxy.wait_event("loop_guard", &[("listener", "intercept")]);
}

#[test]
fn transparent_without_the_capability_exits_1_naming_listener_and_capability() {
    let (dir, _ca, leaf) = setup("transparent-cap");
    let config = ProxyBuilder::new(dir.path(), &leaf, dead_addr())
        .listener_key("client_address", "\"transparent\"")
        .write_config();
    // Root without CAP_NET_ADMIN and CAP_NET_RAW: dropped from the bounding set.
    let out = Command::new(require_program("setpriv"))
        .args(["--bounding-set=-net_admin,-net_raw"])
        .arg(common::proxy::binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("listener mx") && stderr.contains("CAP_NET_ADMIN"),
        "{stderr}"
    );
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(require_program(program))
        .args(args)
        .output()
        .expect("run program");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
