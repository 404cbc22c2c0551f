//! One immutable, fully validated configuration: parsed config, TLS identity, tool registry and
//! verification keys, card providers. Built whole or not at all, then swapped in as an `Arc`.
use crate::auth::jwk::{self, PublicJwk};
use crate::auth::signed;
use crate::auth::{Registry, Rules, Tool, Verifier};
use crate::card::provider::{CommandLayer, FileLayer};
use crate::card::sys::Sys;
use crate::config::{self, Config};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub struct Snapshot {
    pub config: Config,
    pub tls: Arc<ServerConfig>,
    pub cert_not_after: Option<i64>,
    pub registry: Registry,
    pub verifier: Verifier,
    pub file_layer: Option<FileLayer>,
    pub command_layer: Option<CommandLayer>,
    pub sys: Sys,
    /// Version of the operator-signed registry in force, if one is configured.
    pub registry_version: Option<u64>,
    /// Per-tool signing keys (tool index → key), for a token server that signs each tool's tokens
    /// with that tool's own key.
    pub tool_signing_keys: HashMap<usize, jwk::PrivateJwk>,
    /// The key the on-box token endpoint signs with, when `[token_endpoint]` is enabled.
    pub signing_key: Option<jwk::PrivateJwk>,
    /// Modification times of the certificate and key when loaded, to notice replacement.
    files: Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>,
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_keys(path: &Path, key: &str, problems: &mut Vec<String>) -> Vec<PublicJwk> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{key} ({}): cannot read: {e}", path.display()));
            return Vec::new();
        }
    };
    jwk::parse_public_set(&text).unwrap_or_else(|e| {
        problems.push(format!("{key} ({}): {e}", path.display()));
        Vec::new()
    })
}

/// Reads a private JWK (a signing key); a problem naming `label` on failure.
fn load_private(path: &Path, label: &str, problems: &mut Vec<String>) -> Option<jwk::PrivateJwk> {
    let label = format!("{label} ({})", path.display());
    std::fs::read_to_string(path)
        .map_err(|e| format!("{label}: cannot read: {e}"))
        .and_then(|t| jwk::parse_private(&t).map_err(|e| format!("{label}: {e}")))
        .map_err(|p| problems.push(p))
        .ok()
}

impl Snapshot {
    /// Reads, parses and checks the configuration at `path` and every file it names.
    /// On failure returns every problem found, one line each.
    pub fn load(path: &Path) -> Result<Snapshot, Vec<String>> {
        let mut problems = Vec::new();
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        match config::parse(&text, path, &mut problems) {
            Some(config) => Self::build(config, problems),
            None => Err(problems),
        }
    }

