//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP.
//! hickory-proto builds and parses the messages and does the TSIG work
//! (`TSigner`, HMAC-SHA256 through ring); the transport is a plain bounded
//! TCP exchange so that every error can be reported precisely.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DnsSettings, Error, Result, Tsig};

/// TSIG fudge (allowed clock skew), seconds.
const TSIG_FUDGE: u16 = 300;

/// Parse `name` as a fully qualified name strictly below `zone`.
pub fn name_in_zone(name: &str, zone: &Name) -> Result<Name> {
    let invalid = |reason: &str| Error::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut n = Name::from_ascii(name).map_err(|e| invalid(&e.to_string()))?;
    n.set_fqdn(true);
    if n.iter().any(|l| l.is_empty() || l == b"*") {
        return Err(invalid("empty or wildcard label"));
    }
    if !zone.zone_of(&n) || n.num_labels() <= zone.num_labels() {
        return Err(invalid(&format!("not strictly below zone {zone}")));
    }
    Ok(n.to_lowercase())
}

pub fn zone_name(zone: &str) -> Result<Name> {
    let mut z = Name::from_ascii(zone).map_err(|e| Error::InvalidName {
        name: zone.to_owned(),
        reason: e.to_string(),
    })?;
    z.set_fqdn(true);
    Ok(z.to_lowercase())
}

fn signer(tsig: &Tsig) -> Result<TSigner> {
    let bad = |reason: String| Error::Tsig {
        name: tsig.name.clone(),
        reason,
    };
    if tsig.secret.len() < 16 {
        return Err(bad("secret shorter than 16 bytes".into()));
    }
    let mut key_name = Name::from_ascii(&tsig.name).map_err(|e| bad(e.to_string()))?;
    key_name.set_fqdn(true);
    TSigner::new(
        tsig.secret.clone(),
        tsig.algorithm.clone(),
        key_name,
        TSIG_FUDGE,
    )
    .map_err(|e| bad(e.to_string()))
}

fn update_message(zone: &Name) -> Message {
    let mut zone_q = Query::new();
    zone_q
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut m = Message::new();
    m.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    m.add_zone(zone_q);
    m
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // ring's SystemRandom cannot fail on Linux in practice; fall back to time bits.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return (t & 0xffff) as u16;
    }
    u16::from_be_bytes(b)
}

/// "Delete an RRset" update RR (RFC 2136 §2.5.2): class ANY, TTL 0, empty RDATA.
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    let mut r = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    r.set_dns_class(DNSClass::ANY);
    r
}

/// "Delete an RR from an RRset" (RFC 2136 §2.5.4): class NONE, TTL 0.
fn delete_rr(name: &Name, data: RData) -> Record {
    let mut r = Record::from_rdata(name.clone(), 0, data);
    r.set_dns_class(DNSClass::NONE);
    r
}

/// Send one message over TCP and wait (bounded: connect, write and read share
/// one deadline) for its answer. Updates are TSIG-signed and the answer's TSIG
/// is verified (MAC, request MAC chaining, time window).
async fn exchange(
    dns: &DnsSettings,
    op: &'static str,
    mut msg: Message,
    signed: bool,
) -> Result<Message> {
    let server = dns.server;
    let limit = dns.request_timeout;
    let dns_err = |reason: String| Error::Dns { server, op, reason };
    let mut verifier = if signed {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        msg.finalize(&signer(&dns.tsig)?, now)
            .map_err(|e| Error::Tsig {
                name: dns.tsig.name.clone(),
                reason: e.to_string(),
            })?
    } else {
        None
    };
    let wire = msg.to_vec().map_err(|e| dns_err(format!("encode: {e}")))?;
    let len = u16::try_from(wire.len()).map_err(|_| dns_err("message too large".into()))?;
    let io = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| dns_err(format!("connect: {e}")))?;
        let mut out = Vec::with_capacity(2 + wire.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&wire);
        s.write_all(&out)
            .await
            .map_err(|e| dns_err(format!("send: {e}")))?;
        let mut lb = [0u8; 2];
        s.read_exact(&mut lb)
            .await
            .map_err(|e| dns_err(format!("read: {e}")))?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(lb))];
        s.read_exact(&mut body)
            .await
            .map_err(|e| dns_err(format!("read: {e}")))?;
        Ok::<_, Error>(body)
    };
    let body = tokio::time::timeout(limit, io)
        .await
        .map_err(|_| Error::DnsTimeout {
            server,
            op,
            after: limit,
        })??;
    let rsp = Message::from_vec(&body).map_err(|e| dns_err(format!("malformed answer: {e}")))?;
    if rsp.id() != msg.id() || rsp.message_type() != MessageType::Response {
        return Err(dns_err("answer does not match the request".into()));
    }
    if let Some(verify) = verifier.as_mut() {
        // RFC 8945 §5.3.2: a rejected TSIG comes back as NOTAUTH with an empty MAC.
        let rejected = rsp
            .signature()
            .iter()
            .any(|r| matches!(r.data(), RData::DNSSEC(DNSSECRData::TSIG(t)) if t.mac().is_empty()));
        if rsp.response_code() == ResponseCode::NotAuth && (rejected || rsp.signature().is_empty())
        {
            return Err(Error::DnsRefused {
                server,
                op,
                rcode: "NOTAUTH: TSIG key refused (unknown key name, wrong secret or algorithm, \
                        or clock skew)"
                    .into(),
            });
        }
        verify(&body).map_err(|e| dns_err(format!("answer's TSIG does not verify: {e}")))?;
    }
    match rsp.response_code() {
        ResponseCode::NoError => Ok(rsp),
        code => Err(Error::DnsRefused {
            server,
            op,
            rcode: format!("{code}"),
        }),
    }
}

