//! Whom a daemon trusts and how it signs: the tool registry (configured tools and the
//! operator-signed registry), every verification key bound to its tool or issuer, the token rules,
//! and the keys a token endpoint signs with. Built from a configuration, whole or not at all.
use crate::auth::jwk::{self, PublicJwk};
use crate::auth::signed;
use crate::auth::{Registry, Rules, Tool, Verifier};
use crate::config::{Common, Problem};
use crate::files;
use std::collections::HashMap;
use std::path::Path;

pub struct Trust {
    pub registry: Registry,
    pub verifier: Verifier,
    /// Version of the operator-signed registry in force, if one is configured.
    pub registry_version: Option<u64>,
    /// A copy of the accepted registry version was damaged (why): `ctl status` warns
    /// [`signed::DAMAGED_WARNING`]. When no copy was good the registry is not in force at all.
    pub registry_version_damage: Option<String>,
    /// The fleet document a box applied (issue 23), as `state_dir` keeps it: its version and its
    /// restriction as signed (for the boxes it names, `Restriction::suspends`).
    pub fleet: Option<(u64, Option<crate::auth::fleet::Restriction>)>,
    /// Why a kept copy of that document could not be read: with no good copy at all the box
    /// fails closed (suspended until it fetches one).
    pub fleet_damage: Option<String>,
    /// Per-tool signing keys (tool index → key), for a token server that signs each tool's tokens
    /// with that tool's own key.
    pub tool_signing_keys: HashMap<usize, jwk::PrivateJwk>,
    /// The key the on-box token endpoint signs with, when `[token_endpoint]` is enabled.
    pub signing_key: Option<jwk::PrivateJwk>,
}

/// Reads the public keys (a JWK or a JWKS) of the file that configuration key `key` names.
pub fn load_keys(path: &Path, key: &str, problems: &mut Vec<Problem>) -> Vec<PublicJwk> {
    let text = match files::read_text_limited(path, files::limit::JWK) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::file(key, path, e));
            return Vec::new();
        }
    };
    jwk::parse_public_set(&text).unwrap_or_else(|e| {
        problems.push(Problem::file(key, path, e));
        Vec::new()
    })
}

/// Reads a private JWK (a signing key); a problem naming configuration key `key` on failure.
pub fn load_private(
    path: &Path,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<jwk::PrivateJwk> {
    files::read_text_limited(path, files::limit::JWK)
        .map_err(|e| Problem::file(key, path, e))
        .and_then(|t| jwk::parse_private(&t).map_err(|e| Problem::file(key, path, e)))
        .map_err(|p| problems.push(p))
        .ok()
}

/// Who already uses a key id: the configuration key and file holding it, and the registry tool
/// when the key came from the signed registry.
struct KidOwner<'a> {
    key: &'a str,
    path: &'a Path,
    tool: Option<&'a str>,
}

impl std::fmt::Display for KidOwner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.key, self.path.display())?;
        match self.tool {
            Some(t) => write!(f, ": tool {t:?}"),
            None => Ok(()),
        }
    }
}

