//! A partial card (`[metrics.static]`, a provider's file or command output): its shape, its
//! validation, how layers merge, and the projection onto the contract's members.
use serde_json::{json, Map, Value};

pub const TECHNOLOGIES: [&str; 9] = [
    "ftth",
    "adsl",
    "vdsl2",
    "cable",
    "fixed_4g",
    "fixed_5g",
    "satellite",
    "ethernet",
    "unknown",
];

/// What each member of a partial card may hold.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Kbps,
    Bool,
    Technology,
    /// A channel number, a frequency or a width: a small non-negative integer.
    Count,
}

const SECTIONS: [(&str, &[(&str, Kind)]); 3] = [
    (
        "box",
        &[("model", Kind::Str), ("firmware_version", Kind::Str)],
    ),
    (
        "subscription",
        &[("down_kbps", Kind::Kbps), ("up_kbps", Kind::Kbps)],
    ),
    (
        "access",
        &[
            ("technology", Kind::Technology),
            ("down_kbps", Kind::Kbps),
            ("up_kbps", Kind::Kbps),
        ],
    ),
];
/// A radio: the contract's band, enabled and standard, then the extras nl80211 gives.
const RADIO: &[(&str, Kind)] = &[
    ("band", Kind::Str),
    ("enabled", Kind::Bool),
    ("standard", Kind::Str),
    ("channel", Kind::Count),
    ("frequency_mhz", Kind::Count),
    ("channel_width_mhz", Kind::Count),
];

fn check_kind(kind: Kind, v: &Value) -> Option<&'static str> {
    let ok = match kind {
        _ if v.is_null() => true,
        Kind::Str => v.as_str().is_some_and(|s| s.len() <= 256),
        Kind::Kbps => v.as_u64().is_some_and(|n| n <= 1 << 40),
        Kind::Bool => v.is_boolean(),
        Kind::Technology => v.as_str().is_some_and(|s| TECHNOLOGIES.contains(&s)),
        Kind::Count => v.as_u64().is_some_and(|n| n <= 100_000),
    };
    if ok {
        return None;
    }
    Some(match kind {
        Kind::Str => "expected a string (at most 256 bytes) or null",
        Kind::Kbps => "expected a non-negative integer rate in kbit/s or null",
        Kind::Bool => "expected true, false or null",
        Kind::Technology => "expected one of ftth, adsl, vdsl2, cable, fixed_4g, fixed_5g, satellite, ethernet, unknown",
        Kind::Count => "expected a non-negative integer (at most 100000) or null",
    })
}

fn check_object(prefix: &str, v: &Value, fields: &[(&str, Kind)], problems: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        problems.push(format!("{prefix}: expected a table/object"));
        return;
    };
    for (k, val) in obj {
        match fields.iter().find(|(name, _)| name == k) {
            Some((_, kind)) => {
                if let Some(why) = check_kind(*kind, val) {
                    problems.push(format!("{prefix}.{k}: {why}"));
                }
            }
            None => problems.push(format!("{prefix}.{k}: unknown member")),
        }
    }
}

/// Checks a partial card (`[metrics.static]`, provider file or command output); one line per problem.
pub fn validate_layer(layer: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(obj) = layer.as_object() else {
        return vec!["a partial card must be a JSON object".into()];
    };
    for (k, v) in obj {
        if let Some((_, fields)) = SECTIONS.iter().find(|(name, _)| name == k) {
            check_object(k, v, fields, &mut problems);
        } else if k == "wifi" {
            let Some(w) = v.as_object() else {
                problems.push("wifi: expected a table/object".into());
                continue;
            };
            for (wk, wv) in w {
                match wk.as_str() {
                    "enabled" => {
                        if let Some(why) = check_kind(Kind::Bool, wv) {
                            problems.push(format!("wifi.enabled: {why}"));
                        }
                    }
                    "radios" => match wv.as_array() {
                        Some(radios) if radios.len() <= 16 => {
                            for (i, r) in radios.iter().enumerate() {
                                check_object(&format!("wifi.radios[{i}]"), r, RADIO, &mut problems);
                            }
                        }
                        _ => problems
                            .push("wifi.radios: expected an array of at most 16 radios".into()),
                    },
                    _ => problems.push(format!("wifi.{wk}: unknown member")),
                }
            }
        } else {
            problems.push(format!(
                "{k}: unknown member (a partial card has box, subscription, access, wifi)"
            ));
        }
    }
    problems
}

/// Deep-merges `over` into `base`: objects member by member, anything else replaced. A `null` in
/// `over` means "this layer does not know" and leaves the lower layer's value.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn pick(merged: &Value, section: &str, fields: &[(&str, Kind)]) -> Value {
    let mut out = Map::new();
    for (name, kind) in fields {
        let v = merged
            .get(section)
            .and_then(|s| s.get(*name))
            .cloned()
            .unwrap_or(Value::Null);
        let v = if v.is_null() && matches!(kind, Kind::Technology) {
            json!("unknown")
        } else {
            v
        };
        out.insert((*name).to_owned(), v);
    }
    Value::Object(out)
}

/// The box, subscription, access and wifi members of the card, every member present.
pub fn project(merged: &Value) -> [(&'static str, Value); 4] {
    let wifi = merged.get("wifi");
    let radios: Vec<Value> = wifi
        .and_then(|w| w.get("radios"))
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let wrapped = json!({ "r": r });
                    pick(&wrapped, "r", RADIO)
                })
                .collect()
        })
        .unwrap_or_default();
    let enabled = wifi
        .and_then(|w| w.get("enabled"))
        .cloned()
        .unwrap_or(Value::Null);
    [
        ("box", pick(merged, "box", SECTIONS[0].1)),
        ("subscription", pick(merged, "subscription", SECTIONS[1].1)),
        ("access", pick(merged, "access", SECTIONS[2].1)),
        ("wifi", json!({ "enabled": enabled, "radios": radios })),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_shapes() {
        let good = json!({"box": {"model": "B"}, "access": {"technology": "ftth", "down_kbps": 1000},
            "wifi": {"enabled": true, "radios": [{"band": "5GHz", "standard": "ax"}]}});
        assert!(validate_layer(&good).is_empty());
        let bad = json!({"box": {"model": 3}, "access": {"technology": "fibre", "down_kbps": -1},
            "client": {}, "wifi": {"radios": [1]}});
        let p = validate_layer(&bad);
        assert_eq!(p.len(), 5, "{p:?}");
        assert_eq!(validate_layer(&json!([1])).len(), 1);
    }

    #[test]
    fn merge_precedence_and_projection() {
        let mut m = json!({"access": {"technology": "ethernet", "down_kbps": 1}});
        merge(
            &mut m,
            &json!({"access": {"technology": "ftth"}, "box": {"model": "S"}}),
        );
        merge(
            &mut m,
            &json!({"access": {"down_kbps": null, "up_kbps": 5}}),
        );
        let [(_, b), (_, s), (_, a), (_, w)] = project(&m);
        assert_eq!(
            a,
            json!({"technology": "ftth", "down_kbps": 1, "up_kbps": 5})
        );
        assert_eq!(b, json!({"model": "S", "firmware_version": null}));
        assert_eq!(s, json!({"down_kbps": null, "up_kbps": null}));
        assert_eq!(w, json!({"enabled": null, "radios": []}));
        let [_, _, (_, a), _] = project(&json!({}));
        assert_eq!(a["technology"], "unknown");
    }
}
