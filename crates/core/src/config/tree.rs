//! The configuration file as a tree of TOML values: toml's own parser, without the serde layer
//! that toml puts between it and `toml::Table` (the box never deserialises TOML into structs).
use toml::de::{DeTable, DeValue};

/// A TOML table, its keys in order.
pub type Table = toml::map::Map<String, Value>;

/// One TOML value, as `toml::Value` has it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// As written in RFC 3339's form (the configuration reads dates as text).
    Datetime(String),
    Array(Vec<Value>),
    Table(Table),
}

impl Value {
    /// The type's name in TOML's words, for problems ("expected a string, found integer").
    pub fn type_str(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

impl Value {
    /// The same value as JSON (the card's static layer is written in TOML). A date is its text;
    /// a float that JSON cannot hold (nan, inf) is null, as serde_json writes it.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::String(s) | Value::Datetime(s) => J::String(s.clone()),
            Value::Integer(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Boolean(b) => J::Bool(*b),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Parses a whole document; the error says where and what, as toml's `Table::from_str` does.
pub fn parse(text: &str) -> Result<Table, String> {
    let root = DeTable::parse(text).map_err(|e| e.to_string())?;
    table(root.into_inner())
}

fn table(t: DeTable<'_>) -> Result<Table, String> {
    let mut out = Table::new();
    for (k, v) in t {
        out.insert(k.into_inner().into_owned(), value(v.into_inner())?);
    }
    Ok(out)
}

fn value(v: DeValue<'_>) -> Result<Value, String> {
    Ok(match v {
        DeValue::String(s) => Value::String(s.into_owned()),
        DeValue::Integer(i) => Value::Integer(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("integer {i} out of range"))?,
        ),
        DeValue::Float(f) => {
            let text = f.as_str();
            // As toml reads floats: an overflow to infinity is an error, `inf` is not.
            match float(text) {
                Some(x) if !x.is_infinite() || text.contains("inf") => Value::Float(x),
                _ => return Err(format!("float {text} out of range")),
            }
        }
        DeValue::Boolean(b) => Value::Boolean(b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| value(v.into_inner()))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => Value::Table(table(t)?),
    })
}

/// A TOML float's text (toml checked its syntax) as an `f64`. Correctly rounded up to 15
/// significant digits with an exponent under 23 (what a configuration holds); otherwise within a
/// few ulps (more digits, larger or smaller exponents, subnormals), and text within a few ulps of
/// `f64::MAX` may read as infinite. An exponent too large for any `f64` gives 0 or infinity, as
/// `str::parse` does. Not `str::parse`: core's correctly rounded parser and its tables are
/// ~15 KB of every box binary, for one key (`renew_fraction`).
fn float(text: &str) -> Option<f64> {
    let t: String = text.chars().filter(|&c| c != '_').collect();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let x = match t {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => {
            let (number, exp) = match t.split_once(['e', 'E']) {
                // Digits only (toml checked), so an error is an overflow: 0 or infinity below.
                Some((n, e)) => (
                    n,
                    e.parse().unwrap_or(if e.starts_with('-') {
                        i32::MIN
                    } else {
                        i32::MAX
                    }),
                ),
                None => (t, 0),
            };
            let (int, frac) = number.split_once('.').unwrap_or((number, ""));
            let digits = || int.bytes().chain(frac.bytes());
            if int.is_empty() || !digits().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exact up to 2^53; each power of ten below 10^23 is exact, so one rounding.
            let m = digits().fold(0f64, |m, d| m * 10.0 + f64::from(d - b'0'));
            let e = exp.saturating_sub(i32::try_from(frac.len()).ok()?);
            if m == 0.0 {
                // Not 0 times an infinite power: NaN.
                0.0
            } else if e < 0 {
                // In two steps below 1e-300: 10^309 and beyond are infinite.
                let e = e.saturating_neg();
                m / 10f64.powi(e.min(300)) / 10f64.powi(e - e.min(300))
            } else {
                m * 10f64.powi(e)
            }
        }
    };
    Some(if negative { -x } else { x })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_str_parse_reads_them() {
        for text in [
            "0.6667", "2.0", "1.5e3", "-0.25", "+1e-3", "6.02E23", "1_000.5", "0.1", "3.14159",
            "1e308", "0.0", "-0.0", "1e-300",
        ] {
            let want: f64 = text.replace('_', "").parse().unwrap();
            let got = float(text).unwrap();
            assert!(
                (got - want).abs() <= want.abs() * 1e-15,
                "{text}: {got} {want}"
            );
        }
        for exact in ["0.6667", "0.1", "1.5e3", "0.9", "0.5"] {
            assert_eq!(float(exact), exact.parse().ok(), "{exact}");
        }
        assert_eq!(float("-inf"), Some(f64::NEG_INFINITY));
        assert!(float("1e999").unwrap().is_infinite());
        assert!(float("nan").unwrap().is_nan());
        // Very small, and exponents beyond any f64 (valid TOML): as str::parse reads them.
        for text in [
            "2.2250738585072014e-308",
            "4.9e-324",
            "1.5e-320",
            "123456e-330",
        ] {
            let (got, want) = (float(text).unwrap(), text.parse::<f64>().unwrap());
            assert!(
                (got - want).abs() <= want.abs() * 1e-14,
                "{text}: {got} {want}"
            );
        }
        for text in [
            "0e99999999999",
            "1e-99999999999",
            "0e400",
            "-0.0e-99999999999",
        ] {
            let want: f64 = text.parse().unwrap();
            assert_eq!(
                float(text).map(f64::to_bits),
                Some(want.to_bits()),
                "{text}"
            );
        }
        assert_eq!(float("1e99999999999"), Some(f64::INFINITY));
        // Beyond 15 digits, within a few ulps.
        for text in [
            "0.30000000000000004",
            "1.2345678901234567e-5",
            "9007199254740993.0",
        ] {
            let (got, want) = (float(text).unwrap(), text.parse::<f64>().unwrap());
            assert!(
                got.to_bits().abs_diff(want.to_bits()) <= 3,
                "{text}: {got} {want}"
            );
        }
        for bad in ["", ".5", "e3", "1.x"] {
            assert_eq!(float(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_of_every_kind() {
        let t = parse(
            "a = \"x\"\nb = 0x1F\nc = -1_000\nd = 1.5e3\ne = true\nf = 2026-01-02\n\
             g = [1, \"two\"]\n[h]\ni = { j = 'k' }\n[[l]]\nm = nan\n[[l]]\nm = -inf\n",
        )
        .unwrap();
        assert_eq!(t["a"], Value::String("x".into()));
        assert_eq!(t["b"], Value::Integer(31));
        assert_eq!(t["c"], Value::Integer(-1000));
        assert_eq!(t["d"], Value::Float(1500.0));
        assert_eq!(t["e"], Value::Boolean(true));
        assert_eq!(t["f"], Value::Datetime("2026-01-02".into()));
        assert_eq!(t["f"].type_str(), "datetime");
        assert_eq!(
            t["g"],
            Value::Array(vec![Value::Integer(1), Value::String("two".into())])
        );
        let Value::Table(h) = &t["h"] else { panic!() };
        let Value::Table(i) = &h["i"] else { panic!() };
        assert_eq!(i["j"], Value::String("k".into()));
        let Value::Array(l) = &t["l"] else { panic!() };
        let m = |n: usize| match &l[n] {
            Value::Table(t) => t["m"].clone(),
            _ => panic!(),
        };
        assert!(matches!(m(0), Value::Float(x) if x.is_nan()));
        assert_eq!(m(1), Value::Float(f64::NEG_INFINITY));
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e", "f", "g", "h", "l"]
        );
    }

    #[test]
    fn as_json() {
        let t = parse("a = [1, 2.5, nan, true, 'x', 1979-05-27T07:32:00Z]\n[b]\nc = {}\n").unwrap();
        assert_eq!(
            Value::Table(t).to_json(),
            serde_json::json!({"a": [1, 2.5, null, true, "x", "1979-05-27T07:32:00Z"], "b": {"c": {}}})
        );
    }

    #[test]
    fn broken_documents_and_overflows_are_errors() {
        for bad in [
            "[server\n",
            "a = 1\na = 2\n",
            "a = 9223372036854775808\n",
            "a = 1e999\n",
            "a = \n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("a = 9223372036854775807\nb = -9223372036854775808\n").is_ok());
    }
}
