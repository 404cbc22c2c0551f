//! Every configuration snippet in README.md and docs/*.md loads as written. A ```toml block names
//! its daemon in its info string (`toml box` or `toml authority`) and, when it is only part of a
//! configuration, `fragment`: a whole configuration is checked as it is, a fragment merged into
//! a minimal configuration of its daemon (the fragment's sections and keys win). Every file the
//! result names is made first (certificates, keys, a CRL, a signed registry, secrets; absolute
//! paths under a scratch root), then `check-config` must exit 0. A ```yaml knot block passes
//! knotd's own `knotc conf-check`.
#[path = "../../box/tests/common/mod.rs"]
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use toml::{Table, Value};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A fenced block of a document: where it is, its info string's words after the language, and
/// its text (the fence's indentation removed).
#[derive(Debug)]
struct Block {
    at: String,
    words: Vec<String>,
    text: String,
}

/// The blocks of README.md and docs/*.md whose language is `lang`.
fn blocks(lang: &str) -> Vec<Block> {
    let mut docs = vec![PathBuf::from(ROOT).join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    let mut found = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let trimmed = lines[i].trim_start();
            let Some(info) = trimmed.strip_prefix("```") else {
                i += 1;
                continue;
            };
            let indent = lines[i].len() - trimmed.len();
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim() == "```")
                .unwrap_or_else(|| panic!("{}:{}: unclosed block", doc.display(), i + 1));
            let mut words = info.split_whitespace().map(str::to_owned);
            if words.next().as_deref() == Some(lang) {
                let body: Vec<&str> = lines[i + 1..end]
                    .iter()
                    .map(|l| l.get(indent..).filter(|_| l[..indent].trim().is_empty()))
                    .map(|l| l.unwrap_or_else(|| panic!("{}:{}: dedent", doc.display(), i + 1)))
                    .collect();
                found.push(Block {
                    at: format!(
                        "{}:{}",
                        doc.strip_prefix(ROOT).unwrap_or(&doc).display(),
                        i + 1
                    ),
                    words: words.collect(),
                    text: body.join("\n") + "\n",
                });
            }
            i = end + 1;
        }
    }
    found
}

/// The least a daemon's configuration has, for a fragment to be merged into.
const BOX_BASE: &str = r#"
[server]
listen = ["192.168.1.1:443"]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"

[auth]
audience = "https://box.lan"
issuers = ["https://auth.isp.example"]
issuer_keys = "issuer.jwks"
"#;

const AUTHORITY_BASE: &str = r#"
[server]
cert = "server.pem"
key = "server.key"
state_dir = "state"
control_socket = "control.sock"

[auth]
audience = "https://auth.isp.example"
issuers = ["https://auth.isp.example"]

[token_endpoint]
enabled = true
issuer = "https://auth.isp.example"
signing_key = "signer.private.jwk"

[authority]
listen = ["127.0.0.1:8443"]
"#;

/// `from` merged into `into`: tables key by key, anything else (arrays of tables included)
/// replaced.
fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Every absolute path (a string starting with '/') moved under `root`.
fn rehome(v: &mut Value, root: &Path) {
    match v {
        Value::String(s) if s.starts_with('/') => {
            *s = format!("{}{s}", root.display());
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rehome(v, root)),
        Value::Table(t) => t.iter_mut().for_each(|(_, v)| rehome(v, root)),
        _ => {}
    }
}

/// Makes the files a configuration in `dir` names, by key.
struct Maker<'a> {
    dir: &'a Path,
    pki: &'a Path,
    scratch: PathBuf,
    made: Vec<String>,
    keys: usize,
}

