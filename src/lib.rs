//! gridraft: a Raft-replicated, highly available SessionMap for Selenium Grid 4.
//!
//! # Layout
//! - [`session`], [`json`]: the Grid's session type, its parsing and Selenium-exact JSON output.
//! - [`map`]: the replicated session map, pure and deterministic: the commands it applies, its
//!   lookups, its snapshot image.
//! - [`store`]: the storage engine: segment-file log with group commit, durable records in sled,
//!   snapshot files.
//! - [`raft`]: the openraft adapters over them: type config, log store, state machine, network.
//! - [`peer`]: the peer protocol between members and its typed client (forwarding, ReadIndex,
//!   admin, CLI, tests).
//! - [`cluster`]: serving on any member: forwarding writes, ReadIndex reads, readiness,
//!   bootstrap, membership, health.
//! - [`events`]: the Selenium Grid event-bus subscriber (libzmq), decoding and de-duplication.
//! - [`api`]: the public Grid listener and the secret-guarded peer listener, served with their
//!   timeouts and connection caps; [`tls`]: the public port's certificates, reloaded on change.
//! - [`mirror`]: write-through copies in Selenium's Postgres and Redis layouts; import/export.
//! - [`backup`]: the online backup file, `gridraft backup` and `gridraft restore`.
//! - [`config`], [`cli`], [`telemetry`]: settings, flags, logs and metrics.
//! - [`member`]: one gridraft member: wiring and shutdown.
pub mod api;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod json;
pub mod map;
pub mod member;
pub mod mirror;
pub mod peer;
pub mod raft;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;
