//! TLS reporting (RFC 8460): reports built from the session results; delivery and the daily
//! schedule join as they land (DESIGN, "Proposed layout").

pub mod tlsrpt;
