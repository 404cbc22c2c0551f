//! What can be wrong with a configuration: one typed value per mistake, each naming its key (or
//! the file at fault). `Display` is the exact line `check-config` prints and a reload reply lists.
use std::path::PathBuf;

/// One mistake in a configuration or in a file it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The configuration file itself cannot be read.
    #[error("{}: cannot read: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    /// The configuration file is not TOML (nothing more can be said of it).
    #[error("{}: not valid TOML: {why}", path.display())]
    Syntax { path: PathBuf, why: String },
    /// A key boxapi does not know: typos must not silently weaken security.
    #[error("{key}: unknown key")]
    UnknownKey { key: String },
    /// A required key is absent.
    #[error("{key}: is required")]
    Missing { key: String },
    /// A required section (`[server]`, `[auth]`) is absent.
    #[error("{key}: the [{key}] section is required")]
    MissingSection { key: String },
    /// A value of the wrong TOML type.
    #[error("{key}: expected {expected}, found {found}")]
    Type {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    /// An integer outside the key's range.
    #[error("{key}: {value} is out of range ({min} to {max})")]
    OutOfRange {
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    /// `server.user` or `server.group` names no account on this system.
    #[error("{key} {name:?}: no such {kind}")]
    NoSuchAccount {
        key: String,
        kind: &'static str,
        name: String,
    },
    /// A value of the right type that is not acceptable; `why` says what is expected.
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
    /// A file named by `key` that cannot be read or used.
    #[error("{key} ({}): {why}", path.display())]
    File {
        key: String,
        path: PathBuf,
        why: String,
    },
}

impl Problem {
    pub fn invalid(key: impl Into<String>, why: impl std::fmt::Display) -> Problem {
        Problem::Invalid {
            key: key.into(),
            why: why.to_string(),
        }
    }

    pub fn file(
        key: impl Into<String>,
        path: impl Into<PathBuf>,
        why: impl std::fmt::Display,
    ) -> Problem {
        Problem::File {
            key: key.into(),
            path: path.into(),
            why: why.to_string(),
        }
    }

    /// The configuration key at fault (`server.listen`, `tool[2].keys`); `None` when the
    /// configuration file as a whole is (unreadable or not TOML).
    pub fn key(&self) -> Option<&str> {
        match self {
            Problem::Unreadable { .. } | Problem::Syntax { .. } => None,
            Problem::UnknownKey { key }
            | Problem::Missing { key }
            | Problem::MissingSection { key }
            | Problem::Type { key, .. }
            | Problem::OutOfRange { key, .. }
            | Problem::NoSuchAccount { key, .. }
            | Problem::Invalid { key, .. }
            | Problem::File { key, .. } => Some(key),
        }
    }
}

/// The problems as the lines operators read (the control socket's reload reply, the log).
pub fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_prints_the_line_operators_know() {
        let cases = [
            (
                Problem::Unreadable {
                    path: "/etc/b.toml".into(),
                    why: "No such file or directory (os error 2)".into(),
                },
                "/etc/b.toml: cannot read: No such file or directory (os error 2)",
            ),
            (
                Problem::UnknownKey {
                    key: "server.lisen".into(),
                },
                "server.lisen: unknown key",
            ),
            (
                Problem::Missing {
                    key: "server.cert".into(),
                },
                "server.cert: is required",
            ),
            (
                Problem::MissingSection { key: "auth".into() },
                "auth: the [auth] section is required",
            ),
            (
                Problem::Type {
                    key: "server.port".into(),
                    expected: "an integer",
                    found: "string",
                },
                "server.port: expected an integer, found string",
            ),
            (
                Problem::OutOfRange {
                    key: "server.port".into(),
                    value: 0,
                    min: 1,
                    max: 65535,
                },
                "server.port: 0 is out of range (1 to 65535)",
            ),
            (
                Problem::NoSuchAccount {
                    key: "server.user".into(),
                    kind: "user",
                    name: "nobody2".into(),
                },
                "server.user \"nobody2\": no such user",
            ),
            (
                Problem::file("server.cert", "/c.pem", "no CERTIFICATE block"),
                "server.cert (/c.pem): no CERTIFICATE block",
            ),
        ];
        for (p, line) in cases {
            assert_eq!(p.to_string(), line);
        }
        assert_eq!(
            Problem::file("tool[0].keys", "/k", "x").key(),
            Some("tool[0].keys")
        );
        assert_eq!(
            Problem::Syntax {
                path: "/b".into(),
                why: "x".into()
            }
            .key(),
            None
        );
    }
}
