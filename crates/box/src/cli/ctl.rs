//! `boxapi ctl`: sends one command to the daemon's control socket and prints the reply.
use super::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct CtlArgs {
    /// The daemon's control socket (server.control_socket)
    #[arg(long, default_value = "/run/boxapi/control.sock")]
    socket: PathBuf,
    /// Seconds to wait for the daemon's answer before giving up (exit 69)
    #[arg(long, default_value_t = ANSWER_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Print the daemon's state, tools and certificate expiry
    Status,
    /// Subscriber switch-off: close the listeners
    Disable,
    /// Subscriber switch-on
    Enable,
    /// Operator emergency restriction: every API request gets 503
    Suspend {
        #[arg(long, default_value_t = 300)]
        retry_after: u64,
    },
    /// Lift a suspension
    Resume,
    /// Refuse this tool's tokens and origins at once
    Revoke { tool: String },
    /// Accept this tool again
    Unrevoke { tool: String },
    /// Re-read config, certificate and keys; keep the old ones on any error
    Reload,
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
    }
}

/// How long `ctl` waits by default for the daemon to take its line and answer. A command is a
/// state write or a reload (milliseconds to a second); a daemon silent this long is hung.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

pub fn run(args: CtlArgs) -> i32 {
    let timeout = Duration::from_secs(args.timeout);
    let unreachable = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            eprintln!(
                "boxapi daemon at {} did not answer within {} s (hung or overloaded)",
                args.socket.display(),
                timeout.as_secs()
            );
        } else {
            eprintln!(
                "boxapi daemon not reachable at {}: {e}",
                args.socket.display()
            );
        }
        EXIT_UNAVAILABLE
    };
    let mut stream = match UnixStream::connect(&args.socket) {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    if let Err(e) = stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
    {
        return unreachable(e);
    }
    let mut line = request(args.command).to_string();
    line.push('\n');
    if let Err(e) = stream.write_all(line.as_bytes()) {
        return unreachable(e);
    }
    let mut answer = String::new();
    // Bounded: an answer is one line of at most a few kilobytes.
    if let Err(e) = BufReader::new(&stream).take(1 << 20).read_line(&mut answer) {
        return unreachable(e);
    }
    if answer.is_empty() {
        eprintln!(
            "boxapi daemon at {} closed the connection without answering",
            args.socket.display()
        );
        return EXIT_UNAVAILABLE;
    }
    let Ok(v) = serde_json::from_str::<Value>(&answer) else {
        eprintln!("unexpected reply from the daemon");
        return EXIT_FAILURE;
    };
    if v.get("ok") == Some(&Value::Bool(true)) {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
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
