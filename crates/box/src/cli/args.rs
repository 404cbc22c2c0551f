//! The command line's grammar at work: parsing, `--help` and usage errors (exit 64), written out
//! from a static description rather than derived with clap, whose code was ~140 KB of every box.
use super::{EXIT_OK, EXIT_USAGE};
use std::ffi::OsString;
use std::fmt::Write as _;

/// `--NAME VALUE` (or `--NAME=VALUE`).
pub struct Opt {
    pub name: &'static str,
    pub help: &'static str,
    pub default: Option<&'static str>,
    pub required: bool,
    /// The values it takes, when a closed list.
    pub choices: &'static [&'static str],
}

/// A positional argument; every one is required.
pub struct Pos {
    pub name: &'static str,
    pub choices: &'static [&'static str],
}

/// A command: its options and arguments, or its subcommands.
pub struct Cmd {
    pub name: &'static str,
    pub about: &'static str,
    pub opts: &'static [Opt],
    pub pos: &'static [Pos],
    pub subs: &'static [Cmd],
    /// Left out of the help (the rpcd plugin's entry point).
    pub hidden: bool,
}

pub const fn opt(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        help,
        default: None,
        required: true,
        choices: &[],
    }
}

pub const fn optional(
    name: &'static str,
    help: &'static str,
    default: Option<&'static str>,
) -> Opt {
    Opt {
        name,
        help,
        default,
        required: false,
        choices: &[],
    }
}

pub const fn cmd(name: &'static str, about: &'static str) -> Cmd {
    Cmd {
        name,
        about,
        opts: &[],
        pos: &[],
        subs: &[],
        hidden: false,
    }
}

/// What was given: the commands chosen, root first, and the values.
pub struct Matches {
    pub path: Vec<&'static str>,
    values: Vec<(&'static str, String)>,
    positionals: Vec<String>,
    /// The commands chosen, root first: their options' defaults.
    cmds: Vec<&'static Cmd>,
    usage: String,
}

impl Matches {
    /// The command chosen at `depth` (1: the root's subcommand), or "".
    pub fn command(&self, depth: usize) -> &'static str {
        self.path.get(depth).copied().unwrap_or("")
    }

    /// An option's value, or its default.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| {
                self.cmds
                    .iter()
                    .flat_map(|c| c.opts)
                    .find(|o| o.name == name)
                    .and_then(|o| o.default)
            })
    }

    /// A required option's value (the parser saw to it that it is there).
    pub fn value(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    /// The positional arguments, in order.
    pub fn positional(&self, n: usize) -> String {
        self.positionals.get(n).cloned().unwrap_or_default()
    }

    /// An option's value read as a `T`, or the usage error (printed) and its exit code.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, why: &str) -> Result<T, i32>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.value(name);
        text.parse().map_err(|e: T::Err| {
            let why = if why.is_empty() {
                e.to_string()
            } else {
                why.to_owned()
            };
            self.fail(&format!(
                "invalid value '{text}' for '--{name} <{}>': {why}",
                upper(name)
            ))
        })
    }

    /// Prints a usage error for the chosen command; 64.
    pub fn fail(&self, message: &str) -> i32 {
        usage_error(message, &self.usage)
    }
}