impl Trust {
    /// Loads every key and registry `config` names; problems are pushed, one per mistake. A box
    /// (`applies_fleet`) also reads the fleet document it applied: the newer of it and
    /// `registry.file` gives the tools (one version sequence; a tie goes to the fleet document).
    pub fn build(config: &Common, applies_fleet: bool, problems: &mut Vec<Problem>) -> Trust {
        // Key id → its first owner, written as problems name it.
        let mut kids: HashMap<String, String> = HashMap::new();
        let mut claim_kid = |k: &PublicJwk, owner: KidOwner, problems: &mut Vec<Problem>| {
            if let Some(prev) = kids.insert(k.kid.clone(), owner.to_string()) {
                let tool = owner
                    .tool
                    .map(|t| format!("tool {t:?}: "))
                    .unwrap_or_default();
                problems.push(Problem::file(
                    owner.key,
                    owner.path,
                    format_args!(
                        "{tool}key id {:?} is also used by {prev}; kids must be unique",
                        k.kid
                    ),
                ));
            }
        };
        let mut tool_keys = Vec::new();
        for (i, t) in config.tools.iter().enumerate() {
            let key = format!("tool[{i}].keys");
            for path in &t.keys {
                for k in load_keys(path, &key, problems) {
                    let owner = KidOwner {
                        key: &key,
                        path,
                        tool: None,
                    };
                    claim_kid(&k, owner, problems);
                    tool_keys.push((k, i));
                }
            }
        }
        let mut issuer_keys = match &config.auth.issuer_keys {
            Some(path) => {
                let key = "auth.issuer_keys";
                let keys = load_keys(path, key, problems);
                for k in &keys {
                    let owner = KidOwner {
                        key,
                        path,
                        tool: None,
                    };
                    claim_kid(k, owner, problems);
                }
                keys
            }
            None => Vec::new(),
        };
        // The on-box authorization server signs with its own key; the API trusts it like an
        // issuer key, and its issuer like a configured one.
        let signing_key = config.token_endpoint.as_ref().and_then(|te| {
            let key = "token_endpoint.signing_key";
            let k = load_private(&te.signing_key, key, problems)?;
            let owner = KidOwner {
                key,
                path: &te.signing_key,
                tool: None,
            };
            claim_kid(&k.key, owner, problems);
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
                not_before: t.not_before,
                expires: t.expires,
            })
            .collect();
        let mut registry_version_damage = None;
        let (mut fleet, mut fleet_damage) = (None, None);
        let registry_version = match &config.registry {
            Some(rc) => {
                let key = "registry.file";
                let floor = signed::floor(&config.server.state_dir);
                if let Some(why) = &floor.damage {
                    let using = floor.version.map_or_else(
                        || "no registry: the last accepted version is unknown".to_owned(),
                        |v| format!("version {v} of the good copy as the floor"),
                    );
                    crate::log::event(
                        signed::DAMAGED_WARNING,
                        &[("error", why), ("using", &using)],
                    );
                }
                registry_version_damage.clone_from(&floor.damage);
                let bad = |why: &dyn std::fmt::Display| Problem::file(key, &rc.file, why);
                let root = load_keys(&rc.root_key, "registry.root_key", problems)
                    .into_iter()
                    .next();
                let mut applied = None;
                if let Some(root) = root.as_ref().filter(|_| applies_fleet) {
                    let (doc, damage) = crate::auth::fleet::applied(&config.server.state_dir, root);
                    if let Some(why) = &damage {
                        crate::log::event("fleet_document_damaged", &[("error", why)]);
                    }
                    fleet_damage = damage;
                    applied = doc.map(|d| {
                        fleet = Some((d.version(), d.restriction));
                        d.registry
                    });
                }
                let signed = root.ok_or(()).and_then(|root| {
                    let jws = files::read_limited(&rc.file, files::limit::REGISTRY)
                        .map_err(|e| problems.push(bad(&e)))?;
                    let r = signed::verify(&root, &jws).map_err(|e| problems.push(bad(&e)))?;
                    let r = match applied {
                        Some(f) if f.version >= r.version => f,
                        _ => r,
                    };
                    match floor.check(r.version) {
                        Ok(()) => Ok(r),
                        // Fail closed without stopping the daemon: the registry's tools
                        // are not trusted (none loosened), the configured ones still are.
                        Err(signed::SignedError::FloorUnknown(_)) => Err(()),
                        // Older than a fleet document whose every kept copy is damaged: the
                        // box is suspended already (crate::auth::fleet::applied).
                        Err(_) if fleet_damage.is_some() && fleet.is_none() => Err(()),
                        Err(e) => {
                            problems.push(bad(&e));
                            Err(())
                        }
                    }
                });
                match signed {
                    Ok(r) => {
                        for (tool, keys) in r.tools {
                            if let Some(t) = tools.iter().find(|t| {
                                t.id == tool.id
                                    || t.origins.iter().any(|o| tool.origins.contains(o))
                            }) {
                                problems.push(bad(&format_args!(
                                    "tool {:?} clashes with [[tool]] {:?} (id or origin)",
                                    tool.id, t.id
                                )));
                                continue;
                            }
                            let index = tools.len();
                            for k in keys {
                                let owner = KidOwner {
                                    key,
                                    path: &rc.file,
                                    tool: Some(&tool.id),
                                };
                                claim_kid(&k, owner, problems);
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
            registry_version_damage,
            fleet,
            fleet_damage,
            tool_signing_keys,
            signing_key,
        }
    }
}
