//! Operator and subscriber control commands on the box: switch-off, suspension, revocations and
//! status, each persisted before it takes effect. The socket and its protocol are in
//! `boxapi_core::control`; reload and start-up are the daemon's (`crate::daemon`).
use crate::app::App;
use boxapi_core::auth::registry::Validity;
use boxapi_core::auth::{signed, Tool};
use boxapi_core::cert::certificate_warning;
use boxapi_core::control::withheld::SECTION_NAMES;
use boxapi_core::control::{error_reply, state, Command, Mode, Request, Section, State};
use boxapi_core::log;
use serde_json::{json, Value};
use std::sync::Arc;

/// Persists a state change first, then applies it: a failed write changes nothing.
fn change(app: &App, f: impl FnOnce(&mut State)) -> Value {
    let mut new = app.control.state();
    f(&mut new);
    let snap = app.snapshot();
    if let Err(e) = state::change(&app.control, &snap.config.common.server.state_dir, &new) {
        return error_reply(&e);
    }
    snap.trust.verifier.forget_verified();
    let mode = state::to_json(&new);
    json!({ "ok": true, "state": mode["state"], "retry_after": mode["retry_after"],
            "revoked": mode["revoked"], "withheld": mode["withheld"] })
}

/// The box's own control commands, beyond those both daemons answer (`boxapi_core::control`).
#[derive(Debug, PartialEq, Eq)]
pub enum BoxCommand {
    /// The subscriber's switch-off: listeners closed.
    Disable,
    /// Every tool with its state, validity, withholdings and activity.
    Tools,
    /// The subscriber stops sharing a card section, with every tool or one.
    Withhold {
        section: Section,
        tool: Option<String>,
    },
    /// Undoes `Withhold`.
    Allow {
        section: Section,
        tool: Option<String>,
    },
}

/// Parses one of the box's own commands; the error is the reply's message (an unknown command
/// included).
pub fn parse_own(req: &Request) -> Result<BoxCommand, String> {
    let section = || {
        let name = req
            .section
            .as_deref()
            .ok_or_else(|| "this command needs \"section\"".to_owned())?;
        Section::from_name(name)
            .ok_or_else(|| format!("{name:?} is not a section of the card ({})", SECTION_NAMES))
    };
    Ok(match req.cmd.as_str() {
        "disable" => BoxCommand::Disable,
        "tools" => BoxCommand::Tools,
        "withhold" => BoxCommand::Withhold {
            section: section()?,
            tool: req.tool.clone(),
        },
        "allow" => BoxCommand::Allow {
            section: section()?,
            tool: req.tool.clone(),
        },
        _ => return Err(req.unknown()),
    })
}

/// Runs one control command and returns the reply; `Reload` belongs to the daemon.
pub fn execute(app: &Arc<App>, cmd: Command) -> Value {
    match cmd {
        Command::Status => status(app),
        Command::Enable | Command::Resume => enable(app),
        Command::Other(req) => match parse_own(&req) {
            Ok(own) => execute_own(app, own),
            Err(e) => error_reply(&e),
        },
        Command::Suspend { retry_after } => {
            change(app, |s| s.mode = Mode::Suspended { retry_after })
        }
        Command::Revoke(id) if app.snapshot().trust.registry.index_of(&id).is_none() => {
            error_reply(&format!("no tool {id:?} is registered"))
        }
        Command::Revoke(id) => change(app, |s| {
            s.revoked.insert(id);
        }),
        Command::Unrevoke(id) => change(app, |s| {
            s.revoked.remove(&id);
        }),
        Command::Reload => error_reply("reload is handled by the daemon"),
    }
}

fn execute_own(app: &Arc<App>, cmd: BoxCommand) -> Value {
    match cmd {
        BoxCommand::Disable => change(app, |s| s.mode = Mode::Disabled),
        BoxCommand::Withhold { tool: Some(id), .. } | BoxCommand::Allow { tool: Some(id), .. }
            if app.snapshot().trust.registry.index_of(&id).is_none() =>
        {
            error_reply(&format!("no tool {id:?} is registered"))
        }
        BoxCommand::Withhold { section, tool } => withhold(app, section, tool, false),
        BoxCommand::Allow { section, tool } => withhold(app, section, tool, true),
        BoxCommand::Tools => tools(app),
    }
}

