//! Switchyard's front doors and the `switchyard` binary's building blocks.
//!
//! Data flows one way: [`wire`] (pgwire front door) → planner → safety →
//! connectors → origins; Arrow batches stream back.

pub mod demo;
pub mod server;
pub mod wire;

pub use server::{start, Server, StartError};
