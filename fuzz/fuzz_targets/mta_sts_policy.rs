//! `parse_policy` on any bytes a policy host could serve (RFC 8461 §3.2), and MX pattern
//! matching on names from the input:
//! - never a panic; a body over the bound, not UTF-8, or breaking the grammar is an error;
//! - an accepted policy keeps its promises: `max_age` within the limit, `mx` patterns present
//!   unless `mode: none`, each lowercase without a trailing dot, a wildcard only as `*.` first;
//! - `allows_mx` follows the one-leftmost-label rule for every pattern it holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use starttls_proxy::policy::mta_sts::{parse_policy, StsMode, MAX_AGE_LIMIT, MAX_POLICY_BYTES};

fuzz_target!(|bytes: &[u8]| {
    // The last line (after a 0xff) is a host name to match; the rest is the body.
    let (body, host) = match bytes.iter().rposition(|&b| b == 0xff) {
        Some(i) => (&bytes[..i], String::from_utf8_lossy(&bytes[i + 1..]).into_owned()),
        None => (bytes, String::new()),
    };
    let Ok(policy) = parse_policy(body) else {
        return;
    };
    assert!(body.len() <= MAX_POLICY_BYTES);
    assert!(std::str::from_utf8(body).is_ok());
    assert!(policy.max_age <= MAX_AGE_LIMIT);
    assert!(policy.mode == StsMode::None || !policy.mx.is_empty());
    for pattern in &policy.mx {
        assert_eq!(*pattern, pattern.to_ascii_lowercase());
        assert!(!pattern.ends_with('.'), "{pattern:?}");
        assert!(!pattern[1..].contains('*'), "{pattern:?}");
        match pattern.strip_prefix("*.") {
            Some(parent) => {
                assert!(policy.allows_mx(&format!("mx.{parent}")), "{pattern:?}");
                assert!(!policy.allows_mx(&format!("a.b.{parent}")) || policy.mx.len() > 1);
            }
            None => {
                assert!(policy.allows_mx(pattern), "{pattern:?}");
                assert!(policy.allows_mx(&format!("{}.", pattern.to_ascii_uppercase())));
            }
        }
    }
    let allowed = policy.allows_mx(&host);
    let by_rule = policy.mx.iter().any(|p| {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(parent) => h
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => *p == h,
        }
    });
    assert_eq!(allowed, by_rule, "{host:?} against {:?}", policy.mx);
});
