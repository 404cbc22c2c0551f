//! The authority's control commands (the protocol is `boxapi_core::control`, so `boxapi ctl
//! --socket` drives it): status, suspend/resume, revoke/unrevoke a tool, reload, and
//! `publish_fleet` (the signed fleet document boxes fetch).
use crate::app::App;
use crate::fleet::FleetError;
use crate::store::{FleetPublish, StoreError};
use boxapi_core::auth::signed;
use boxapi_core::cert::certificate_warning;
use boxapi_core::control::{error_reply, parse_command, state, Command, Mode, State};
use boxapi_core::log;
use serde_json::{json, Value};

/// Runs one control line and returns the reply.
pub fn execute(app: &App, line: &[u8]) -> Value {
    match parse_command(line) {
        Ok(Command::Status) => status(app),
        Ok(Command::Enable | Command::Resume) => change(app, |s| s.mode = Mode::Enabled),
        Ok(Command::Suspend { retry_after }) => {
            change(app, |s| s.mode = Mode::Suspended { retry_after })
        }
        Ok(Command::Other(req)) if req.cmd == PUBLISH_FLEET => publish_fleet(app, req.file),
        // The box's own commands (switch-off, subscriber choices, tools' activity) are unknown
        // here: the authority has none of them.
        Ok(Command::Other(req)) => error_reply(&req.unknown()),
        Ok(Command::Revoke(id)) if app.snapshot().trust.registry.index_of(&id).is_none() => {
            error_reply(&format!("no tool {id:?} is registered"))
        }
        Ok(Command::Revoke(id)) if app.store.shares_revocations() => shared(app, &id, true),
        Ok(Command::Unrevoke(id)) if app.store.shares_revocations() => shared(app, &id, false),
        Ok(Command::Revoke(id)) => change(app, |s| {
            s.revoked.insert(id);
        }),
        Ok(Command::Unrevoke(id)) => change(app, |s| {
            s.revoked.remove(&id);
        }),
        Ok(Command::Reload) => boxapi_core::daemon::reload::reply(app),
        Err(e) => error_reply(&e),
    }
}

/// `ctl publish-fleet FILE`: the signed fleet document at `file` served to boxes from now on.
pub const PUBLISH_FLEET: &str = "publish_fleet";

fn publish_fleet(app: &App, file: Option<String>) -> Value {
    let Some(file) = file else {
        return error_reply("this command needs \"file\": the signed fleet document");
    };
    let snap = app.snapshot();
    let published = app.fleet.prepare(&snap, file.as_ref()).and_then(|new| {
        let Some(new) = new else {
            // The same document: in force here, and in the store when it is shared.
            return Ok(current_version(app));
        };
        // The shared store first: another replica may hold a newer one. Control commands run on
        // a blocking thread (core's control socket), and the call is bounded by its timeout.
        let shared = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Protocol(e.to_string()))
            .and_then(|rt| rt.block_on(app.store.publish_fleet(new.version, &new.jws)))?;
        match shared {
            FleetPublish::Published => {
                let version = new.version;
                let state_dir = &snap.config.common.server.state_dir;
                app.fleet.install(state_dir, new).map(|_| version)
            }
            FleetPublish::Older(have) => Err(FleetError::Rollback {
                have,
                got: new.version,
            }),
            FleetPublish::SameVersion => Err(FleetError::SameVersion(new.version)),
        }
    });
    match published {
        Ok(version) => {
            log::event("fleet_published", &[("version", &version.to_string())]);
            json!({ "ok": true, "fleet_version": version })
        }
        Err(e) => {
            log::event("fleet_document_refused", &[("error", &e.to_string())]);
            error_reply(&format!("{file}: {e}; nothing published"))
        }
    }
}

fn current_version(app: &App) -> u64 {
    app.fleet.current().map_or(0, |d| d.version)
}

