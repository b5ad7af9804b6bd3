//! Scale-out (issue 13, point 5): two proxy nodes behind a real HAProxy (`mode tcp`,
//! `send-proxy-v2`, `option httpchk GET /healthz` on each node's admin port), a Postfix sender
//! relaying through HAProxy and a Postfix backend. One node is stopped with SIGTERM while mail
//! flows: every message arrives exactly once, and the node that was stopped exits 0.

mod common;

use common::haproxy::{Haproxy, Node};
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;
use std::net::SocketAddr;

const MESSAGES: usize = 30;

#[test]
fn sigterm_on_one_of_two_nodes_behind_haproxy_delivers_every_message_exactly_once() {
    let (dir, _ca, leaf) = setup("scale-out");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let balancer = unique_ip();
    let trusted = format!("[\"{balancer}\"]");
    let node = |name: &str| {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        ProxyBuilder::new(&node_dir, &leaf, backend.addr)
            .listen_on(SocketAddr::from((unique_ip(), 2525)))
            .listener_key("proxy_protocol_from", &trusted)
            .shutdown_grace("60s")
            .start()
    };
    let mut first = node("node1");
    let second = node("node2");
    let haproxy = Haproxy::start(
        dir.path(),
        "send-proxy-v2",
        balancer,
        &[&first, &second].map(|p| Node {
            smtp: p.addr(),
            admin: p.admin,
            check_smtp: false,
        }),
    );
    let sender_ip = unique_ip();
    let sender = Postfix::start(
        dir.path(),
        "sender",
        Role::Sender {
            relayhost: haproxy.front,
            level: "none",
            ca: None,
            bind: Some(sender_ip),
        },
    );
    let submit = |range: std::ops::Range<usize>| {
        for i in range {
            sender.submit(
                "sender@partner.example",
                &format!("user@{MAIL_DOMAIN}"),
                &format!("scale-out message {i} end"),
            );
        }
    };

    submit(0..MESSAGES / 2);
    // Mail is flowing through the first node: stop it now.
    first.wait_sessions(1);
    first.signal("TERM");
    submit(MESSAGES / 2..MESSAGES);

    let delivered = eventually("every message delivered", || {
        sender.flush();
        let mail = backend.delivered();
        (mail.len() >= MESSAGES).then_some(mail)
    });
    for i in 0..MESSAGES {
        let marker = format!("scale-out message {i} end");
        let copies = delivered.iter().filter(|m| m.contains(&marker)).count();
        assert_eq!(copies, 1, "message {i} delivered {copies} times");
    }
    assert_eq!(delivered.len(), MESSAGES, "more messages than were sent");
    sender.wait_queue_empty();

    let status = first.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    // The second node took over: sessions after the stop went there, all from HAProxy, each
    // naming the sender as the client.
    let sessions = second.wait_sessions(1);
    for session in &sessions {
        assert!(
            session["peer"].starts_with(&format!("{balancer}:")),
            "{session:?}"
        );
        assert!(
            session["client"].starts_with(&format!("{sender_ip}:")),
            "{session:?}"
        );
    }
    // And the balancer was told: the stopped node's health check failed.
    eventually("haproxy to take the stopped node out", || {
        haproxy.log().contains("node0 is DOWN").then_some(())
    });
}