/// The subscriber's `withhold` (`share == false`) or `allow`, persisted like any state change.
fn withhold(app: &App, section: Section, tool: Option<String>, share: bool) -> Value {
    let mut withheld = app.control.state().withheld;
    if let Err(e) = withheld.set(section, tool.as_deref(), share) {
        return error_reply(&e.to_string());
    }
    let reply = change(app, |s| s.withheld = withheld);
    let what = if share { "allow" } else { "withhold" };
    log::event(
        "withheld",
        &[
            ("change", what),
            ("section", section.name()),
            ("tool", tool.as_deref().unwrap_or("*")),
        ],
    );
    reply
}

/// A tool's standing for `ctl tools` and `ctl status`: a revocation wins over the dates.
pub fn tool_state(tool: &Tool, st: &State, now: i64) -> &'static str {
    if tool.revoked || st.revoked.contains(&tool.id) {
        return "revoked";
    }
    match tool.validity(now) {
        Validity::Valid => "active",
        Validity::NotYetValid(_) => "not_yet_valid",
        Validity::Expired(_) => "expired",
    }
}

fn date(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |s| json!(boxapi_core::time::rfc3339(s)))
}

/// Switches the API on: the listeners are bound first, and a bind failure (port 443 without the
/// capability, an address in use) is the command's failure, with nothing changed. An interface
/// address that is not usable yet (a tentative IPv6 address) is not a failure: it is retried.
fn enable(app: &Arc<App>) -> Value {
    // Held to the state change: the server loop's pass, which reads the mode under this lock,
    // would otherwise close as still disabled what this has just opened.
    let mut active = app.listeners();
    if app.control.mode() == Mode::Disabled {
        let failed: Vec<String> = crate::server::reconcile(app, &mut active, &app.endpoints())
            .into_iter()
            .filter(|(ep, e)| {
                ep.device.is_none() || e.kind() != std::io::ErrorKind::AddrNotAvailable
            })
            .map(|(ep, e)| format!("{}: {e}", ep.addr))
            .collect();
        if !failed.is_empty() {
            // Still disabled: close whatever this attempt opened.
            let _ = crate::server::reconcile(app, &mut active, &app.desired_endpoints());
            log::event("enable_failed", &[("error", &failed.join("; "))]);
            return json!({ "ok": false, "error": format!("cannot listen, still disabled: {}", failed.join("; ")), "problems": failed });
        }
    }
    change(app, |s| s.mode = Mode::Enabled)
}

/// `ctl tools`: every registered tool (configuration and signed registry) as the subscriber's
/// box UI shows it: what it may read, what the subscriber withholds from it, and its activity.
fn tools(app: &App) -> Value {
    let snap = app.snapshot();
    let st = app.control.state();
    let now = boxapi_core::time::unix_now() as i64;
    let list: Vec<Value> = snap
        .trust
        .registry
        .tools()
        .iter()
        .map(|t| {
            let seen = app.activity.get(&t.id);
            json!({
                "id": t.id,
                "name": t.name,
                "origins": t.origins,
                "scopes": t.scopes.names(),
                "state": tool_state(t, &st, now),
                "not_before": date(t.not_before),
                "expires": date(t.expires),
                "withheld": st.withheld.for_tool(&t.id).names(),
                "first_access": date(seen.map(|e| e.first)),
                "last_access": date(seen.map(|e| e.last)),
                "requests": seen.map_or(0, |e| e.requests),
            })
        })
        .collect();
    json!({ "ok": true, "tools": list })
}

