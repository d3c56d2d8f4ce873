//! gridraft: a Raft-replicated, highly available SessionMap for Selenium Grid 4.
//!
//! # Layout
//! - [`session`], [`json`]: the Grid's session type, its parsing and Selenium-exact JSON output.
//! - [`raft`]: openraft type config, the log store (segment files, sled for the vote), the state
//!   machine and its snapshots, the peer network.
//! - [`cluster`]: serving on any member: forwarding writes, ReadIndex reads, bootstrap, membership.
//! - [`events`]: the Selenium Grid event-bus subscriber (libzmq), decoding and de-duplication.
//! - [`api`]: the public Grid listener and the secret-guarded peer listener, served with their
//!   timeouts and connection caps.
//! - [`client`]: typed client for the peer port (forwarding, admin, CLI, tests).
//! - [`mirror`]: write-through copies in Selenium's Postgres and Redis layouts; import/export.
//! - [`config`], [`cli`], [`telemetry`]: settings, flags, logs and metrics.
//! - [`node`]: wiring and shutdown.
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod events;
pub mod json;
pub mod mirror;
pub mod node;
pub mod raft;
pub mod session;
pub mod telemetry;
