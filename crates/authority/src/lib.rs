//! boxapi-authority: the operator's data-centre server. It issues measurement tools their access
//! tokens (each tool's signed with that tool's own key) and is the home of everything that must
//! never reach a box binary. What it shares with the box lives in `boxapi-core`.
#![forbid(unsafe_code)]

pub mod acme;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod enrol;
pub mod enrol_settings;
pub mod fleet;
pub mod handshake;
pub mod http;
pub mod locator;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod store;
