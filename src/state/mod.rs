//! Everything the proxy keeps under `state_directory`: session results today; the MTA-STS
//! cache, report ledger and certificate inventory as they arrive (DESIGN, "Proposed layout").

pub mod mta_sts;
pub mod received;
pub mod reports;
pub mod results;