/// A revocation through the shared store, so that every replica applies it (within a second:
/// they re-read the shared set every `revocation_poll`). A revocation this replica holds in its
/// own state (from before the store was shared) is lifted too by `unrevoke`.
fn shared(app: &App, id: &str, revoked: bool) -> Value {
    // Control commands run on a blocking thread of the runtime (core's control socket): waiting
    // here is fine, and the store call is bounded by its response timeout.
    let done = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .block_on(app.store.set_revoked(id, revoked))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = done {
        log::event("state_error", &[("error", &e.to_string())]);
        return error_reply(&format!(
            "the shared store did not take the change: {e}; nothing changed"
        ));
    }
    log::event(
        if revoked { "revoked" } else { "unrevoked" },
        &[("tool", id), ("scope", "all replicas")],
    );
    if !revoked && app.control.is_revoked(id) {
        let id = id.to_owned();
        return change(app, move |s| {
            s.revoked.remove(&id);
        });
    }
    let st = app.control.state();
    let mode = state::to_json(&st);
    json!({ "ok": true, "state": mode["state"], "retry_after": mode["retry_after"], "revoked": revoked_list(app) })
}

/// Every run-time revocation this replica applies: its own and the shared ones.
fn revoked_list(app: &App) -> Vec<String> {
    let mut all = app.control.state().revoked;
    all.extend(app.store.revoked_view().iter().cloned());
    all.into_iter().collect()
}

/// Persists a state change first, then applies it: a failed write changes nothing.
fn change(app: &App, f: impl FnOnce(&mut State)) -> Value {
    let mut new = app.control.state();
    f(&mut new);
    if let Err(e) = state::change(
        &app.control,
        &app.snapshot().config.common.server.state_dir,
        &new,
    ) {
        return error_reply(&e);
    }
    let mode = state::to_json(&new);
    json!({ "ok": true, "state": mode["state"], "retry_after": mode["retry_after"], "revoked": mode["revoked"] })
}

fn status(app: &App) -> Value {
    let snap = app.snapshot();
    let st = app.control.state();
    let tools: Vec<Value> = snap
        .trust
        .registry
        .tools()
        .iter()
        .map(|t| {
            json!({ "id": t.id, "name": t.name, "origins": t.origins, "scopes": t.scopes.names(),
                    "revoked": t.revoked || app.is_revoked(&t.id) })
        })
        .collect();
    let mode = state::to_json(&st);
    let enrolment = snap.enrolment.as_ref().map(|e| {
        let (issuing, account) = app.issuer.status();
        json!({ "zone": e.zone, "acme_directory": e.acme.directory_url,
                "acme_account": account, "dns_server": e.dns.server.to_string(),
                "issuing": issuing, "max_issuances_per_device": e.limit.max,
                "issuance_window_days": e.limit.window.as_secs() / 86_400,
                "max_address_updates_per_hour": e.max_address_updates_per_hour })
    });
    json!({
        "ok": true,
        "state": mode["state"],
        "retry_after": mode["retry_after"],
        "tools": tools,
        "cert_not_after": snap.cert_not_after.map(boxapi_core::time::rfc3339),
        "warnings": certificate_warning(snap.cert_not_after)
            .into_iter()
            .chain(st.damaged.then(|| state::DAMAGED_WARNING.to_owned()))
            .chain(snap.trust.registry_version_damage.as_ref().map(|_| signed::DAMAGED_WARNING.to_owned()))
            .collect::<Vec<_>>(),
        "config": snap.config.common.path.display().to_string(),
        "enrolment": enrolment,
        "fleet_version": app.fleet.current().map(|d| d.version),
        // Boxes per version they fetched last, within the window (at this replica).
        "fleet_boxes": app.fleet.seen.counts(std::time::Instant::now(), snap.config.authority.fleet_window)
            .into_iter().map(|(v, n)| (v.to_string(), Value::from(n))).collect::<serde_json::Map<String, Value>>(),
        "fleet_window_ms": snap.config.authority.fleet_window.as_millis() as u64,
        "store": {
            "kind": app.store.kind(),
            // Fresh: the shared revocations were read within the last second (else tokens get 503).
            "fresh": app.store.revoked().is_ok(),
            // Assertions made before this time are refused (docs/authorization.md).
            "epoch": app.store.epoch(),
        },
        "version": env!("CARGO_PKG_VERSION"),
    })
}
