//! gridraft: a Raft-replicated, highly available SessionMap for Selenium Grid 4.
//!
//! # Layout
//! - [`session`], [`json`]: the Grid's session type, its parsing and Selenium-exact JSON output.
//! - [`raft`]: openraft type config, the sled log store and state machine, the peer network.
pub mod json;
pub mod raft;
pub mod session;