impl Maker<'_> {
    fn walk(&mut self, key: &str, v: &Value) {
        match v {
            Value::String(s) => self.make(key, s),
            Value::Array(a) => a.iter().for_each(|v| self.walk(key, v)),
            Value::Table(t) => self.table(key, t),
            _ => {}
        }
    }

    fn table(&mut self, key: &str, t: &Table) {
        for (k, v) in t {
            let key = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            self.walk(&key, v);
        }
    }

    /// A fresh key pair from `boxapi keygen`: its (private, public) JWK files.
    fn keypair(&mut self) -> (PathBuf, PathBuf) {
        self.keys += 1;
        let kid = format!("k{}", self.keys);
        keygen(&self.scratch, "EdDSA", &kid);
        (
            self.scratch.join(format!("{kid}.private.jwk")),
            self.scratch.join(format!("{kid}.jwk")),
        )
    }

    fn make(&mut self, key: &str, value: &str) {
        let path = self.dir.join(value);
        let put = |path: &Path, bytes: &[u8]| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let copy = |from: &str| put(&path, &std::fs::read(self.pki.join(from)).unwrap());
        match key {
            "server.cert" => copy("auth.pem"),
            "server.key" => copy("auth.key"),
            "enrol.device_cert" => copy("device.pem"),
            "enrol.device_key" => copy("device.key"),
            "enrol.authority_ca" | "acme.ca" | "authority.store.tls_ca_file" => copy("op-ca.pem"),
            "enrolment.device_ca" => copy("device-ca.pem"),
            "enrolment.device_crls" => copy("device-ca.crl"),
            "tool.keys" => put(&path, &std::fs::read(self.keypair().1).unwrap()),
            "tool.signing_key" | "token_endpoint.signing_key" => {
                put(&path, &std::fs::read(self.keypair().0).unwrap())
            }
            "auth.issuer_keys" => {
                let jwk: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(self.keypair().1).unwrap()).unwrap();
                put(
                    &path,
                    serde_json::json!({ "keys": [jwk] }).to_string().as_bytes(),
                )
            }
            // The operator's root key, and a registry it signs.
            "registry.root_key" => put(
                &path,
                &std::fs::read(self.scratch.join("root.jwk")).unwrap(),
            ),
            "registry.file" => {
                let payload = self.scratch.join("registry.json");
                std::fs::write(&payload, r#"{"version": 1, "tools": []}"#).unwrap();
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let out = daemon_command()
                    .args(["registry", "sign", "--key"])
                    .arg(self.scratch.join("root.private.jwk"))
                    .arg("--in")
                    .arg(&payload)
                    .arg("--out")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
            "authority.store.password_file" => put(&path, b"an example password\n"),
            "authority.locator.file" => put(&path, b"{}"),
            // 32 bytes, base64 and base64url.
            "dns.tsig_secret_file" => put(&path, b"c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMh\n"),
            "acme.eab_hmac_key_file" => put(&path, b"c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMh\n"),
            // Written by the daemon, in a directory that must exist.
            "acme.account" | "enrol.hosts_file" => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap()
            }
            _ => return,
        }
        self.made.push(key.to_owned());
    }
}

#[test]
fn every_toml_snippet_in_the_docs_loads_as_written() {
    let blocks = blocks("toml");
    assert!(blocks.len() >= 6, "{blocks:?}");
    let pki = temp_dir("doc-pki");
    let out = Command::new(format!("{ROOT}/tests/field/make-pki.sh"))
        .arg(&pki)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut failures = Vec::new();
    for (n, b) in blocks.iter().enumerate() {
        let words: Vec<&str> = b.words.iter().map(String::as_str).collect();
        let (daemon, base) = match words.first() {
            Some(&"box") => ("box", BOX_BASE),
            Some(&"authority") => ("authority", AUTHORITY_BASE),
            _ => {
                failures.push(format!(
                    "{}: say whose configuration it is: ```toml box or ```toml authority (and \
                     `fragment` when it is part of one)",
                    b.at
                ));
                continue;
            }
        };
        let fragment = words.get(1) == Some(&"fragment");
        let text: Table = match b.text.parse() {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: not TOML: {e}", b.at));
                continue;
            }
        };
        let mut config: Table = if fragment {
            base.parse().unwrap()
        } else {
            Table::new()
        };
        merge(&mut config, text);
        let dir = temp_dir(&format!("doc-{n}"));
        for (_, v) in config.iter_mut() {
            rehome(v, &dir.join("root"));
        }
        let mut maker = Maker {
            dir: &dir,
            pki: &pki,
            scratch: dir.join("scratch"),
            made: Vec::new(),
            keys: 0,
        };
        std::fs::create_dir_all(&maker.scratch).unwrap();
        keygen(&maker.scratch, "EdDSA", "root");
        maker.table("", &config);
        let file = dir.join(format!("{daemon}.toml"));
        std::fs::write(&file, config.to_string()).unwrap();
        let mut cmd = if daemon == "box" {
            daemon_command()
        } else {
            Command::new(authority_bin())
        };
        let out = cmd
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{} ({daemon}{}): check-config: {}\n{}",
                b.at,
                if fragment { ", merged" } else { "" },
                String::from_utf8_lossy(&out.stderr).trim_end(),
                config
            ));
        } else {
            eprintln!("{}: {daemon} OK, made {:?}", b.at, maker.made);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
#[ignore = "needs knotc: run with --include-ignored (make test does; make deps installs knot)"]
fn the_knot_snippet_passes_knots_own_check() {
    let knotc = ["/usr/sbin/knotc", "/usr/bin/knotc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("knotc is not installed (Debian's knot): make deps installs it");
    let blocks: Vec<Block> = blocks("yaml")
        .into_iter()
        .filter(|b| b.words.first().map(String::as_str) == Some("knot"))
        .collect();
    assert!(!blocks.is_empty(), "no ```yaml knot block in the docs");
    for b in blocks {
        let dir = temp_dir("doc-knot");
        let file = dir.join("knot.conf");
        std::fs::write(&file, &b.text).unwrap();
        let out = Command::new(knotc)
            .arg("-c")
            .arg(&file)
            .arg("conf-check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: knotc conf-check: {}{}\n{}",
            b.at,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            b.text
        );
    }
}
