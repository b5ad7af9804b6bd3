//! Tests that need a network namespace of their own (nft rules, fixed ports): the test re-runs
//! itself under `unshare --net`, where [`MARKER`] makes it play its scenario.
//!
//! ```ignore
//! #[test]
//! fn my_test() {
//!     if netns::inside() { return scenario(); }
//!     netns::rerun_inside("my_test");
//! }
//! ```

use super::{require_program, SmtpClient};
use std::net::{Ipv4Addr, SocketAddr};

/// Set in the copy of the test that runs inside the namespace.
pub const MARKER: &str = "STARTTLS_PROXY_TEST_NETNS";

/// Whether this process is the copy inside the namespace.
pub fn inside() -> bool {
    std::env::var_os(MARKER).is_some()
}

/// Runs the test `name` of this binary again in a fresh network namespace and fails with its
/// output if it failed (or did not run).
pub fn rerun_inside(name: &str) {
    let unshare = require_program("unshare");
    require_program("nft");
    require_program("ip");
    let out = std::process::Command::new(unshare)
        .args(["--net", "--"])
        .arg(std::env::current_exe().expect("test binary path"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(MARKER, "1")
        .output()
        .expect("run the namespace half");
    assert_half_passed(&out);
}

/// The namespace half ran its one test and it passed; its output otherwise.
pub fn assert_half_passed(out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "namespace half failed:\n{all}");
    assert!(
        all.contains("1 passed"),
        "namespace half did not run:\n{all}"
    );
}

/// Inside, first: the namespace's loopback is down until brought up.
pub fn loopback_up() {
    run_ok("ip", &["link", "set", "lo", "up"]);
}

/// Inside: the MTA's port-25 traffic from `sender` redirected to `port` (the proxy's own
/// connections, from other addresses, are left alone).
pub fn redirect_port_25(sender: Ipv4Addr, port: u16, scratch: &std::path::Path) {
    let rules = scratch.join("rules.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip starttls_test {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n    ip saddr {sender} tcp dport 25 redirect to :{port}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    run_ok("nft", &["-f", rules.to_str().unwrap()]);
}

pub fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(require_program(program))
        .args(args)
        .output()
        .expect("run program");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects from `source` (so the nft rule for the MTA's address applies) and reads the
/// greeting.
pub fn connect_from(source: Ipv4Addr, to: SocketAddr) -> SmtpClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&to.into()).expect("connect (intercepted)");
    let mut client = SmtpClient::from_stream(socket.into());
    let greeting = client.reply();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    client
}