    fn build(config: Config, mut problems: Vec<String>) -> Result<Snapshot, Vec<String>> {
        let identity = crate::tls::load(&config.server.cert, &config.server.key, &mut problems);

        let mut kids: HashMap<String, String> = HashMap::new();
        let mut claim_kid = |k: &PublicJwk, owner: String, problems: &mut Vec<String>| {
            if let Some(prev) = kids.insert(k.kid.clone(), owner.clone()) {
                problems.push(format!(
                    "{owner}: key id {:?} is also used by {prev}; kids must be unique",
                    k.kid
                ));
            }
        };
        let mut tool_keys = Vec::new();
        for (i, t) in config.tools.iter().enumerate() {
            for path in &t.keys {
                for k in load_keys(path, &format!("tool[{i}].keys"), &mut problems) {
                    claim_kid(
                        &k,
                        format!("tool[{i}].keys ({})", path.display()),
                        &mut problems,
                    );
                    tool_keys.push((k, i));
                }
            }
        }
        let mut issuer_keys = match &config.auth.issuer_keys {
            Some(path) => {
                let keys = load_keys(path, "auth.issuer_keys", &mut problems);
                for k in &keys {
                    claim_kid(
                        k,
                        format!("auth.issuer_keys ({})", path.display()),
                        &mut problems,
                    );
                }
                keys
            }
            None => Vec::new(),
        };
        // The on-box authorization server signs with its own key; the API trusts it like an
        // issuer key, and its issuer like a configured one.
        let signing_key = config.token_endpoint.as_ref().and_then(|te| {
            let k = load_private(&te.signing_key, "token_endpoint.signing_key", &mut problems)?;
            claim_kid(
                &k.key,
                format!("token_endpoint.signing_key ({})", te.signing_key.display()),
                &mut problems,
            );
            issuer_keys.push(k.key.clone());
            Some(k)
        });
        if let Some(cmd) = &config.metrics.provider_command {
            if !cmd.is_file() {
                problems.push(format!(
                    "metrics.provider_command ({}): no such executable file",
                    cmd.display()
                ));
            }
        }
        let mut tool_signing_keys = HashMap::new();
        for (i, t) in config.tools.iter().enumerate() {
            let label = format!("tool[{i}].signing_key");
            if let Some(k) = t
                .signing_key
                .as_ref()
                .and_then(|p| load_private(p, &label, &mut problems))
            {
                tool_signing_keys.insert(i, k);
            }
        }
        let mut tools: Vec<Tool> = config
            .tools
            .iter()
            .map(|t| Tool {
                id: t.id.clone(),
                name: t.name.clone(),
                origins: t.origins.clone(),
                scopes: t.scopes,
                revoked: t.revoked,
                tokens_per_hour: t.tokens_per_hour,
            })
            .collect();
        let registry_version = match &config.registry {
            Some(rc) => {
                let label = format!("registry.file ({})", rc.file.display());
                let signed = load_keys(&rc.root_key, "registry.root_key", &mut problems)
                    .into_iter()
                    .next()
                    .ok_or(())
                    .and_then(|root| {
                        let jws = std::fs::read(&rc.file)
                            .map_err(|e| problems.push(format!("{label}: cannot read: {e}")))?;
                        let r = signed::verify(&root, &jws)
                            .map_err(|e| problems.push(format!("{label}: {e}")))?;
                        signed::check_rollback(&config.server.state_dir, r.version)
                            .map_err(|e| problems.push(format!("{label}: {e}")))?;
                        Ok(r)
                    });
                match signed {
                    Ok(r) => {
                        for (tool, keys) in r.tools {
                            if let Some(t) = tools.iter().find(|t| {
                                t.id == tool.id
                                    || t.origins.iter().any(|o| tool.origins.contains(o))
                            }) {
                                problems.push(format!(
                                    "{label}: tool {:?} clashes with [[tool]] {:?} (id or origin)",
                                    tool.id, t.id
                                ));
                                continue;
                            }
                            let index = tools.len();
                            for k in keys {
                                claim_kid(
                                    &k,
                                    format!("{label}: tool {:?}", tool.id),
                                    &mut problems,
                                );
                                tool_keys.push((k, index));
                            }
                            tools.push(tool);
                        }
                        Some(r.version)
                    }
                    Err(()) => None,
                }
            }
            None => None,
        };
        let registry = Registry::new(tools);
        let identity = match identity {
            Some(id) if problems.is_empty() => id,
            _ => return Err(problems),
        };
        let mut issuers = config.auth.issuers.clone();
        if let Some(te) = &config.token_endpoint {
            if !issuers.contains(&te.issuer) {
                issuers.push(te.issuer.clone());
            }
        }
        let rules = Rules {
            audience: config.auth.audience.clone(),
            issuers,
            max_lifetime: config.auth.max_token_lifetime,
            leeway: config.auth.leeway,
        };
        let m = &config.metrics;
        Ok(Snapshot {
            tool_signing_keys,
            registry_version,
            signing_key,
            tls: identity.config,
            cert_not_after: identity.not_after,
            registry,
            verifier: Verifier::new(rules, tool_keys, issuer_keys),
            file_layer: m.provider_file.clone().map(FileLayer::new),
            command_layer: m
                .provider_command
                .clone()
                .map(|p| CommandLayer::new(p, m.provider_timeout)),
            sys: Sys::default(),
            files: [&config.server.cert, &config.server.key]
                .iter()
                .map(|p| ((*p).clone(), mtime(p)))
                .collect(),
            config,
        })
    }
}

impl Snapshot {
    /// Whether the certificate or key file was replaced since this snapshot was loaded.
    pub fn files_changed(&self) -> bool {
        self.files.iter().any(|(p, t)| mtime(p) != *t)
    }

    /// The card's sources under this configuration.
    pub fn sources(&self) -> crate::card::Sources<'_> {
        crate::card::Sources {
            sys: &self.sys,
            wan_interface: self.config.metrics.wan_interface.as_deref(),
            static_layer: &self.config.metrics.static_layer,
            file: self.file_layer.as_ref(),
            command: self.command_layer.as_ref(),
        }
    }
}
