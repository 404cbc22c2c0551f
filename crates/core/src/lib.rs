//! boxapi-core: what the box daemon and the operator's authority both speak and share — access
//! tokens and JWKs, the tool registry (configured and operator-signed), the TOML configuration,
//! CORS rules, the token endpoint's grant logic, TLS identities, the control protocol, logging.
#![forbid(unsafe_code)]

pub mod auth;
pub mod authz;
pub mod b64;
pub mod cert;
pub mod config;
pub mod control;
pub mod cors;
pub mod daemon;
pub mod der;
pub mod fair;
pub mod files;
pub mod grants;
pub mod guard;
pub mod json;
pub mod kept;
pub mod log;
pub mod names;
pub mod problem;
pub mod time;
pub mod tls;
pub mod trust;