/// RFC 2136: replaces the A and AAAA RRsets of `name` with `records`, in one atomic, TSIG-signed
/// update. An empty `records` removes both RRsets.
pub async fn update_addresses(dns: &DnsSettings, name: &str, records: &[IpAddr]) -> Result<()> {
    let zone = zone_name(&dns.zone)?;
    let owner = name_in_zone(name, &zone)?;
    let mut m = update_message(&zone);
    m.add_update(delete_rrset(&owner, RecordType::A));
    m.add_update(delete_rrset(&owner, RecordType::AAAA));
    for ip in records {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        m.add_update(Record::from_rdata(owner.clone(), dns.ttl, data));
    }
    exchange(dns, "update A/AAAA", m, true).await.map(|_| ())
}

/// Add `value` to the TXT RRset of `fqdn` (normally `_acme-challenge.<name>`).
pub async fn txt_add(dns: &DnsSettings, fqdn: &str, value: &str) -> Result<()> {
    let zone = zone_name(&dns.zone)?;
    let owner = name_in_zone(fqdn, &zone)?;
    let mut m = update_message(&zone);
    m.add_update(Record::from_rdata(
        owner,
        dns.ttl,
        RData::TXT(TXT::new(vec![value.to_owned()])),
    ));
    exchange(dns, "add TXT", m, true).await.map(|_| ())
}

/// Remove `value` from the TXT RRset of `fqdn` (other values are kept, so
/// concurrent challenges for the same name do not disturb each other).
pub async fn txt_delete(dns: &DnsSettings, fqdn: &str, value: &str) -> Result<()> {
    let zone = zone_name(&dns.zone)?;
    let owner = name_in_zone(fqdn, &zone)?;
    let mut m = update_message(&zone);
    m.add_update(delete_rr(
        &owner,
        RData::TXT(TXT::new(vec![value.to_owned()])),
    ));
    exchange(dns, "delete TXT", m, true).await.map(|_| ())
}

/// Query `server` (the authoritative primary) until `fqdn` TXT contains `value`.
pub async fn wait_txt_visible(dns: &DnsSettings, fqdn: &str, value: &str) -> Result<()> {
    let zone = zone_name(&dns.zone)?;
    let owner = name_in_zone(fqdn, &zone)?;
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let mut m = Message::new();
        m.set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query);
        m.add_query(Query::query(owner.clone(), RecordType::TXT));
        match exchange(dns, "query TXT", m, false).await {
            Ok(rsp) => {
                let found = rsp.answers().iter().any(|r| match r.data() {
                    RData::TXT(t) => t.txt_data().iter().map(|s| &s[..]).eq([value.as_bytes()]),
                    _ => false,
                });
                if found {
                    return Ok(());
                }
            }
            // NXDOMAIN-like answers are "not yet"; transport errors are fatal.
            Err(Error::DnsRefused { .. }) => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() + delay > dns.propagation_timeout {
            return Err(Error::TxtNotVisible {
                server: dns.server,
                name: owner.to_string(),
                after: start.elapsed(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;

    fn tsig(len: usize) -> Tsig {
        Tsig {
            name: "k.".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: vec![1; len],
        }
    }

    fn zone() -> Name {
        zone_name("box.test").expect("zone")
    }

    #[test]
    fn names_must_be_strictly_below_zone() {
        assert!(name_in_zone("k3x9q2.box.test", &zone()).is_ok());
        assert!(name_in_zone("_acme-challenge.k3x9q2.box.test.", &zone()).is_ok());
        assert!(name_in_zone("box.test", &zone()).is_err());
        assert!(name_in_zone("k3x9q2.box.evil", &zone()).is_err());
        assert!(name_in_zone("x.notbox.test", &zone()).is_err());
        assert!(name_in_zone("*.box.test", &zone()).is_err());
        assert_eq!(
            name_in_zone("K3X9Q2.Box.Test", &zone())
                .expect("ok")
                .to_string(),
            "k3x9q2.box.test."
        );
    }

    #[test]
    fn update_message_layout() {
        let z = zone();
        let owner = name_in_zone("a.box.test", &z).expect("name");
        let mut m = update_message(&z);
        m.add_update(delete_rrset(&owner, RecordType::A));
        m.add_update(Record::from_rdata(
            owner.clone(),
            60,
            RData::A(A::new(192, 168, 1, 2)),
        ));
        let bytes = m.to_vec().expect("encode");
        let back = Message::from_vec(&bytes).expect("decode");
        assert_eq!(back.op_code(), OpCode::Update);
        // zone section = 1 SOA question, update section = 2 RRs
        assert_eq!(back.queries().len(), 1);
        assert_eq!(back.queries()[0].query_type(), RecordType::SOA);
        assert_eq!(back.name_servers().len(), 2);
        assert_eq!(back.name_servers()[0].dns_class(), DNSClass::ANY);
        assert_eq!(back.name_servers()[0].ttl(), 0);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut dns = DnsSettings::new(addr, "box.test", tsig(32));
        dns.request_timeout = Duration::from_millis(300);
        let t = Instant::now();
        let err = update_addresses(&dns, "a.box.test", &[])
            .await
            .expect_err("timeout");
        assert!(matches!(err, Error::DnsTimeout { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[test]
    fn tsig_rejects_short_secret() {
        let t = tsig(8);
        assert!(signer(&t).is_err());
    }
}
