//! Integration tests against the real binaries.

mod admission;
mod bad_input;
mod cluster;
mod deploy;
mod dev_node;
mod durability;
mod failover;
mod hsm;
mod independent;
mod key_policy;
mod keyless;
mod keys;
mod kms;
mod openapi;
mod overload;
mod provenance;
mod telemetry;
mod threshold;
mod tls;
mod transparency;
