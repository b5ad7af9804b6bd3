//! The TXT record parsers of discovery: `_mta-sts` (RFC 8461 §3.1) and `_smtp._tls`
//! (RFC 8460 §3), on the TXT strings a name server could return (the input split at 0x00):
//! - never a panic; zero or several records of the version are errors, not a pick;
//! - an accepted MTA-STS record has an id of 1–32 letters and digits;
//! - an accepted TLS-RPT record names at least one `rua`: usable ones are `mailto:` or `https:`,
//!   the others are kept aside (RFC 8460 §3 has unknown schemes ignored).

#![no_main]

use libfuzzer_sys::fuzz_target;
use starttls_proxy::policy::mta_sts;
use starttls_proxy::report::tlsrpt;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let txts: Vec<&str> = text.split('\0').collect();
    let sts_versions = txts
        .iter()
        .filter(|t| t.starts_with("v=STSv1") && mta_sts::parse_record(t).is_ok())
        .count();
    match mta_sts::parse_records(txts.iter().copied()) {
        Ok(record) => {
            assert!((1..=32).contains(&record.id.len()), "{record:?}");
            assert!(record.id.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(sts_versions, 1, "{txts:?}");
        }
        Err(_) => {}
    }
    if let Ok(record) = tlsrpt::parse_records(txts.iter().copied()) {
        assert!(
            !record.rua.is_empty() || !record.ignored.is_empty(),
            "{txts:?}"
        );
        for rua in &record.rua {
            let shown = format!("{rua:?}").to_ascii_lowercase();
            assert!(shown.contains("mailto") || shown.contains("https"), "{rua:?}");
        }
    }
});
