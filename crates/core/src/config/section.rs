//! The section walker every configuration parser uses: typed reads of one TOML table that turn
//! each mistake into a [`Problem`] naming its key, and report the keys nobody read as unknown.
use super::problem::Problem;
use super::tree::{Table, Value};
use std::path::{Path, PathBuf};

/// Walks one TOML table, remembering which keys were read so that the rest can be reported as unknown.
pub struct Section<'a> {
    name: &'a str,
    pub table: &'a Table,
    used: Vec<&'static str>,
    /// Where this section's problems go; a parser may push problems naming other keys too.
    pub problems: &'a mut Vec<Problem>,
}

impl<'a> Section<'a> {
    pub fn new(name: &'a str, table: &'a Table, problems: &'a mut Vec<Problem>) -> Self {
        Section {
            name,
            table,
            used: Vec::new(),
            problems,
        }
    }

    pub fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    pub fn problem(&mut self, key: &str, why: impl std::fmt::Display) {
        let key = self.key(key);
        self.problems.push(Problem::invalid(key, why));
    }

    pub fn missing(&mut self, key: &str) {
        let key = self.key(key);
        self.problems.push(Problem::Missing { key });
    }

    pub fn wrong_type(&mut self, key: &str, expected: &'static str, found: &Value) {
        let key = self.key(key);
        self.problems.push(Problem::Type {
            key,
            expected,
            found: found.type_str(),
        });
    }

    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.table.get(key)
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &'static str) -> String {
        let v = self.string(key);
        if v.is_none() && !self.table.contains_key(key) {
            self.missing(key);
        }
        v.unwrap_or_default()
    }

    pub fn strings(&mut self, key: &'static str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.wrong_type(key, "strings", other),
                    }
                }
                out
            }
            Some(other) => {
                self.wrong_type(key, "an array of strings", other);
                Vec::new()
            }
        }
    }

    pub fn int(&mut self, key: &'static str, default: i64, min: i64, max: i64) -> i64 {
        match self.get(key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(i) => *i,
            Some(Value::Integer(i)) => {
                let key = self.key(key);
                self.problems.push(Problem::OutOfRange {
                    key,
                    value: *i,
                    min,
                    max,
                });
                default
            }
            Some(other) => {
                self.wrong_type(key, "an integer", other);
                default
            }
        }
    }

    pub fn boolean(&mut self, key: &'static str) -> bool {
        match self.get(key) {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong_type(key, "true or false", other);
                false
            }
        }
    }

    pub fn float(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(Value::Float(f)) if *f > min && *f < max => *f,
            Some(Value::Float(f)) => {
                self.problem(
                    key,
                    format_args!(
                        "{} is out of range ({} to {}, exclusive)",
                        decimal(*f),
                        decimal(min),
                        decimal(max)
                    ),
                );
                default
            }
            Some(other) => {
                self.problem(
                    key,
                    format_args!("expected a number, found {}", other.type_str()),
                );
                default
            }
        }
    }

    /// An RFC 3339 date-time with an offset, as a string or a TOML offset date-time.
    pub fn date(&mut self, key: &'static str) -> Option<i64> {
        let text = match self.get(key)? {
            Value::String(s) => s.clone(),
            Value::Datetime(d) => d.clone(),
            other => {
                self.wrong_type(key, "an RFC 3339 date-time", other);
                return None;
            }
        };
        let parsed = crate::time::parse_rfc3339(&text);
        if parsed.is_none() {
            self.problem(
                key,
                format_args!(
                    "{text:?} is not an RFC 3339 date-time with an offset (e.g. 2027-01-31T00:00:00Z)"
                ),
            );
        }
        parsed
    }

    pub fn path(&mut self, key: &'static str, dir: &Path) -> Option<PathBuf> {
        self.string(key).map(|p| dir.join(p))
    }

    pub fn table(&mut self, key: &'static str) -> Option<&'a Table> {
        match self.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other);
                None
            }
        }
    }

    /// Reports every key that was present but never read: typos must not silently weaken security.
    pub fn finish(self) {
        for k in self.table.keys() {
            if !self.used.contains(&k.as_str()) {
                let key = self.key(k);
                self.problems.push(Problem::UnknownKey { key });
            }
        }
    }
}

/// `x` in decimal, to six places: f64's Display (its shortest and exact algorithms, ~9 KB of every
/// box binary) would serve this one message alone.
fn decimal(x: f64) -> String {
    if x.is_nan() || x.abs() >= 1e12 {
        return if x.is_nan() {
            "nan"
        } else {
            "a number beyond ±1e12"
        }
        .to_owned();
    }
    let micros = (x.abs() * 1e6).round() as u64;
    let sign = if x < 0.0 && micros > 0 { "-" } else { "" };
    let (int, frac) = (micros / 1_000_000, micros % 1_000_000);
    let frac = format!("{frac:06}");
    let frac = frac.trim_end_matches('0');
    let point = if frac.is_empty() { "" } else { "." };
    format!("{sign}{int}{point}{frac}")
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimals_as_display_writes_them() {
        for x in [0.0, 1.0, 1.5, -2.25, 0.6667, 0.000001, 123456.5, -0.0] {
            assert_eq!(decimal(x), format!("{x}").replace("-0", "0"), "{x}");
        }
        assert_eq!(decimal(0.1234567), "0.123457");
        assert_eq!(decimal(1e13), "a number beyond ±1e12");
        assert_eq!(decimal(f64::NEG_INFINITY), "a number beyond ±1e12");
        assert_eq!(decimal(f64::NAN), "nan");
    }
}
