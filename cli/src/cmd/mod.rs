//! The `stella` subcommands, one module each, and what they share (`common`).

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod cluster;
pub(crate) mod common;
pub(crate) mod keys;
pub(crate) mod offline_kit;
pub(crate) mod release;
pub(crate) mod sign;
pub(crate) mod trust;
pub(crate) mod verify;