fn status(app: &App) -> Value {
    let snap = app.snapshot();
    let st = app.control.state();
    let now = boxapi_core::time::unix_now() as i64;
    let tools: Vec<Value> = snap
        .trust
        .registry
        .tools()
        .iter()
        .map(|t| {
            let by = if t.revoked {
                json!("config")
            } else if st.revoked.contains(&t.id) {
                json!("ctl")
            } else {
                Value::Null
            };
            json!({ "id": t.id, "name": t.name, "origins": t.origins, "scopes": t.scopes.names(),
                    "revoked": !by.is_null(), "revoked_by": by, "state": tool_state(t, &st, now),
                    "not_before": date(t.not_before), "expires": date(t.expires) })
        })
        .collect();
    let mode = state::to_json(&st);
    let fleet = app.fleet.state();
    let renewal = app
        .renewal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let warnings: Vec<String> = certificate_warning(snap.cert_not_after)
        .into_iter()
        .chain(
            snap.trust
                .registry
                .tools()
                .iter()
                .filter_map(|t| t.expiry_warning(now)),
        )
        .chain(
            renewal
                .last_error
                .as_ref()
                .map(|e| format!("the last certificate renewal failed: {e}")),
        )
        .chain(st.damaged.then(|| state::DAMAGED_WARNING.to_owned()))
        .chain(
            snap.identity_fallback
                .as_ref()
                .map(|_| crate::enrol::pair::DAMAGED_WARNING.to_owned()),
        )
        .chain(
            snap.trust
                .registry_version_damage
                .as_ref()
                .map(|_| signed::DAMAGED_WARNING.to_owned()),
        )
        .chain(
            fleet
                .damage
                .as_ref()
                .map(|_| crate::fleet::DAMAGED_WARNING.to_owned()),
        )
        .collect();
    // The operator's fleet restriction beside the local `state` (issue 23): two sources, each
    // lifted on its own.
    let retry_after = app.fleet.suspended();
    let fleet = json!({
        "version": fleet.version,
        "suspended": retry_after.is_some(),
        "retry_after": retry_after,
        "reason": fleet.restriction.and_then(|r| r.reason),
        "last_fetch": fleet.last_fetch.map(boxapi_core::time::rfc3339),
        "last_error": fleet.last_error,
    });
    json!({
        "ok": true,
        "state": mode["state"],
        "retry_after": mode["retry_after"],
        "tools": tools,
        "cert_not_after": snap.cert_not_after.map(boxapi_core::time::rfc3339),
        "cert_name": snap.box_name,
        "cert_renew_at": renewal.renew_at.map(boxapi_core::time::rfc3339),
        "cert_last_error": renewal.last_error,
        "warnings": warnings,
        "fleet": fleet,
        "config": snap.config.common.path.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxapi_core::control::parse_command;

    fn own(line: &[u8]) -> Result<BoxCommand, String> {
        match parse_command(line)? {
            Command::Other(req) => parse_own(&req),
            shared => Err(format!("{shared:?} is a shared command")),
        }
    }

    #[test]
    fn parses_the_boxs_own_commands_and_refuses_the_rest() {
        assert_eq!(own(br#"{"cmd":"disable"}"#), Ok(BoxCommand::Disable));
        assert_eq!(own(br#"{"cmd":"tools"}"#), Ok(BoxCommand::Tools));
        assert_eq!(
            own(br#"{"cmd":"withhold","section":"wifi","tool":"a"}"#),
            Ok(BoxCommand::Withhold {
                section: Section::Wifi,
                tool: Some("a".into())
            })
        );
        assert_eq!(
            own(br#"{"cmd":"allow","section":"client"}"#),
            Ok(BoxCommand::Allow {
                section: Section::Client,
                tool: None
            })
        );
        assert_eq!(
            own(br#"{"cmd":"withhold"}"#),
            Err("this command needs \"section\"".into())
        );
        assert_eq!(
            own(br#"{"cmd":"withhold","section":"Wifi"}"#),
            Err(format!(
                "\"Wifi\" is not a section of the card ({SECTION_NAMES})"
            ))
        );
        assert_eq!(own(br#"{"cmd":"x"}"#), Err("unknown command \"x\"".into()));
    }
}
