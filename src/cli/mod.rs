//! Commands that read what the proxy kept rather than serve mail: coverage, evidence, policy,
//! tls-report (DESIGN, "Proposed layout").

pub mod coverage;
pub mod evidence;
pub mod policy;
pub mod tls_report;
