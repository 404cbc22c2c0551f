//! `boxapi ctl`: sends one command to the daemon's control socket and prints the reply.
use super::args::{cmd, optional, Cmd, Matches, Pos};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE};
use boxapi_core::control::withheld::SECTION_NAMES;
use boxapi_core::control::Section;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct CtlArgs {
    socket: PathBuf,
    timeout: u64,
    command: CtlCommand,
}

const SECTIONS: [&str; 6] = [
    "box",
    "subscription",
    "access",
    "wifi",
    "client",
    "counters",
];

const SECTION: &[Pos] = &[Pos {
    name: "section",
    choices: &SECTIONS,
}];
const TOOL: &[Pos] = &[Pos {
    name: "tool",
    choices: &[],
}];

/// `boxapi ctl` (contract §7).
pub const CTL: Cmd = Cmd {
    opts: &[
        optional(
            "socket",
            "The daemon's control socket (server.control_socket)",
            Some("/run/boxapi/control.sock"),
        ),
        // ANSWER_TIMEOUT's seconds (a unit test holds them equal).
        optional(
            "timeout",
            "Seconds to wait for the daemon's answer before giving up (exit 69)",
            Some("15"),
        ),
    ],
    subs: &[
        cmd(
            "status",
            "Print the daemon's state, tools and certificate expiry",
        ),
        cmd("disable", "Subscriber switch-off: close the listeners"),
        cmd("enable", "Subscriber switch-on"),
        Cmd {
            opts: &[optional("retry-after", "", Some("300"))],
            ..cmd(
                "suspend",
                "Operator emergency restriction: every API request gets 503",
            )
        },
        cmd("resume", "Lift a suspension"),
        Cmd {
            pos: TOOL,
            ..cmd("revoke", "Refuse this tool's tokens and origins at once")
        },
        Cmd {
            pos: TOOL,
            ..cmd("unrevoke", "Accept this tool again")
        },
        cmd(
            "reload",
            "Re-read config, certificate and keys; keep the old ones on any error",
        ),
        cmd(
            "tools",
            "Print every tool (JSON list): state, validity, what is withheld from it, its activity",
        ),
        Cmd {
            pos: SECTION,
            opts: &[optional("tool", "", None)],
            ..cmd(
                "withhold",
                "Subscriber: stop sharing a card section with every tool, or with one",
            )
        },
        Cmd {
            pos: SECTION,
            opts: &[optional("tool", "", None)],
            ..cmd(
                "allow",
                "Subscriber: share a withheld card section again, with every tool or with one",
            )
        },
        Cmd {
            pos: &[Pos {
                name: "file",
                choices: &[],
            }],
            ..cmd(
                "publish-fleet",
                "Authority: serve this signed fleet document",
            )
        },
        // For the OpenWrt rpcd plugin: run METHOD with its JSON arguments read on stdin and
        // print one JSON object, errors included ({"error": "..."}).
        Cmd {
            pos: &[Pos {
                name: "method",
                choices: &[],
            }],
            hidden: true,
            ..cmd("rpc", "")
        },
    ],
    ..cmd("ctl", "Talk to a running daemon through its control socket")
};

enum CtlCommand {
    Status,
    Disable,
    Enable,
    Suspend {
        retry_after: u64,
    },
    Resume,
    Revoke {
        tool: String,
    },
    Unrevoke {
        tool: String,
    },
    Reload,
    Tools,
    Withhold {
        section: String,
        tool: Option<String>,
    },
    Allow {
        section: String,
        tool: Option<String>,
    },
    Rpc {
        method: String,
    },
    PublishFleet {
        file: PathBuf,
    },
}

/// `ctl`'s arguments from the parsed command line, or the usage error's exit code.
pub fn args(m: &Matches) -> Result<CtlArgs, i32> {
    let timeout: u64 = m.parsed("timeout", "")?;
    if !(1..=3600).contains(&timeout) {
        return Err(m.fail(&format!(
            "invalid value '{timeout}' for '--timeout <TIMEOUT>': {timeout} is not in 1..=3600"
        )));
    }
    let tool = m.get("tool").map(str::to_owned);
    let command = match m.command(2) {
        "status" => CtlCommand::Status,
        "disable" => CtlCommand::Disable,
        "enable" => CtlCommand::Enable,
        "suspend" => CtlCommand::Suspend {
            retry_after: m.parsed("retry-after", "")?,
        },
        "resume" => CtlCommand::Resume,
        "revoke" => CtlCommand::Revoke {
            tool: m.positional(0),
        },
        "unrevoke" => CtlCommand::Unrevoke {
            tool: m.positional(0),
        },
        "reload" => CtlCommand::Reload,
        "tools" => CtlCommand::Tools,
        "withhold" => CtlCommand::Withhold {
            section: m.positional(0),
            tool,
        },
        "allow" => CtlCommand::Allow {
            section: m.positional(0),
            tool,
        },
        // Absolute: the daemon reads it from its own working directory.
        "publish-fleet" => CtlCommand::PublishFleet {
            file: std::path::absolute(m.positional(0)).map_err(|e| m.fail(&e.to_string()))?,
        },
        _ => CtlCommand::Rpc {
            method: m.positional(0),
        },
    };
    Ok(CtlArgs {
        socket: PathBuf::from(m.value("socket")),
        timeout,
        command,
    })
}

