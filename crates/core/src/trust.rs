//! Whom a daemon trusts and how it signs: the tool registry (configured tools and the
//! operator-signed registry), every verification key bound to its tool or issuer, the token rules,
//! and the keys a token endpoint signs with. Built from a configuration, whole or not at all.
use crate::auth::jwk::{self, PublicJwk};
use crate::auth::signed;
use crate::auth::{Registry, Rules, Tool, Verifier};
use crate::config::Config;
use std::collections::HashMap;
use std::path::Path;

pub struct Trust {
    pub registry: Registry,
    pub verifier: Verifier,
    /// Version of the operator-signed registry in force, if one is configured.
    pub registry_version: Option<u64>,
    /// Per-tool signing keys (tool index → key), for a token server that signs each tool's tokens
    /// with that tool's own key.
    pub tool_signing_keys: HashMap<usize, jwk::PrivateJwk>,
    /// The key the on-box token endpoint signs with, when `[token_endpoint]` is enabled.
    pub signing_key: Option<jwk::PrivateJwk>,
}

pub fn load_keys(path: &Path, key: &str, problems: &mut Vec<String>) -> Vec<PublicJwk> {
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
pub fn load_private(
    path: &Path,
    label: &str,
    problems: &mut Vec<String>,
) -> Option<jwk::PrivateJwk> {
    let label = format!("{label} ({})", path.display());
    std::fs::read_to_string(path)
        .map_err(|e| format!("{label}: cannot read: {e}"))
        .and_then(|t| jwk::parse_private(&t).map_err(|e| format!("{label}: {e}")))
        .map_err(|p| problems.push(p))
        .ok()
}

impl Trust {
    /// Loads every key and registry `config` names; problems are pushed, one line each.
    pub fn build(config: &Config, problems: &mut Vec<String>) -> Trust {
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
                for k in load_keys(path, &format!("tool[{i}].keys"), problems) {
                    claim_kid(&k, format!("tool[{i}].keys ({})", path.display()), problems);
                    tool_keys.push((k, i));
                }
            }
        }
        let mut issuer_keys = match &config.auth.issuer_keys {
            Some(path) => {
                let keys = load_keys(path, "auth.issuer_keys", problems);
                for k in &keys {
                    claim_kid(
                        k,
                        format!("auth.issuer_keys ({})", path.display()),
                        problems,
                    );
                }
                keys
            }
            None => Vec::new(),
        };
        // The on-box authorization server signs with its own key; the API trusts it like an
        // issuer key, and its issuer like a configured one.
        let signing_key = config.token_endpoint.as_ref().and_then(|te| {
            let k = load_private(&te.signing_key, "token_endpoint.signing_key", problems)?;
            claim_kid(
                &k.key,
                format!("token_endpoint.signing_key ({})", te.signing_key.display()),
                problems,
            );
            issuer_keys.push(k.key.clone());
            Some(k)
        });
        let mut tool_signing_keys = HashMap::new();
        for (i, t) in config.tools.iter().enumerate() {
            let label = format!("tool[{i}].signing_key");
            if let Some(k) = t
                .signing_key
                .as_ref()
                .and_then(|p| load_private(p, &label, problems))
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
                let signed = load_keys(&rc.root_key, "registry.root_key", problems)
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
                                claim_kid(&k, format!("{label}: tool {:?}", tool.id), problems);
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
        Trust {
            registry,
            verifier: Verifier::new(rules, tool_keys, issuer_keys),
            registry_version,
            tool_signing_keys,
            signing_key,
        }
    }
}
