//! boxapi: the LAN-only HTTPS measurement API of ISP boxes (ARCEP decision 2019-1410, annex 2) —
//! the box daemon. What it shares with the operator's authority lives in `boxapi-core`.
#![forbid(unsafe_code)]

pub mod access;
pub mod activity;
pub mod app;
pub mod card;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod der;
pub mod enrol;
pub mod fleet;
pub mod fleet_poll;
pub mod http;
pub mod lan;
pub mod privs;
pub mod ratelimit;
pub mod server;
pub mod snapshot;
pub mod stream;
pub mod streams;
