//! Discovery: what a recipient domain publishes about its TLS, found before the decision (the
//! decision itself stays pure, in `policy`). DANE first ([`dane`], RFC 7672 §2: the domain's MX
//! records, the hosts' addresses and their TLSA records through the validating resolver), then
//! MTA-STS for the hosts DANE does not cover ([`mta_sts`], RFC 8461 §3, §5).

mod dane;
mod mta_sts;

pub use dane::{
    bogus_mx, dane_for_connected, find_dane, mx_bogus, with_dane, DaneFinding, SkippedHost,
};
pub use mta_sts::{
    spawn_refresh, with_mta_sts, FetchResult, StsDiscovery, StsFinding, FETCH_TIMEOUT, POLICY_PATH,
    REFRESH_INTERVAL,
};
