//! Commands that read what the proxy kept rather than serve mail: coverage, tls-report;
//! evidence as it lands (DESIGN, "Proposed layout").

pub mod coverage;
pub mod tls_report;
