//! Library side of the `stella` CLI: evidence inspection that the binary and tests share.

pub mod audit_log;
pub mod evidence;
pub mod offline_kit;
