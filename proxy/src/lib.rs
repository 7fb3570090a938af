//! Switchyard's front doors and the `switchyard` binary's building blocks.
//!
//! Data flows one way: [`pgwire`] (front door) → planner → safety →
//! connectors → origins; Arrow batches stream back.

pub mod demo;
pub mod pgwire;
pub mod server;

pub use server::{start, Server, StartError};
