//! Wire types of the Stella Signer HTTP API and a small blocking client.
//!
//! This crate knows JSON shapes, problem codes, HTTP and the client side of DPoP; it knows
//! nothing about signing keys or evidence. Envelopes and bundles travel as opaque JSON values here: the `signer` crate gives
//! them meaning.

pub mod client;
pub mod credentials;
pub mod dpop;
pub mod problem;
pub mod types;

pub use client::{Client, ClientConfig, ClientError};
pub use credentials::{AuthorityClient, Credentials};
pub use problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemCode};
pub use types::*;
