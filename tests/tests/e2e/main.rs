//! End-to-end tests, one binary (each test binary links the whole stack): real
//! clients through Switchyard against the real origins `scripts/test` starts.

mod common;

mod cancel;
mod demo;
mod frontdoor;
mod jdbc;
mod live;
mod materialize;
mod mongo;
mod node;
mod origins;
mod psql;
mod python;
mod rbac;
mod redteam;
mod slt;
mod stepgraph;
mod sync;
mod tls;
mod writes;
