//! One immutable configuration of the authority: config, TLS identity, whom it trusts and the keys
//! it signs with, the box locator. Built whole or not at all; swapped as an `Arc` on reload (the
//! store and the listeners are opened once, at start: a reload that changes them is refused).
use crate::config::{self, Config, StoreConfig};
use crate::enrol_settings::Settings;
use crate::locator::Locator;
use boxapi_core::config::{Problem, Server};
use boxapi_core::daemon::current::Files;
use boxapi_core::files;
use boxapi_core::trust::Trust;
use rustls::server::danger::ClientCertVerifier;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

pub struct Snapshot {
    pub config: Config,
    pub tls: Arc<ServerConfig>,
    pub cert_not_after: Option<i64>,
    pub trust: Trust,
    /// Enrolment of boxes (`[enrolment]`), when configured; then `tls` asks clients for a device
    /// certificate.
    pub enrolment: Option<Arc<Settings>>,
    pub locator: Option<Locator>,
    /// The Redis password (`[authority.store] password_file`), when one is configured.
    pub store_password: Option<String>,
    /// The certificate and key as loaded, to notice their replacement.
    files: Files,
}

impl Snapshot {
    /// Reads and checks the configuration at `path` and every file it names; every problem on
    /// failure.
    pub fn load(path: &Path) -> Result<Snapshot, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(config) = config::load(path, &mut problems) else {
            return Err(problems);
        };
        if config.common.token_endpoint.is_none() {
            problems.push(Problem::invalid(
                "token_endpoint",
                "the authority needs [token_endpoint] enabled",
            ));
        }
        if config.listen.is_empty() {
            problems.push(Problem::invalid(
                "authority.listen",
                "the authority needs at least one address",
            ));
        }
        let identity = boxapi_core::tls::load(
            &config.common.server.cert,
            &config.common.server.key,
            &mut problems,
        );
        let trust = Trust::build(&config.common, false, &mut problems);
        let enrolment = Settings::load(&config, &mut problems).map(Arc::new);
        let locator = config
            .authority
            .locator
            .as_ref()
            .and_then(|l| Locator::new(l, &mut problems));
        let store_password = match &config.authority.store {
            StoreConfig::Redis(r) => r.password_file.as_ref().and_then(|f| {
                match files::read_text_limited(f, files::limit::SECRET) {
                    // The first line: a trailing newline is not part of the password.
                    Ok(text) => Some(text.lines().next().unwrap_or("").to_owned()),
                    Err(e) => {
                        problems.push(Problem::file("authority.store.password_file", f, e));
                        None
                    }
                }
            }),
            StoreConfig::Memory => None,
        };
        let files = Files::of(&[&config.common.server.cert, &config.common.server.key]);
        match identity {
            Some(id) if problems.is_empty() => Ok(Snapshot {
                tls: match &enrolment {
                    Some(e) => with_client_verifier(&id.config, e.verifier.clone())
                        .map_err(|e| vec![Problem::invalid("server.cert", e)])?,
                    None => id.config,
                },
                config,
                cert_not_after: id.not_after,
                trust,
                enrolment,
                locator,
                store_password,
                files,
            }),
            _ => Err(problems),
        }
    }
}

/// The same server identity and settings, asking clients for a certificate that `verifier`
/// checks (boxes' device certificates; tool clients may still connect without one).
fn with_client_verifier(
    base: &ServerConfig,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(boxapi_core::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(base.cert_resolver.clone());
    config.alpn_protocols = base.alpn_protocols.clone();
    config.ignore_client_order = base.ignore_client_order;
    Ok(Arc::new(config))
}

impl boxapi_core::daemon::Snapshot for Snapshot {
    fn load(path: &Path) -> Result<Snapshot, Vec<Problem>> {
        Snapshot::load(path)
    }

    fn path(&self) -> &Path {
        &self.config.common.path
    }

    fn server(&self) -> &Server {
        &self.config.common.server
    }

    fn trust(&self) -> &Trust {
        &self.trust
    }

    fn cert_not_after(&self) -> Option<i64> {
        self.cert_not_after
    }

    fn files(&self) -> &Files {
        &self.files
    }

    /// The listeners and the store are opened once, at start.
    fn restart_only(&self, new: &Snapshot) -> Vec<Problem> {
        let (was, now) = (&self.config, &new.config);
        [
            ("authority.listen", was.listen == now.listen),
            (
                "authority.metrics_listen",
                was.authority.metrics_listen == now.authority.metrics_listen,
            ),
            (
                "authority.store",
                was.authority.store == now.authority.store,
            ),
            (
                "authority.store.password_file",
                self.store_password == new.store_password,
            ),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(key, _)| {
            Problem::invalid(
                key,
                "changed: only a restart applies it, so nothing was reloaded",
            )
        })
        .collect()
    }
}
