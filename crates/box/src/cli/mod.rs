//! The command line (contract §2): argument parsing, each command, and exit codes.
pub mod ctl;

use crate::snapshot::Snapshot;
use boxapi_core::auth::jwk::{self, Alg};
use boxapi_core::auth::mint;
use boxapi_core::config::Problem;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use boxapi_core::daemon::exit::{self, print_problems};
pub use boxapi_core::daemon::exit::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE};

#[derive(Parser)]
#[command(
    name = "boxapi",
    version,
    about = "LAN-only HTTPS measurement API for ISP boxes (ARCEP 2019-1410, annex 2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgArg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Obtain (or renew) the box's own certificate now from the operator's authority
    Enrol {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names; list all problems
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Zero-setup local demo on loopback
    Demo {
        /// Where to keep the demo's CA, keys and config
        #[arg(long, default_value = "boxapi-demo")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Write DIR/KID.private.jwk (mode 0600) and DIR/KID.jwk (public only)
    Keygen {
        #[arg(long, value_enum)]
        alg: AlgArg,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a signed access token (operator tooling, tests)
    Token {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        tool: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        aud: String,
        #[arg(long)]
        iss: String,
        /// Lifetime in seconds, at most 900
        #[arg(long, default_value_t = 900)]
        ttl: u64,
    },
    /// Talk to a running daemon through its control socket
    Ctl(ctl::CtlArgs),
    /// Operator tooling for the signed tool registry
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Sign a registry (JSON: {"version": N, "tools": [...]}) with the operator's root key
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a signed registry with the operator's root public key; print its content
    Verify {
        #[arg(long)]
        key: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
    },
}

/// Parses `args` and runs the command; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: Cli = match exit::parse(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => exit::check_config(&config, Snapshot::load),
        Command::Enrol { config } => enrol(&config),
        Command::Demo { dir, listen } => demo(&dir, listen),
        Command::Keygen { alg, kid, out } => keygen(alg, &kid, &out),
        Command::Token {
            key,
            tool,
            scope,
            aud,
            iss,
            ttl,
        } => token(&key, &tool, &scope, &aud, &iss, ttl),
        Command::Ctl(args) => ctl::run(args),
        Command::Registry(cmd) => registry(cmd),
    }
}

/// `boxapi enrol`: one enrolment now (first boot, tests, or a renewal by hand). A running daemon
/// picks the new certificate up by itself (it watches the files). Exits 0, or 1 with the reason
/// (contract §2), a configuration it cannot use included: first-boot scripts test for 0 or 1.
fn enrol(path: &Path) -> i32 {
    let mut problems = Vec::new();
    let config = boxapi_core::config::load(path, &mut problems);
    let config = match config {
        Some(c) if problems.is_empty() => c,
        _ => {
            print_problems(&problems);
            return EXIT_FAILURE;
        }
    };
    if config.enrol.is_none() {
        eprintln!(
            "{}: enrol: add an [enrol] section (docs/certificates.md)",
            path.display()
        );
        return EXIT_FAILURE;
    }
    match enrol_now(&config) {
        Ok(done) => {
            println!(
                "{}: certificate installed in {} (valid until {})",
                done.name,
                config.server.cert.display(),
                boxapi_core::time::rfc3339(done.not_after)
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("enrol: {e}");
            EXIT_FAILURE
        }
    }
}

fn enrol_now(
    config: &boxapi_core::config::Config,
) -> Result<crate::enrol::Enrolled, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addrs = crate::lan::published_addrs(&config.server, &crate::lan::interface_addrs());
    Ok(rt.block_on(crate::enrol::enrol(config, &addrs))?)
}

/// Loads the configuration for serving, once. An enrolling box whose own certificate and key
/// cannot be used (first boot: none yet; a power cut between the key's install and the chain's)
/// enrols first and loads again: without that it would never serve again without a hand at the
/// console. Any other problem is reported as by `check-config`.
fn load_for_serving(path: &Path) -> Result<Snapshot, i32> {
    let problems = match Snapshot::load(path) {
        Ok(snapshot) => return Ok(snapshot),
        Err(problems) => problems,
    };
    let identity_only = !problems.is_empty()
        && problems
            .iter()
            .all(|p| matches!(p.key(), Some("server.cert" | "server.key")));
    // The configuration itself parsed (only its certificate files are at fault): read it again
    // to enrol, on this rare path only.
    let enrolling = identity_only
        .then(|| boxapi_core::config::load(path, &mut Vec::new()))
        .flatten()
        .filter(|c| c.enrol.is_some());
    let Some(config) = enrolling else {
        print_problems(&problems);
        return Err(EXIT_USAGE);
    };
    match enrol_now(&config) {
        Ok(done) => boxapi_core::log::event("enrolled", &[("name", &done.name)]),
        // The load below reports what is still wrong.
        Err(e) => boxapi_core::log::event("enrol_failed", &[("error", &e.to_string())]),
    }
    exit::load(path, Snapshot::load)
}

