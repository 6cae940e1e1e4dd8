//! Wire types of the Stella Signer HTTP API and a small blocking client.
//!
//! This crate knows JSON shapes, problem codes and HTTP; it knows nothing about keys or
//! signing. Envelopes and bundles travel as opaque JSON values here: the `signer` crate gives
//! them meaning.

pub mod client;
pub mod credentials;
pub mod problem;
pub mod types;

pub use client::{Client, ClientConfig, ClientError};
pub use credentials::Credentials;
pub use problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemCode};
pub use types::*;
