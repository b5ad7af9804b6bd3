//! TLS reporting (RFC 8460): reports built from the session results (`tlsrpt`, pure), a day's
//! reports stored and delivered (`day`), one delivery to one destination (`deliver`), and the
//! running proxy's daily schedule (`schedule`).

pub mod day;
pub mod deliver;
pub mod received;
pub mod schedule;
pub mod tlsrpt;
