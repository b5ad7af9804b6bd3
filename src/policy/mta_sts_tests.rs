use super::*;

#[test]
fn txt_records_table() {
    let ok: &[(&[&str], &str)] = &[
        (&["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (&["v=STSv1;id=abc"], "abc"),
        (&["v=STSv1 ; id=abc ; "], "abc"),
        (&["v=STSv1; id=abc; ext_1=x.y"], "abc"),
        (&["v=spf1 -all", "v=STSv1; id=1"], "1"),
        (
            &["v=STSv1; id=12345678901234567890123456789012"],
            "12345678901234567890123456789012",
        ),
    ];
    for (txts, id) in ok {
        assert_eq!(
            parse_records(txts.iter().copied()),
            Ok(StsRecord { id: id.to_string() }),
            "{txts:?}"
        );
    }
    let none: &[&[&str]] = &[
        &[],
        &["v=spf1 -all"],
        &["v=STSv10; id=1"],
        &["V=STSv1; id=1"],
    ];
    for txts in none {
        assert_eq!(
            parse_records(txts.iter().copied()),
            Err(StsError::NoRecord),
            "{txts:?}"
        );
    }
    assert_eq!(
        parse_records(["v=STSv1; id=1", "v=STSv1; id=2"]),
        Err(StsError::SeveralRecords(2))
    );
    let invalid: &[&str] = &[
        "v=STSv1",
        "v=STSv1;",
        "v=STSv1; id=",
        "v=STSv1; id=123456789012345678901234567890123",
        "v=STSv1; id=a-b",
        "v=STSv1; id=1; id=2",
        "v=STSv1;; id=1",
        "v=STSv1; id=1; novalue",
        "v=STSv1; id=1; -bad=x",
        "v=STSv1; id=1; x=a b",
        "v=STSv1; id=1; é=x",
    ];
    for txt in invalid {
        assert!(
            matches!(parse_records([*txt]), Err(StsError::Record(_))),
            "{txt:?}: {:?}",
            parse_records([*txt])
        );
    }
}

#[test]
fn policy_files_table() {
    let enforce = StsPolicy {
        mode: StsMode::Enforce,
        max_age: 604800,
        mx: vec!["mx1.example.com".into(), "*.example.net".into()],
    };
    let ok: &[(&str, StsPolicy)] = &[
        (
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
            enforce.clone(),
        ),
        // LF endings, no final newline, blanks around values, an unknown key, a trailing dot.
        (
            "version: STSv1\nmode:enforce\nmx:  MX1.example.com. \nmx: *.example.net\nfuture: x\nmax_age: 604800",
            enforce.clone(),
        ),
        (
            "version: STSv1\nmode: none\nmax_age: 0\n",
            StsPolicy {
                mode: StsMode::None,
                max_age: 0,
                mx: vec![],
            },
        ),
        (
            "version: STSv1\nmode: testing\nmx: mx.t.example\nmax_age: 31557600\n",
            StsPolicy {
                mode: StsMode::Testing,
                max_age: MAX_AGE_LIMIT,
                mx: vec!["mx.t.example".into()],
            },
        ),
    ];
    for (body, expected) in ok {
        assert_eq!(
            parse_policy(body.as_bytes()).as_ref(),
            Ok(expected),
            "{body:?}"
        );
    }
    let invalid: &[&[u8]] = &[
        b"",
        b"mode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999999\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nmode: testing\n",
        b"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\ngarbage line\n",
        b"version: STSv1\nmode: enforce\nmx: a.\xff.example\nmax_age: 1\n",
        b"<html><body>not a policy</body></html>",
    ];
    for body in invalid {
        assert!(
            matches!(parse_policy(body), Err(StsError::Policy(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(body),
            parse_policy(body)
        );
    }
    let mut huge = b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n".to_vec();
    huge.resize(MAX_POLICY_BYTES + 1, b'\n');
    assert!(matches!(parse_policy(&huge), Err(StsError::Policy(_))));
}

#[test]
fn mx_patterns_match_one_leftmost_label() {
    let policy = StsPolicy {
        mode: StsMode::Enforce,
        max_age: 1,
        mx: vec!["mx.example.com".into(), "*.example.net".into()],
    };
    for (host, allowed) in [
        ("mx.example.com", true),
        ("MX.Example.COM.", true),
        ("mx2.example.com", false),
        ("a.example.net", true),
        ("a.b.example.net", false),
        ("example.net", false),
        (".example.net", false),
        ("aexample.net", false),
    ] {
        assert_eq!(policy.allows_mx(host), allowed, "{host}");
    }
}
