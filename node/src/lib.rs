//! The `stella-signer` daemon.
//!
//! Composition root: [`app::build`] turns a [`config::Config`] into a running HTTP server with
//! its audit log and keys. Request handling is split into
//! - `http`: actix-web handlers (a few lines each), extractors, middleware, problem+json edge,
//! - `admission`: OpToks, DPoP and mTLS binding, PoE through the entitlement-cache actor, plans,
//! - `pipeline`: the signing decision logic, free of I/O and directly testable,
//! - `signing`: the service that routes to the leader and runs reserve → sign → audit there,
//! - `session`: one supervised actor per signing request on the leader,
//! - `ledger`: the quota-ledger actor that batches commands into Raft proposals (group commit).

pub mod admission;
pub mod app;
pub mod attempts;
pub mod audit_reads;
pub mod backends;
pub mod changes;
pub mod clock;
pub mod config;
pub mod dev;
mod error;
pub mod export;
pub mod fallback;
pub mod fuzzing;
pub mod http;
pub mod http_client;
pub mod key_admin;
pub mod key_policy;
pub mod key_registry;
pub mod keyless;
pub mod keys;
pub mod kms;
pub mod ledger;
pub mod pipeline;
pub mod plan;
pub mod readiness;
pub mod release_trust;
pub mod router;
pub mod secret_files;
pub mod session;
pub mod shedding;
pub mod signing;
pub mod supervise;
pub mod telemetry;
pub mod threshold;
pub mod transparency;

pub use error::Error;
