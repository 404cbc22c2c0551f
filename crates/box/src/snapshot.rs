//! One immutable, fully validated configuration of the box: parsed config, TLS identity, whom it
//! trusts (`boxapi_core::trust`), card providers. Built whole or not at all, then swapped in as an
//! `Arc`.
use crate::card::provider::{CommandLayer, FileLayer, Shape};
use crate::card::sys::Sys;
use crate::config::{self, Config};
use boxapi_core::config::{Problem, Server};
use boxapi_core::daemon::current::Files;
use boxapi_core::trust::Trust;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

pub struct Snapshot {
    pub config: Config,
    pub tls: Arc<ServerConfig>,
    pub cert_not_after: Option<i64>,
    pub cert_not_before: Option<i64>,
    /// The box's own name (`<label>.<zone>`, from `[enrol]`), accepted in Host and SNI.
    pub box_name: Option<String>,
    pub trust: Trust,
    pub file_layer: Option<FileLayer>,
    pub command_layer: Option<CommandLayer>,
    pub station_file: Option<FileLayer>,
    pub station_command: Option<CommandLayer>,
    pub sys: Sys,
    /// The last card's layer sections, reused while the layers are unchanged.
    pub projected: crate::card::Projected,
    /// Why the installed certificate and key cannot be served, when the previous good pair
    /// (`enrol::pair::fallback`) is served instead: `ctl status` warns, and renewal is due.
    pub identity_fallback: Option<String>,
    /// The certificate and key as loaded, to notice their replacement.
    files: Files,
}

/// The server identity: the installed certificate and key, or, when they cannot be served (a
/// power cut between their two renames, damage), the previous good pair, logged
/// `certificate_damaged` with why. Problems are pushed only when neither serves.
fn identity(
    server: &Server,
    problems: &mut Vec<Problem>,
) -> (Option<boxapi_core::tls::Identity>, Option<String>) {
    let mut own = Vec::new();
    if let Some(id) = boxapi_core::tls::load(&server.cert, &server.key, &mut own) {
        return (Some(id), None);
    }
    // No problem of its own: the configuration already named the missing key.
    let previous = (!own.is_empty() && !server.key.as_os_str().is_empty())
        .then(|| crate::enrol::pair::fallback(&server.key))
        .flatten();
    match previous {
        Some((id, from)) => {
            let why = boxapi_core::config::lines(&own).join("; ");
            boxapi_core::log::event(
                crate::enrol::pair::DAMAGED_WARNING,
                &[("error", &why), ("using", &from.display().to_string())],
            );
            (Some(id), Some(why))
        }
        None => {
            problems.extend(own);
            (None, None)
        }
    }
}

impl Snapshot {
    /// Reads, parses and checks the configuration at `path` and every file it names.
    /// On failure returns every problem found.
    pub fn load(path: &Path) -> Result<Snapshot, Vec<Problem>> {
        let mut problems = Vec::new();
        let config = config::load(path, &mut problems).ok_or_else(|| problems.clone())?;
        Self::build(config, problems)
    }

    fn build(config: Config, mut problems: Vec<Problem>) -> Result<Snapshot, Vec<Problem>> {
        if !config.metrics.static_layer.is_null() {
            for p in crate::card::validate_layer(&config.metrics.static_layer) {
                problems.push(Problem::invalid("metrics.static", p));
            }
        }
        let (identity, identity_fallback) = identity(&config.common.server, &mut problems);
        for (key, cmd) in [
            ("metrics.provider_command", &config.metrics.provider_command),
            (
                "metrics.station_provider_command",
                &config.metrics.station_provider_command,
            ),
        ] {
            if let Some(cmd) = cmd {
                if !cmd.is_file() {
                    problems.push(Problem::file(key, cmd, "no such executable file"));
                }
            }
        }
        // The runtime's own check (a named pipe, a device or a directory is never read, nor a
        // file past the cap), so check-config fails where the card would log errors forever.
        // Absent is fine: a provider may write the file later.
        for (key, file) in [
            ("metrics.provider_file", &config.metrics.provider_file),
            (
                "metrics.station_provider_file",
                &config.metrics.station_provider_file,
            ),
        ] {
            if let Some(file) = file {
                match boxapi_core::files::read_limited(
                    file,
                    crate::card::provider::MAX_LAYER_BYTES as u64,
                ) {
                    Err(e) if !e.is_not_found() => problems.push(Problem::file(key, file, e)),
                    _ => {}
                }
            }
        }
        let trust = Trust::build(&config.common, true, &mut problems);
        let box_name = match &config.enrol {
            Some(e) => match crate::enrol::box_name(e) {
                Ok(n) => Some(n),
                Err(crate::enrol::EnrolError::DeviceCert(_, why)) => {
                    problems.push(Problem::file("enrol.device_cert", &e.device_cert, why));
                    None
                }
                Err(other) => {
                    problems.push(Problem::invalid("enrol", other));
                    None
                }
            },
            None => None,
        };
        let identity = match identity {
            Some(id) if problems.is_empty() => id,
            _ => return Err(problems),
        };
        let m = &config.metrics;
        Ok(Snapshot {
            tls: identity.config,
            cert_not_after: identity.not_after,
            cert_not_before: identity.not_before,
            box_name,
            identity_fallback,
            trust,
            file_layer: m.provider_file.clone().map(FileLayer::new),
            command_layer: m
                .provider_command
                .clone()
                .map(|p| CommandLayer::new(p, m.provider_timeout)),
            station_file: m
                .station_provider_file
                .clone()
                .map(|p| FileLayer::with_shape(p, Shape::Stations)),
            station_command: m
                .station_provider_command
                .clone()
                .map(|p| CommandLayer::with_shape(p, m.provider_timeout, Shape::Stations)),
            sys: Sys::default(),
            projected: Default::default(),
            files: Files::of(&[&config.common.server.cert, &config.common.server.key]),
            config,
        })
    }

    /// The card's sources under this configuration.
    pub fn sources(&self) -> crate::card::Sources<'_> {
        crate::card::Sources {
            sys: &self.sys,
            wan_interface: self.config.metrics.wan_interface.as_deref(),
            static_layer: &self.config.metrics.static_layer,
            file: self.file_layer.as_ref(),
            command: self.command_layer.as_ref(),
            wifi: None,
            station_file: self.station_file.as_ref(),
            station_command: self.station_command.as_ref(),
            projected: &self.projected,
        }
    }
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
}
