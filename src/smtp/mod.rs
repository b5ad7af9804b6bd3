//! SMTP wire format: bounded line reading, commands, replies, EHLO rewriting. Never decides policy.

pub mod command;
pub mod data;
pub mod ehlo;
pub mod line;
pub mod reply;

#[cfg(test)]
mod tests;

pub use command::Command;
pub use line::{LineError, LineReader};
pub use reply::Reply;
