//! `Command::parse` on arbitrary lines:
//! - never panics; a MAIL/RCPT domain is non-empty, lowercase, without a trailing dot, and
//!   holds no `@`, `<`, `>` or whitespace (anything else is a mis-parse: it would not match
//!   the listed domain it names, and enforcement would let it through);
//! - the verb and keywords are case-insensitive: a line parses the same upper- or lowercased.

#![no_main]

use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::Command;

fuzz_target!(|line: &[u8]| {
    let command = Command::parse(line);
    let _ = command.ends_dialogue();
    // Only these carry a domain; the catch-all keeps the target building as variants are added.
    match &command {
        Command::Mail(path) | Command::Rcpt(path) => {
            for d in path.domains() {
                check_domain(d, line);
            }
        }
        _ => {}
    }
    assert_eq!(
        Command::parse(&line.to_ascii_uppercase()),
        command,
        "uppercased {line:?}"
    );
    assert_eq!(
        Command::parse(&line.to_ascii_lowercase()),
        command,
        "lowercased {line:?}"
    );
});

fn check_domain(d: &str, line: &[u8]) {
    {
        {
            assert!(!d.is_empty(), "empty domain from {line:?}");
            assert_eq!(
                *d,
                d.to_ascii_lowercase(),
                "domain not lowercased from {line:?}"
            );
            assert!(!d.ends_with('.'), "trailing dot kept from {line:?}");
            assert!(
                !d.bytes()
                    .any(|b| b.is_ascii_whitespace() || b"@<>".contains(&b)),
                "domain {d:?} from {line:?}"
            );
        }
    }
}
