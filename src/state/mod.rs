//! Everything the proxy keeps under `state_directory`: session results, the MTA-STS cache, the
//! partner certificate inventory and the MX TLS memory (monitoring); the report ledger as it
//! arrives (DESIGN, "Proposed layout").

pub mod config_history;
pub mod file;
pub mod inventory;
pub mod monitor;
pub mod mta_sts;
pub mod mx_tls;
pub mod received;
pub mod reports;
pub mod results;
