//! The command line (contract §2): argument parsing, each command, and exit codes.
mod args;
pub mod ctl;

use crate::snapshot::Snapshot;
use args::{cmd, opt, optional, Cmd, Matches};
use boxapi_core::auth::jwk::{self, Alg};
use boxapi_core::auth::mint;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use boxapi_core::daemon::exit::{self, print_problems};
pub use boxapi_core::daemon::exit::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE};

const CONFIG: &[args::Opt] = &[opt("config", "")];

/// The command line of contract §2.
static BOXAPI: Cmd = Cmd {
    subs: &[
        Cmd {
            opts: CONFIG,
            ..cmd("serve", "Run the daemon in the foreground")
        },
        Cmd {
            opts: CONFIG,
            ..cmd(
                "enrol",
                "Obtain (or renew) the box's own certificate now from the operator's authority",
            )
        },
        Cmd {
            opts: CONFIG,
            ..cmd(
                "check-config",
                "Validate the configuration and every file it names; list all problems",
            )
        },
        Cmd {
            opts: &[
                optional(
                    "dir",
                    "Where to keep the demo's CA, keys and config",
                    Some("boxapi-demo"),
                ),
                optional("listen", "", Some("127.0.0.1:8443")),
            ],
            ..cmd("demo", "Zero-setup local demo on loopback")
        },
        Cmd {
            opts: &[
                args::Opt {
                    choices: &["ES256", "EdDSA"],
                    ..opt("alg", "")
                },
                opt("kid", ""),
                opt("out", ""),
            ],
            ..cmd(
                "keygen",
                "Write DIR/KID.private.jwk (mode 0600) and DIR/KID.jwk (public only)",
            )
        },
        Cmd {
            opts: &[
                opt("key", ""),
                opt("tool", ""),
                opt("scope", ""),
                opt("aud", ""),
                opt("iss", ""),
                optional("ttl", "Lifetime in seconds, at most 900", Some("900")),
            ],
            ..cmd("token", "Print a signed access token (operator tooling, tests)")
        },
        ctl::CTL,
        Cmd {
            subs: &[
                Cmd {
                    opts: &[opt("key", ""), opt("in", ""), opt("out", "")],
                    ..cmd(
                        "sign",
                        "Sign a registry (JSON: {\"version\": N, \"tools\": [...]}) with the operator's root key",
                    )
                },
                Cmd {
                    opts: &[opt("key", ""), opt("in", "")],
                    ..cmd(
                        "verify",
                        "Verify a signed registry with the operator's root public key; print its content",
                    )
                },
            ],
            ..cmd("registry", "Operator tooling for the signed tool registry")
        },
        Cmd {
            subs: &[
                Cmd {
                    opts: &[opt("key", ""), opt("in", ""), opt("out", "")],
                    ..cmd(
                        "sign",
                        "Sign a fleet document (registry + restriction) with the registry root key",
                    )
                },
                Cmd {
                    opts: &[opt("key", ""), opt("in", "")],
                    ..cmd(
                        "verify",
                        "Verify a signed fleet document; print it",
                    )
                },
            ],
            ..cmd(
                "fleet",
                "The operator's signed fleet document",
            )
        },
    ],
    ..cmd(
        "boxapi",
        "LAN-only HTTPS measurement API for ISP boxes (ARCEP 2019-1410, annex 2)",
    )
};

/// Parses `args` and runs the command; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    match args::parse(&BOXAPI, env!("CARGO_PKG_VERSION"), args) {
        Ok(m) => run(&m).unwrap_or_else(|code| code),
        Err(code) => code,
    }
}

fn run(m: &Matches) -> Result<i32, i32> {
    let path = |name: &str| PathBuf::from(m.value(name));
    Ok(match m.command(1) {
        "serve" => serve(&path("config")),
        "check-config" => check_config(&path("config")),
        "enrol" => enrol(&path("config")),
        "demo" => demo(&path("dir"), m.parsed("listen", "")?),
        "keygen" => {
            let alg = match m.value("alg").as_str() {
                "ES256" => Alg::Es256,
                _ => Alg::EdDsa,
            };
            keygen(alg, &m.value("kid"), &path("out"))
        }
        "token" => token(
            &path("key"),
            &m.value("tool"),
            &m.value("scope"),
            &m.value("aud"),
            &m.value("iss"),
            m.parsed("ttl", "")?,
        ),
        "ctl" => ctl::run(ctl::args(m)?),
        "fleet" => fleet_document(
            m.command(2) == "sign",
            [&path("key"), &path("in"), &path("out")],
        ),
        _ => registry_document(
            m.command(2) == "sign",
            [&path("key"), &path("in"), &path("out")],
        ),
    })
}