/// Loads, binds and serves; `announce` runs once the listeners are bound.
fn serve_with(config: &Path, announce: impl FnOnce(&[SocketAddr])) -> i32 {
    let snapshot = match load_for_serving(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let server = &snapshot.config.server;
    if server.listen_interfaces.is_empty() && server.listen.is_empty() {
        // A valid configuration for the authority alone: not one the box can serve.
        print_problems(&[Problem::invalid(
            "server",
            "set listen_interfaces or listen (nothing to listen on; [authority] listen is for boxapi-authority)",
        )]);
        return EXIT_USAGE;
    }
    exit::ran(crate::daemon::run(snapshot, announce))
}

fn serve(config: &Path) -> i32 {
    serve_with(config, |_| {})
}

#[cfg(not(feature = "demo"))]
fn demo(_dir: &Path, _listen: SocketAddr) -> i32 {
    eprintln!("demo: this build of boxapi was made without the demo (feature \"demo\")");
    EXIT_USAGE
}

#[cfg(feature = "demo")]
fn demo(dir: &Path, listen: SocketAddr) -> i32 {
    let config = match crate::demo::prepare(dir, listen) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            return EXIT_FAILURE;
        }
    };
    serve_with(&config, |addrs| {
        let Some(addr) = addrs.first() else { return };
        match crate::demo::token(dir) {
            Ok(token) => {
                println!(
                    "boxapi demo: serving https://{addr} with the files in {} (Ctrl-C stops)",
                    dir.display()
                );
                println!("Paste this into another terminal (the token is valid for 15 minutes):\n");
                println!("{}\n", crate::demo::curl_command(dir, *addr, &token));
            }
            Err(e) => eprintln!("demo: {e}"),
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })
}

fn keygen(alg: AlgArg, kid: &str, out: &Path) -> i32 {
    if !mint::valid_file_kid(kid) {
        eprintln!("--kid: use 1-128 of A-Z a-z 0-9 . _ - (it names the files)");
        return EXIT_USAGE;
    }
    let alg = match alg {
        AlgArg::Es256 => Alg::Es256,
        AlgArg::EdDsa => Alg::EdDsa,
    };
    let private_path = out.join(format!("{kid}.private.jwk"));
    let public_path = out.join(format!("{kid}.jwk"));
    if private_path.exists() || public_path.exists() {
        eprintln!(
            "{}: a key with this kid already exists; not overwriting it",
            out.display()
        );
        return EXIT_FAILURE;
    }
    let key = match mint::generate(alg, kid) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keygen: {e}");
            return EXIT_FAILURE;
        }
    };
    let written = std::fs::create_dir_all(out)
        .map_err(|e| format!("{}: {e}", out.display()))
        .and_then(|_| {
            boxapi_core::files::write_private(&private_path, key.to_json().to_string().as_bytes())
                .map_err(|e| e.to_string())
        })
        .and_then(|_| {
            std::fs::write(&public_path, key.key.to_json().to_string())
                .map_err(|e| format!("{}: {e}", public_path.display()))
        });
    match written {
        Ok(()) => {
            println!("{}\n{}", private_path.display(), public_path.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("keygen: {e}");
            EXIT_FAILURE
        }
    }
}

fn token(key: &Path, tool: &str, scope: &str, aud: &str, iss: &str, ttl: u64) -> i32 {
    if !(1..=900).contains(&ttl) {
        eprintln!("--ttl: {ttl} is not allowed; tokens live at most 900 seconds (15 minutes)");
        return EXIT_USAGE;
    }
    let text = match std::fs::read_to_string(key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("--key {}: {e}", key.display());
            return EXIT_USAGE;
        }
    };
    let private = match jwk::parse_private(&text) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("--key {}: {e}", key.display());
            return EXIT_USAGE;
        }
    };
    let spec = mint::TokenSpec {
        tool,
        scope,
        audience: aud,
        issuer: iss,
        ttl,
        now: boxapi_core::time::unix_now(),
    };
    match mint::token(&private, &spec) {
        Ok(t) => {
            println!("{t}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("token: {e}");
            EXIT_FAILURE
        }
    }
}

fn registry(cmd: RegistryCommand) -> i32 {
    use boxapi_core::auth::signed;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let result = match cmd {
        RegistryCommand::Sign { key, input, out } => read(&key)
            .and_then(|k| {
                jwk::parse_private(&String::from_utf8_lossy(&k))
                    .map_err(|e| format!("--key {}: {e}", key.display()))
            })
            .and_then(|k| {
                read(&input).and_then(|p| {
                    signed::sign(&k, &p).map_err(|e| format!("--in {}: {e}", input.display()))
                })
            })
            .and_then(|jws| {
                std::fs::write(&out, jws + "\n").map_err(|e| format!("{}: {e}", out.display()))
            }),
        RegistryCommand::Verify { key, input } => read(&key)
            .and_then(|k| {
                jwk::parse_public_set(&String::from_utf8_lossy(&k))
                    .ok()
                    .and_then(|ks| ks.into_iter().next())
                    .ok_or_else(|| format!("--key {}: not a public JWK", key.display()))
            })
            .and_then(|k| {
                read(&input).and_then(|j| {
                    signed::verify(&k, &j).map_err(|e| format!("--in {}: {e}", input.display()))
                })
            })
            .map(|r| {
                let ids: Vec<&str> = r.tools.iter().map(|(t, _)| t.id.as_str()).collect();
                println!(
                    "version {}: {} tools ({})",
                    r.version,
                    ids.len(),
                    ids.join(", ")
                );
            }),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}