fn request(cmd: CtlCommand) -> Value {
    match cmd {
        CtlCommand::Status => json!({ "cmd": "status" }),
        CtlCommand::Disable => json!({ "cmd": "disable" }),
        CtlCommand::Enable => json!({ "cmd": "enable" }),
        CtlCommand::Suspend { retry_after } => {
            json!({ "cmd": "suspend", "retry_after": retry_after })
        }
        CtlCommand::Resume => json!({ "cmd": "resume" }),
        CtlCommand::Revoke { tool } => json!({ "cmd": "revoke", "tool": tool }),
        CtlCommand::Unrevoke { tool } => json!({ "cmd": "unrevoke", "tool": tool }),
        CtlCommand::Reload => json!({ "cmd": "reload" }),
        CtlCommand::Tools => json!({ "cmd": "tools" }),
        CtlCommand::Withhold { section, tool } => {
            json!({ "cmd": "withhold", "section": section, "tool": tool })
        }
        CtlCommand::Allow { section, tool } => {
            json!({ "cmd": "allow", "section": section, "tool": tool })
        }
        CtlCommand::Rpc { method } => json!({ "cmd": method }),
        CtlCommand::PublishFleet { file } => {
            json!({ "cmd": "publish_fleet", "file": file.to_string_lossy() })
        }
    }
}

/// How long `ctl` waits by default for the daemon to take its line and answer. A command is a
/// state write or a reload (milliseconds to a second); a daemon silent this long is hung.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("boxapi daemon not reachable at {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("boxapi daemon at {0} did not answer within {1} s (hung or overloaded)")]
    Timeout(String, u64),
    #[error("boxapi daemon at {0} closed the connection without answering")]
    Closed(String),
    #[error("unexpected reply from the daemon")]
    BadReply,
}

/// Sends one command line and reads the one-line reply.
fn call(socket: &Path, req: &Value, timeout: Duration) -> Result<Value, CtlError> {
    let name = || socket.display().to_string();
    let unreachable = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            CtlError::Timeout(name(), timeout.as_secs())
        } else {
            CtlError::Unreachable(name(), e)
        }
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(unreachable)?;
    let mut line = req.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = String::new();
    // Bounded: an answer is one line of at most a few hundred kilobytes (`ctl tools`).
    BufReader::new(&stream)
        .take(1 << 20)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    if answer.is_empty() {
        return Err(CtlError::Closed(name()));
    }
    serde_json::from_str::<Value>(&answer).map_err(|_| CtlError::BadReply)
}

pub fn run(args: CtlArgs) -> i32 {
    let timeout = Duration::from_secs(args.timeout);
    if let CtlCommand::Rpc { method } = &args.command {
        return rpc(&args.socket, method, timeout.min(RPC_TIMEOUT));
    }
    let list_only = matches!(args.command, CtlCommand::Tools);
    let v = match call(&args.socket, &request(args.command), timeout) {
        Ok(v) => v,
        Err(e @ CtlError::BadReply) => {
            eprintln!("{e}");
            return EXIT_FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return EXIT_UNAVAILABLE;
        }
    };
    if v.get("ok") == Some(&Value::Bool(true)) {
        // `ctl tools` prints the list itself (contract §7); the other commands the whole reply.
        let shown = if list_only { &v["tools"] } else { &v };
        // `{:#}` is to_string_pretty's output through Value's Display, whose pretty writer the
        // binary has anyway: a second one (into a Vec) cost 1.2 KB.
        println!("{shown:#}");
        EXIT_OK
    } else {
        let err = v.get("error").and_then(Value::as_str).unwrap_or("failed");
        eprintln!("{err}");
        if let Some(problems) = v.get("problems").and_then(Value::as_array) {
            for p in problems.iter().filter_map(Value::as_str) {
                eprintln!("{p}");
            }
        }
        EXIT_FAILURE
    }
}

