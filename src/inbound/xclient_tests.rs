use super::*;

fn ehlo(lines: &[&str]) -> Reply {
    Reply {
        code: 250,
        lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
    }
}

fn text(line: Option<Vec<u8>>) -> Option<String> {
    line.map(|l| String::from_utf8(l).unwrap())
}

#[test]
fn xclient_command_table() {
    let postfix = ehlo(&[
        "backend.example",
        "PIPELINING",
        "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
        "8BITMIME",
    ]);
    let v4: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:40001".parse().unwrap();
    // (what, the backend's EHLO reply, client, its HELO, EHLO or HELO, the command)
    type Case<'a> = (&'a str, Reply, SocketAddr, &'a [u8], bool, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "postfix offers all",
            postfix.clone(),
            v4,
            b"client.example",
            true,
            Some("XCLIENT ADDR=192.0.2.7 PORT=40000 HELO=client.example NAME=[UNAVAILABLE] PROTO=ESMTP"),
        ),
        (
            "ipv6 and HELO",
            postfix.clone(),
            v6,
            b" [2001:db8::7] ",
            false,
            Some("XCLIENT ADDR=IPV6:2001:db8::7 PORT=40001 HELO=[2001:db8::7] NAME=[UNAVAILABLE] PROTO=SMTP"),
        ),
        (
            "xtext of a hostile HELO",
            ehlo(&["b", "XCLIENT ADDR HELO"]),
            v4,
            b"a+b=c d\xff",
            true,
            Some("XCLIENT ADDR=192.0.2.7 HELO=a+2Bb+3Dc+20d+FF"),
        ),
        (
            "empty HELO left out",
            ehlo(&["b", "xclient addr helo"]),
            v4,
            b"",
            true,
            Some("XCLIENT ADDR=192.0.2.7"),
        ),
        ("not offered", ehlo(&["b", "PIPELINING"]), v4, b"c", true, None),
        ("no ADDR", ehlo(&["b", "XCLIENT NAME HELO"]), v4, b"c", true, None),
        (
            "greeting line is not a keyword",
            ehlo(&["XCLIENT ADDR"]),
            v4,
            b"c",
            true,
            None,
        ),
        (
            "not a 250",
            Reply {
                code: 502,
                lines: vec![b"XCLIENT ADDR".to_vec()],
            },
            v4,
            b"c",
            true,
            None,
        ),
    ];
    for (what, reply, client, helo, esmtp, want) in cases {
        assert_eq!(
            text(command(&reply, client, helo, esmtp)).as_deref(),
            want,
            "{what}"
        );
    }
}

#[test]
fn the_client_is_not_shown_xclient_or_xforward() {
    let reply = ehlo(&[
        "XCLIENT.example",
        "XCLIENT ADDR",
        "PIPELINING",
        "XFORWARD NAME ADDR",
    ]);
    let shown = ehlo::without(&reply, &[b"XCLIENT", b"XFORWARD"]);
    assert_eq!(
        shown.lines,
        vec![b"XCLIENT.example".to_vec(), b"PIPELINING".to_vec()]
    );
}
