//! One immutable configuration of the authority: config, TLS identity, whom it trusts and the keys
//! it signs with. Built whole or not at all; swapped as an `Arc` on reload.
use boxapi_core::config::{self, Config, Problem};
use boxapi_core::trust::Trust;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

pub struct Snapshot {
    pub config: Config,
    pub tls: Arc<ServerConfig>,
    pub cert_not_after: Option<i64>,
    pub trust: Trust,
}

impl Snapshot {
    /// Reads and checks the configuration at `path` and every file it names; every problem on
    /// failure.
    pub fn load(path: &Path) -> Result<Snapshot, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(config) = config::load(path, &mut problems) else {
            return Err(problems);
        };
        if config.token_endpoint.is_none() {
            problems.push(Problem::invalid(
                "token_endpoint",
                "the authority needs [token_endpoint] enabled",
            ));
        }
        if config.authority_listen.is_empty() {
            problems.push(Problem::invalid(
                "authority.listen",
                "the authority needs at least one address",
            ));
        }
        let identity =
            boxapi_core::tls::load(&config.server.cert, &config.server.key, &mut problems);
        let trust = Trust::build(&config, &mut problems);
        match identity {
            Some(id) if problems.is_empty() => Ok(Snapshot {
                config,
                tls: id.config,
                cert_not_after: id.not_after,
                trust,
            }),
            _ => Err(problems),
        }
    }
}
