//! Commands that read what the proxy kept rather than serve mail: coverage today; evidence and
//! tls-report as they land (DESIGN, "Proposed layout").

pub mod coverage;
pub mod policy;