fn upper(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

fn usage_error(message: &str, usage: &str) -> i32 {
    eprintln!("error: {message}\n\nUsage: {usage}\n\nFor more information, try '--help'.");
    EXIT_USAGE
}

/// `boxapi ctl [OPTIONS] <COMMAND>`, `boxapi token [OPTIONS] --key <KEY> ...`.
fn usage(path: &str, cmd: &Cmd) -> String {
    let mut u = path.to_owned();
    if cmd.opts.iter().any(|o| !o.required) {
        u.push_str(" [OPTIONS]");
    }
    for o in cmd.opts.iter().filter(|o| o.required) {
        let _ = write!(u, " --{} <{}>", o.name, upper(o.name));
    }
    for p in cmd.pos {
        let _ = write!(u, " <{}>", upper(p.name));
    }
    if !cmd.subs.is_empty() {
        u.push_str(" <COMMAND>");
    }
    u
}

/// The help page, in clap's layout.
fn help(path: &str, cmd: &Cmd, version: bool) -> String {
    let mut h = format!("{}\n\nUsage: {}\n", cmd.about, usage(path, cmd));
    let row = |h: &mut String, left: &str, width: usize, text: &str| {
        h.push_str(format!("  {left:width$}  {text}").trim_end());
        h.push('\n');
    };
    if !cmd.subs.is_empty() {
        h.push_str("\nCommands:\n");
        let width = cmd
            .subs
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        for s in cmd.subs.iter().filter(|s| !s.hidden) {
            row(&mut h, s.name, width, s.about);
        }
        row(
            &mut h,
            "help",
            width,
            "Print this message or the help of the given subcommand(s)",
        );
    }
    if !cmd.pos.is_empty() {
        h.push_str("\nArguments:\n");
        let names: Vec<String> = cmd
            .pos
            .iter()
            .map(|p| format!("<{}>", upper(p.name)))
            .collect();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        for (p, name) in cmd.pos.iter().zip(&names) {
            let text = if p.choices.is_empty() {
                String::new()
            } else {
                format!("[possible values: {}]", p.choices.join(", "))
            };
            row(&mut h, name, width, &text);
        }
    }
    h.push_str("\nOptions:\n");
    let mut rows: Vec<(String, String)> = cmd
        .opts
        .iter()
        .map(|o| {
            let mut text = o.help.to_owned();
            if let Some(d) = o.default {
                let _ = write!(text, " [default: {d}]");
            }
            if !o.choices.is_empty() {
                let _ = write!(text, " [possible values: {}]", o.choices.join(", "));
            }
            (
                format!("    --{} <{}>", o.name, upper(o.name)),
                text.trim().to_owned(),
            )
        })
        .collect();
    rows.push(("-h, --help".into(), "Print help".into()));
    if version {
        rows.push(("-V, --version".into(), "Print version".into()));
    }
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (left, text) in &rows {
        row(&mut h, left, width, text);
    }
    h
}

/// Parses `args` (the program's name first) against `root`. `Err` is the exit code once the help
/// or the version (0) or a usage error (64) has been printed.
pub fn parse(
    root: &'static Cmd,
    version: &str,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Matches, i32> {
    let mut args = args.into_iter().skip(1);
    let mut cmd = root;
    let mut cmds = vec![root];
    let mut path = vec![root.name];
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let mut positionals = Vec::new();
    let mut only_positionals = false;
    let here = |path: &[&str]| path.join(" ");
    while let Some(arg) = args.next() {
        let Ok(arg) = arg.into_string() else {
            return Err(usage_error(
                "invalid UTF-8 in an argument",
                &usage(&here(&path), cmd),
            ));
        };
        let fail = |msg: String, cmd: &Cmd, path: &[&str]| {
            Err(usage_error(&msg, &usage(&here(path), cmd)))
        };
        if !only_positionals {
            match arg.as_str() {
                "--" => {
                    only_positionals = true;
                    continue;
                }
                "-h" | "--help" => {
                    print!("{}", help(&here(&path), cmd, path.len() == 1));
                    return Err(EXIT_OK);
                }
                "-V" | "--version" if path.len() == 1 => {
                    println!("{} {version}", root.name);
                    return Err(EXIT_OK);
                }
                _ => {}
            }
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (long, None),
                };
                let Some(o) = cmd.opts.iter().find(|o| o.name == name) else {
                    return fail(format!("unexpected argument '--{name}' found"), cmd, &path);
                };
                let shown = format!("--{} <{}>", o.name, upper(o.name));
                let value = match inline {
                    Some(v) => Some(v),
                    None => match args.next().map(OsString::into_string) {
                        Some(Err(_)) => {
                            return fail(
                                format!("invalid UTF-8 in the value of '{shown}'"),
                                cmd,
                                &path,
                            )
                        }
                        v => v.and_then(Result::ok),
                    },
                };
                let Some(value) = value else {
                    return fail(
                        format!("a value is required for '{shown}' but none was supplied"),
                        cmd,
                        &path,
                    );
                };
                if !o.choices.is_empty() && !o.choices.contains(&value.as_str()) {
                    return fail(
                        format!(
                            "invalid value '{value}' for '{shown}'\n  [possible values: {}]",
                            o.choices.join(", ")
                        ),
                        cmd,
                        &path,
                    );
                }
                if values.iter().any(|(n, _)| *n == o.name) {
                    return fail(
                        format!("the argument '{shown}' cannot be used multiple times"),
                        cmd,
                        &path,
                    );
                }
                values.push((o.name, value));
                continue;
            }
            if arg.len() > 1 && arg.starts_with('-') {
                return fail(format!("unexpected argument '{arg}' found"), cmd, &path);
            }
        }
        if !cmd.subs.is_empty() {
            if arg == "help" {
                // `boxapi help ctl status`: the help of the command named.
                let (mut c, mut p) = (cmd, path.clone());
                for name in args.by_ref().filter_map(|a| a.into_string().ok()) {
                    match c.subs.iter().find(|s| s.name == name) {
                        Some(s) => {
                            c = s;
                            p.push(s.name);
                        }
                        None => return fail(format!("unrecognized subcommand '{name}'"), c, &p),
                    }
                }
                print!("{}", help(&here(&p), c, p.len() == 1));
                return Err(EXIT_OK);
            }
            match cmd.subs.iter().find(|s| s.name == arg) {
                Some(s) => {
                    cmd = s;
                    cmds.push(s);
                    path.push(s.name);
                }
                None => return fail(format!("unrecognized subcommand '{arg}'"), cmd, &path),
            }
            continue;
        }
        let Some(p) = cmd.pos.get(positionals.len()) else {
            return fail(format!("unexpected argument '{arg}' found"), cmd, &path);
        };
        if !p.choices.is_empty() && !p.choices.contains(&arg.as_str()) {
            return fail(
                format!(
                    "invalid value '{arg}' for '<{}>'\n  [possible values: {}]",
                    upper(p.name),
                    p.choices.join(", ")
                ),
                cmd,
                &path,
            );
        }
        positionals.push(arg);
    }
    let usage = usage(&here(&path), cmd);
    if !cmd.subs.is_empty() {
        if path.len() == 1 {
            // No command at all: the help, as a usage error.
            eprint!("{}", help(&here(&path), cmd, true));
            return Err(EXIT_USAGE);
        }
        return Err(usage_error(
            &format!(
                "'{}' requires a subcommand but one was not provided",
                here(&path)
            ),
            &usage,
        ));
    }
    let missing: Vec<String> = cmd
        .opts
        .iter()
        .filter(|o| o.required && !values.iter().any(|(n, _)| *n == o.name))
        .map(|o| format!("  --{} <{}>", o.name, upper(o.name)))
        .chain(
            cmd.pos[positionals.len()..]
                .iter()
                .map(|p| format!("  <{}>", upper(p.name))),
        )
        .collect();
    if !missing.is_empty() {
        return Err(usage_error(
            &format!(
                "the following required arguments were not provided:\n{}",
                missing.join("\n")
            ),
            &usage,
        ));
    }
    Ok(Matches {
        path,
        values,
        positionals,
        cmds,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROOT: Cmd = Cmd {
        subs: &[
            Cmd {
                opts: &[opt("config", ""), optional("ttl", "Lifetime", Some("900"))],
                ..cmd("serve", "Run it")
            },
            Cmd {
                opts: &[optional("socket", "The socket", Some("/run/s"))],
                subs: &[
                    cmd("status", "Print the state"),
                    Cmd {
                        pos: &[Pos {
                            name: "section",
                            choices: &["box", "wifi"],
                        }],
                        opts: &[optional("tool", "", None)],
                        ..cmd("withhold", "Withhold")
                    },
                    Cmd {
                        hidden: true,
                        pos: &[Pos {
                            name: "method",
                            choices: &[],
                        }],
                        ..cmd("rpc", "")
                    },
                ],
                ..cmd("ctl", "Talk")
            },
        ],
        ..cmd("boxapi", "The box")
    };

    fn run(args: &[&str]) -> Result<Matches, i32> {
        let args = std::iter::once("boxapi")
            .chain(args.iter().copied())
            .map(OsString::from);
        parse(&ROOT, "1.0", args)
    }

    #[test]
    fn commands_options_defaults_and_positionals() {
        let m = run(&["serve", "--config", "/a b.toml"]).unwrap();
        assert_eq!(m.path, ["boxapi", "serve"]);
        assert_eq!(m.value("config"), "/a b.toml");
        assert_eq!(m.parsed::<u64>("ttl", "").unwrap(), 900);
        let m = run(&["serve", "--ttl=5", "--config=x"]).unwrap();
        assert_eq!(
            (m.value("config"), m.value("ttl")),
            ("x".into(), "5".into())
        );
        let m = run(&["ctl", "--socket", "/s", "withhold", "wifi", "--tool", "t"]).unwrap();
        assert_eq!(m.command(2), "withhold");
        assert_eq!((m.get("socket"), m.get("tool")), (Some("/s"), Some("t")));
        assert_eq!(m.positional(0), "wifi");
        let m = run(&["ctl", "status"]).unwrap();
        assert_eq!((m.get("socket"), m.get("tool")), (Some("/run/s"), None));
        let m = run(&["ctl", "rpc", "--", "--odd"]).unwrap();
        assert_eq!(m.positional(0), "--odd");
    }

    #[test]
    fn help_and_version_exit_0_usage_errors_64() {
        for ok in [
            &["--help"][..],
            &["-V"],
            &["--version"],
            &["serve", "--help"],
            &["ctl", "withhold", "-h"],
            &["help"],
            &["help", "ctl", "status"],
        ] {
            assert_eq!(run(ok).err(), Some(0), "{ok:?}");
        }
        for bad in [
            &[][..],
            &["frobnicate"],
            &["serve"],
            &["serve", "--config"],
            &["serve", "--config", "a", "--config", "b"],
            &["serve", "--config", "a", "--nope", "1"],
            &["serve", "--config", "a", "extra"],
            &["serve", "--version"],
            &["ctl"],
            &["ctl", "withhold"],
            &["ctl", "withhold", "counters"],
            &["ctl", "status", "--socket", "/s"],
            &["ctl", "status", "-x"],
            &["help", "nope"],
        ] {
            assert_eq!(run(bad).err(), Some(64), "{bad:?}");
        }
        let m = run(&["serve", "--config", "a", "--ttl", "x"]).unwrap();
        assert_eq!(m.parsed::<u64>("ttl", "").err(), Some(64));
    }

    #[test]
    fn help_pages_list_what_is_there_and_hide_what_is_hidden() {
        let ctl = &ROOT.subs[1];
        let page = help("boxapi ctl", ctl, false);
        assert!(
            page.starts_with("Talk\n\nUsage: boxapi ctl [OPTIONS] <COMMAND>\n"),
            "{page}"
        );
        assert!(page.contains("\n  status    Print the state\n"), "{page}");
        assert!(
            page.contains("--socket <SOCKET>  The socket [default: /run/s]"),
            "{page}"
        );
        assert!(
            !page.contains("rpc") && !page.contains("--version"),
            "{page}"
        );
        let page = help("boxapi ctl withhold", &ctl.subs[1], false);
        assert!(
            page.contains("Usage: boxapi ctl withhold [OPTIONS] <SECTION>"),
            "{page}"
        );
        assert!(
            page.contains("<SECTION>  [possible values: box, wifi]"),
            "{page}"
        );
        let page = help("boxapi serve", &ROOT.subs[0], false);
        assert!(
            page.contains("Usage: boxapi serve [OPTIONS] --config <CONFIG>"),
            "{page}"
        );
        assert!(page.lines().all(|l| !l.ends_with(' ')), "{page}");
        assert!(help("boxapi", &ROOT, true).contains("-V, --version  Print version"));
    }
}