/// rpcd passes a method's arguments as one JSON object of a few bytes.
const MAX_RPC_ARGS: u64 = 4096;
/// The argument through which uhttpd's /ubus names the caller's rpcd session.
const RPC_SESSION: &str = "ubus_rpc_session";
/// rpcd gives a plugin 30 s by default; answer well within it.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What the rpcd plugin's methods are allowed to do: the subscriber's controls, nothing of the
/// operator's (no suspend, revoke or reload from the box UI).
fn rpc_request(method: &str, args: &Map<String, Value>) -> Result<Value, String> {
    let string = |k: &str| -> Result<Option<&str>, String> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("argument {k:?} must be a string")),
        }
    };
    let allowed: &[&str] = match method {
        "status" | "tools" | "enable" | "disable" => &[],
        "withhold" | "allow" => &["section", "tool"],
        other => return Err(format!("unknown method {other:?}")),
    };
    // uhttpd's /ubus adds the caller's session to every call's arguments, and rpcd hands them
    // to the plugin as they are: rpcd has already checked it against the ACL, so it is only
    // accepted (as a string) and otherwise ignored.
    string(RPC_SESSION)?;
    if let Some(k) = args
        .keys()
        .find(|k| *k != RPC_SESSION && !allowed.contains(&k.as_str()))
    {
        return Err(format!("unknown argument {k:?} for {method}"));
    }
    if allowed.is_empty() {
        return Ok(json!({ "cmd": method }));
    }
    let section = string("section")?.ok_or("argument \"section\" is required")?;
    if Section::from_name(section).is_none() {
        return Err(format!("section {section:?} is not one of {SECTION_NAMES}"));
    }
    let mut req = json!({ "cmd": method, "section": section });
    if let Some(tool) = string("tool")?.filter(|t| !t.is_empty()) {
        req["tool"] = json!(tool);
    }
    Ok(req)
}

/// `boxapi ctl rpc METHOD`: always prints exactly one JSON object (rpcd turns anything else into
/// a bare ubus error), `{"error": ...}` when something is wrong; exit 0 on success, 1 otherwise.
fn rpc(socket: &Path, method: &str, timeout: Duration) -> i32 {
    let answer = rpc_answer(socket, method, timeout);
    let ok = answer.get("error").is_none();
    println!("{answer}");
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

fn rpc_answer(socket: &Path, method: &str, timeout: Duration) -> Value {
    let fail = |e: String| json!({ "error": e });
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_RPC_ARGS + 1)
        .read_to_end(&mut input)
    {
        return fail(format!("cannot read the arguments: {e}"));
    }
    if input.len() as u64 > MAX_RPC_ARGS {
        return fail(format!("arguments larger than {MAX_RPC_ARGS} bytes"));
    }
    let args = if input.trim_ascii().is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&input) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return fail("the arguments must be a JSON object".into()),
            Err(e) => return fail(format!("the arguments are not JSON: {e}")),
        }
    };
    let req = match rpc_request(method, &args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let reply = match call(socket, &req, timeout) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    match reply {
        Value::Object(mut m) if m.get("ok") == Some(&Value::Bool(true)) => {
            m.remove("ok");
            Value::Object(m)
        }
        Value::Object(m) => {
            let err = m.get("error").and_then(Value::as_str).unwrap_or("failed");
            json!({ "error": err, "problems": m.get("problems") })
        }
        _ => fail(CtlError::BadReply.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rpc_methods_map_to_subscriber_commands_only() {
        assert_eq!(
            rpc_request("tools", &Map::new()),
            Ok(json!({"cmd": "tools"}))
        );
        assert_eq!(
            rpc_request("withhold", &args(json!({"section": "wifi", "tool": "a"}))),
            Ok(json!({"cmd": "withhold", "section": "wifi", "tool": "a"}))
        );
        assert_eq!(
            rpc_request("allow", &args(json!({"section": "wifi", "tool": ""}))),
            Ok(json!({"cmd": "allow", "section": "wifi"}))
        );
        // As uhttpd's /ubus sends them: with the caller's session, which is not passed on.
        assert_eq!(
            rpc_request("status", &args(json!({"ubus_rpc_session": "00ff"}))),
            Ok(json!({"cmd": "status"}))
        );
        for (m, a) in [
            ("suspend", json!({})),
            ("revoke", json!({"tool": "a"})),
            ("reload", json!({})),
            ("status", json!({"x": 1})),
            ("status", json!({"ubus_rpc_session": 1})),
            ("withhold", json!({})),
            ("withhold", json!({"section": "secrets"})),
            ("withhold", json!({"section": ["wifi"]})),
            ("allow", json!({"section": "wifi", "tool": 3})),
        ] {
            assert!(rpc_request(m, &args(a.clone())).is_err(), "{m} {a}");
        }
    }

    #[test]
    fn the_cli_knows_every_section() {
        let names: Vec<&str> = Section::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, SECTIONS);
    }

    #[test]
    fn the_default_timeout_is_answer_timeout() {
        let timeout = CTL.opts.iter().find(|o| o.name == "timeout").unwrap();
        assert_eq!(
            timeout.default,
            Some(ANSWER_TIMEOUT.as_secs().to_string().as_str())
        );
    }
}
