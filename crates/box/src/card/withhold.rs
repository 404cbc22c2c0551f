//! The subscriber's withholdings as every answer applies them (the card, `/v1/counters` and each
//! line of its stream): a withheld member is `null`, never omitted, and `withheld` names what the
//! subscriber does not share, so that a tool can tell "not shared" from "unknown" (`null` alone).
use boxapi_core::control::{Section, Sections};
use boxapi_core::json as write_json;

/// Writes an answer's next member `head` (separator, quoted name, colon: one literal, this is the
/// hot path), then `null` when it is withheld; returns whether the value is still to be written.
pub fn member(out: &mut Vec<u8>, head: &'static [u8], withheld: bool) -> bool {
    out.extend_from_slice(head);
    if withheld {
        out.extend_from_slice(b"null");
    }
    !withheld
}

/// The answer's last member, `"withheld":[…]` and the closing brace: `listed` in the sections'
/// order.
pub fn close(out: &mut Vec<u8>, listed: Sections) {
    out.extend_from_slice(b",\"withheld\":");
    write_json::push_str_array(out, listed.iter().map(Section::name));
    out.push(b'}');
}

/// What a `/v1/counters` answer withholds: withholding `counters` nulls the WAN and the
/// terminal's byte counts, withholding `client` the terminal's. `timestamp` and `monotonic_us`
/// stay: they are clock readings, not the subscriber's data, and a polling tool keeps its time
/// base. `withheld` lists those of the two sections that are withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InCounters {
    pub wan: bool,
    pub client: bool,
    pub listed: Sections,
}

pub fn in_counters(withheld: Sections) -> InCounters {
    let mut listed = Sections::default();
    for s in [Section::Counters, Section::Client] {
        if withheld.contains(s) {
            listed.insert(s);
        }
    }
    InCounters {
        wan: withheld.contains(Section::Counters),
        client: !listed.is_empty(),
        listed,
    }
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
        let c = in_counters(sections(&[Section::Wifi, Section::Client]));
        assert_eq!((c.wan, c.client), (false, true));
        assert_eq!(c.listed, sections(&[Section::Client]));
        let c = in_counters(sections(&[Section::Counters]));
        assert_eq!((c.wan, c.client), (true, true));
        assert_eq!(c.listed, sections(&[Section::Counters]));
        let c = in_counters(sections(&[Section::Box, Section::Access]));
        assert_eq!((c.wan, c.client), (false, false));
        assert!(c.listed.is_empty());
    }

    #[test]
    fn members_and_the_list() {
        let mut out = b"{".to_vec();
        assert!(!member(&mut out, b"\"a\":", true));
        assert!(member(&mut out, b",\"b\":", false));
        out.extend_from_slice(b"1");
        close(&mut out, sections(&[Section::Client, Section::Counters]));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": null, "b": 1, "withheld": ["client", "counters"]})
        );
    }
}
