//! The subscriber's withholdings applied to a counters answer: a withheld section is `null`
//! (members are never omitted) and `withheld` names what the subscriber does not share, so that a
//! tool can tell "not shared" from "unknown" (`null` alone). The card applies them as it writes
//! itself (`card::Sources::access_card`).
use boxapi_core::control::{Section, Sections};
use serde_json::{json, Value};

/// `GET /v1/counters` (and every line of its stream): withholding `counters` nulls the WAN and
/// the terminal's byte counts, withholding `client` nulls the terminal's. `timestamp` and
/// `monotonic_us` stay: they are clock readings, not the subscriber's data, and a polling tool
/// keeps its time base. `withheld` lists those of the two sections that are withheld.
pub fn counters(snapshot: &mut Value, withheld: Sections) {
    let Some(obj) = snapshot.as_object_mut() else {
        return;
    };
    let mut here = Sections::default();
    if withheld.contains(Section::Counters) {
        obj.insert("wan".into(), Value::Null);
        obj.insert("client".into(), Value::Null);
        here.insert(Section::Counters);
    }
    if withheld.contains(Section::Client) {
        obj.insert("client".into(), Value::Null);
        here.insert(Section::Client);
    }
    obj.insert("withheld".into(), json!(here.names()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(names: &[Section]) -> Sections {
        let mut s = Sections::default();
        for n in names {
            s.insert(*n);
        }
        s
    }

    #[test]
    fn counters_follow_counters_and_client() {
        let fresh = || {
            json!({"timestamp": "t", "monotonic_us": 5, "wan": {"rx_bytes": 1, "tx_bytes": 2},
                "client": {"rx_bytes": 3, "tx_bytes": 4}})
        };
        let mut c = fresh();
        counters(&mut c, sections(&[Section::Wifi, Section::Client]));
        assert_eq!(c["wan"]["rx_bytes"], 1);
        assert_eq!(c["client"], Value::Null);
        assert_eq!(c["withheld"], json!(["client"]));
        let mut c = fresh();
        counters(&mut c, sections(&[Section::Counters]));
        assert_eq!(
            (c["wan"].clone(), c["client"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(c["monotonic_us"], 5);
        assert_eq!(c["withheld"], json!(["counters"]));
    }
}
