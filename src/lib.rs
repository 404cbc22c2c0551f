//! boxapi: the LAN-only HTTPS measurement API of ISP boxes (ARCEP decision 2019-1410, annex 2).
#![forbid(unsafe_code)]

pub mod auth;
pub mod authz;
pub mod b64;
pub mod card;
pub mod cli;
pub mod config;
pub mod control;
pub mod cors;
pub mod demo;
pub mod der;
pub mod http;
pub mod lan;
pub mod log;
pub mod privs;
pub mod ratelimit;
pub mod server;
pub mod snapshot;
pub mod time;
pub mod tls;
pub mod x509;