/// `boxapi enrol`: one enrolment now (first boot, tests, or a renewal by hand). A running daemon
/// picks the new certificate up by itself (it watches the files). Exits 0, or 1 with the reason
/// (contract §2), a configuration it cannot use included: first-boot scripts test for 0 or 1.
fn enrol(path: &Path) -> i32 {
    let mut problems = Vec::new();
    let config = crate::config::load(path, &mut problems);
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
                config.common.server.cert.display(),
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
    config: &crate::config::Config,
) -> Result<crate::enrol::Enrolled, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addrs = crate::lan::published_addrs(&config.common.server, &crate::lan::interface_addrs());
    Ok(rt.block_on(crate::enrol::enrol(config, &addrs))?)
}

/// `check-config`: as the kit's, except that a box with `[enrol]` whose own certificate or key
/// does not exist yet passes, as `serve` would enrol first (first boot); the files enrolment needs
/// must then load. A certificate or key that exists but is broken still fails.
fn check_config(path: &Path) -> i32 {
    let problems = match Snapshot::load(path) {
        Ok(s) => {
            match &s.identity_fallback {
                Some(why) => println!(
                    "{}: OK, but {why}: serve uses the previous good pair ({})",
                    path.display(),
                    crate::enrol::pair::previous_path(&s.config.common.server.key).display()
                ),
                None => println!("{}: OK", path.display()),
            }
            return EXIT_OK;
        }
        Err(problems) => problems,
    };
    // Not there, in a directory that is: where enrolment will write it.
    let not_there = |p: &boxapi_core::config::Problem| {
        matches!(p, boxapi_core::config::Problem::File { path, .. }
            if !path.as_os_str().is_empty()
                && boxapi_core::files::parent(path).is_dir()
                && std::fs::symlink_metadata(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
    };
    let first_boot = problems.iter().all(not_there);
    let Some(config) = enrolling(path, &problems).filter(|_| first_boot) else {
        print_problems(&problems);
        return EXIT_USAGE;
    };
    if let Some(e) = &config.enrol {
        if let Err(why) =
            crate::enrol::client::Identity::load(&e.authority_ca, &e.device_cert, &e.device_key)
        {
            eprintln!("{why}");
            return EXIT_USAGE;
        }
    }
    let server = &config.common.server;
    println!(
        "{}: OK ({} and {} not there yet: serve enrols first)",
        path.display(),
        server.cert.display(),
        server.key.display()
    );
    EXIT_OK
}

/// The configuration to enrol with when `problems` (from [`Snapshot::load`]) are only about the
/// box's own certificate and key and it has `[enrol]`; the configuration itself parsed.
fn enrolling(
    path: &Path,
    problems: &[boxapi_core::config::Problem],
) -> Option<crate::config::Config> {
    let identity_only = !problems.is_empty()
        && problems
            .iter()
            .all(|p| matches!(p.key(), Some("server.cert" | "server.key")));
    // Read again, on this rare path only.
    identity_only
        .then(|| crate::config::load(path, &mut Vec::new()))
        .flatten()
        .filter(|c| c.enrol.is_some())
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
    let Some(config) = enrolling(path, &problems) else {
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

fn keygen(alg: Alg, kid: &str, out: &Path) -> i32 {
    if !mint::valid_file_kid(kid) {
        eprintln!("--kid: use 1-128 of A-Z a-z 0-9 . _ - (it names the files)");
        return EXIT_USAGE;
    }
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
    // Bounded as every configured key file is: `/dev/zero` or a FIFO is refused, not read.
    let text = match boxapi_core::files::read_text_limited(key, boxapi_core::files::limit::JWK) {
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

/// `registry verify`'s line: the version and the tools.
#[cfg(feature = "operator-tools")]
fn registry_summary(r: &boxapi_core::auth::signed::SignedRegistry) -> String {
    let ids: Vec<&str> = r.tools.iter().map(|(t, _)| t.id.as_str()).collect();
    format!(
        "version {}: {} tools ({})",
        r.version,
        ids.len(),
        ids.join(", ")
    )
}

/// `registry sign|verify` and `fleet sign|verify`: the operator's tooling, left out of the
/// boxes' builds (feature "operator-tools", on by default; a box only reads these documents).
#[cfg(feature = "operator-tools")]
fn registry_document(sign: bool, paths: [&Path; 3]) -> i32 {
    signed_document(sign, paths, boxapi_core::auth::signed::sign, |k, j| {
        boxapi_core::auth::signed::verify(k, j).map(|r| registry_summary(&r))
    })
}

#[cfg(feature = "operator-tools")]
fn fleet_document(sign: bool, paths: [&Path; 3]) -> i32 {
    signed_document(sign, paths, boxapi_core::auth::fleet::sign, |k, j| {
        boxapi_core::auth::fleet::verify(k, j).map(|d| fleet_summary(&d))
    })
}

#[cfg(not(feature = "operator-tools"))]
fn registry_document(_sign: bool, _paths: [&Path; 3]) -> i32 {
    eprintln!("not in this build of boxapi (feature operator-tools): use a host build");
    EXIT_USAGE
}

#[cfg(not(feature = "operator-tools"))]
use registry_document as fleet_document;

/// `fleet verify`'s line: the registry's, then the restriction.
#[cfg(feature = "operator-tools")]
fn fleet_summary(d: &boxapi_core::auth::fleet::FleetDocument) -> String {
    let restriction = match &d.restriction {
        None => "no restriction".to_owned(),
        Some(r) => {
            let mut text = format!(
                "restriction: {}, retry_after {} s",
                if r.suspended { "suspended" } else { "lifted" },
                r.retry_after
            );
            for (what, v) in [
                ("reason", r.reason.as_ref().map(|x| format!("{x:?}"))),
                ("firmware", r.firmware.as_ref().map(|x| format!("{x:?}"))),
                ("models", r.models.as_ref().map(|x| format!("{x:?}"))),
            ] {
                if let Some(v) = v {
                    text += &format!(", {what} {v}");
                }
            }
            text
        }
    };
    format!("{}; {restriction}", registry_summary(&d.registry))
}

/// `registry sign` or `fleet sign` (`sign`), or their `verify`: `[key, in, out]` (`out` unused
/// by `verify`), the document's signer and its verifier returning the line to print.
#[cfg(feature = "operator-tools")]
fn signed_document(
    sign: bool,
    [key, input, out]: [&Path; 3],
    signer: fn(&jwk::PrivateJwk, &[u8]) -> Result<String, boxapi_core::auth::signed::SignedError>,
    verify: impl Fn(&jwk::PublicJwk, &[u8]) -> Result<String, boxapi_core::auth::signed::SignedError>,
) -> i32 {
    // The registry's own cap bounds the key too (a JWK is far smaller): never a device read whole.
    let read = |p: &Path| {
        boxapi_core::files::read_limited(p, boxapi_core::files::limit::REGISTRY)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let result = if sign {
        read(key)
            .and_then(|k| {
                jwk::parse_private(&String::from_utf8_lossy(&k))
                    .map_err(|e| format!("--key {}: {e}", key.display()))
            })
            .and_then(|k| {
                read(input).and_then(|p| {
                    signer(&k, &p).map_err(|e| format!("--in {}: {e}", input.display()))
                })
            })
            .and_then(|jws| {
                std::fs::write(out, jws + "\n").map_err(|e| format!("{}: {e}", out.display()))
            })
    } else {
        read(key)
            .and_then(|k| {
                jwk::parse_public_set(&String::from_utf8_lossy(&k))
                    .ok()
                    .and_then(|ks| ks.into_iter().next())
                    .ok_or_else(|| format!("--key {}: not a public JWK", key.display()))
            })
            .and_then(|k| {
                read(input).and_then(|j| {
                    verify(&k, &j).map_err(|e| format!("--in {}: {e}", input.display()))
                })
            })
            .map(|line| println!("{line}"))
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}
