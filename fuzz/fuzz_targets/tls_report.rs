//! The parser of TLS reports other senders send us (`report::received`), on arbitrary bytes
//! read as each form it takes (the first byte picks: a report e-mail, `.json`, `.json.gz`):
//! - never panics, and stays within its bounds (a gzip bomb ends at the decompressed limit);
//! - a report it accepts says the same after a round trip through our own JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use starttls_proxy::report::received;

fuzz_target!(|data: &[u8]| {
    let Some((&form, bytes)) = data.split_first() else {
        return;
    };
    let name = match form % 3 {
        0 => "report.eml",
        1 => "report.json",
        _ => "report.json.gz",
    };
    if let Ok(report) = received::parse_file(name, bytes) {
        let json = serde_json::to_vec(&report).expect("a parsed report serialises");
        assert_eq!(received::parse_json(&json).as_ref(), Ok(&report));
    }
});
