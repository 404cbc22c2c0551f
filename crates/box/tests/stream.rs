//! `GET /v1/counters/stream` as a client sees it (contract §5, revision 2): NDJSON lines at the
//! interval asked for, each a `/v1/counters` object; bad intervals, a second stream from the same
//! terminal and the time limit get their documented answers. (The WAN traffic check needs a box
//! with a real WAN interface: tests/netns.rs.)
mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An open stream: the response head, then its chunked body read line by line.
struct Stream {
    head: Resp,
    reader: BufReader<Tls>,
    pending: Vec<u8>,
    ended: bool,
}

fn open(addr: SocketAddr, query: &str, token: &str, extra: &[(&str, &str)]) -> Stream {
    let s = connect(addr, "localhost", client_config(rustls::DEFAULT_VERSIONS));
    open_on(s, query, token, extra)
}

/// A stream opened from another terminal: the loopback address `src`.
fn open_from(src: &str, addr: SocketAddr, query: &str, token: &str) -> Stream {
    let tcp = connect_from(src, addr);
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let name = "localhost".try_into().unwrap();
    let conn =
        rustls::ClientConnection::new(client_config(rustls::DEFAULT_VERSIONS), name).unwrap();
    open_on(rustls::StreamOwned::new(conn, tcp), query, token, &[])
}

fn open_on(mut s: Tls, query: &str, token: &str, extra: &[(&str, &str)]) -> Stream {
    let mut req = format!(
        "GET /v1/counters/stream{query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let mut head = parse_response(&head);
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        // An error answer: a plain body of Content-Length bytes.
        let n: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; n];
        reader.read_exact(&mut body).unwrap();
        head.body = body;
    }
    Stream {
        ended: !chunked,
        head,
        reader,
        pending: Vec::new(),
    }
}

impl Stream {
    /// The next NDJSON line and when it arrived, or None at the end of the body.
    fn next_line(&mut self) -> Option<(Instant, Value)> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                let v = serde_json::from_slice(&line[..i])
                    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&line)));
                return Some((Instant::now(), v));
            }
            if self.ended {
                assert!(self.pending.is_empty(), "a partial line at the end");
                return None;
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None; // connection closed without the last chunk
            }
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            assert_eq!(&chunk[n..], b"\r\n");
            if n == 0 {
                self.ended = true;
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The standard configuration with `line` added to its `[metrics]` table.
fn with_metrics(name: &str, line: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let text = config(&dir, "", "").replacen(
        "[metrics]\nwan_interface = \"lo\"\n",
        &format!("[metrics]\nwan_interface = \"lo\"\n{line}\n"),
        1,
    );
    assert!(text.contains(line));
    std::fs::write(dir.join("boxapi.toml"), text).unwrap();
    dir
}

fn counters_token() -> String {
    fixtures().a.token("a", "counters")
}

#[test]
fn lines_at_the_interval_for_three_seconds() {
    let d = Daemon::start("stream-lines", "", "");
    let mut s = open(
        d.addr,
        "?interval_ms=100",
        &counters_token(),
        &[("Origin", "https://a.example")],
    );
    assert_eq!(s.head.status, 200, "{:?}", s.head);
    assert_eq!(s.head.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(s.head.header("cache-control"), Some("no-store"));
    assert_eq!(s.head.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        s.head.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let start = Instant::now();
    let mut lines = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        lines.push(s.next_line().expect("the stream ended early"));
    }
    // 3 s at 100 ms is 30 lines (31 with the first, written at once); generous bounds for a
    // loaded machine, an emulator (make test-cross) included.
    assert!((15..=40).contains(&lines.len()), "{} lines", lines.len());
    let mono: Vec<u64> = lines
        .iter()
        .map(|(_, v)| {
            for k in ["timestamp", "monotonic_us", "wan", "client"] {
                assert!(v.get(k).is_some(), "{k} missing: {v}");
            }
            assert!(
                v["wan"]["rx_bytes"].is_u64() && v["wan"]["tx_bytes"].is_u64(),
                "{v}"
            );
            v["monotonic_us"].as_u64().unwrap()
        })
        .collect();
    let gaps: Vec<u64> = mono.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    // Each line's monotonic_us is when its counters were read: lines are due on a fixed schedule,
    // so a read delayed by the scheduler makes one gap longer and the next shorter; never much
    // closer than the interval, and on average close to it.
    assert!(gaps.iter().all(|g| *g >= 50_000), "{gaps:?}");
    let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
    assert!(
        (95_000..=200_000).contains(&mean),
        "mean {mean} µs: {gaps:?}"
    );
    // Written as read: consecutive lines do not arrive in one burst.
    let arrival = lines.last().unwrap().0 - lines[0].0;
    assert!(arrival >= Duration::from_millis(1500), "{arrival:?}");
}

#[test]
fn bad_intervals_wrong_method_and_scope() {
    let d = Daemon::start("stream-bad", "", "");
    let token = counters_token();
    for q in [
        "",
        "?interval_ms=99",
        "?interval_ms=10001",
        "?interval_ms=abc",
        "?interval_ms=-100",
        "?interval_ms=",
        "?interval_ms=100&interval_ms=200",
    ] {
        let s = open(d.addr, q, &token, &[]);
        s.head.assert_problem(400, "invalid_request");
        assert!(
            s.head.json()["detail"]
                .as_str()
                .unwrap()
                .contains("interval_ms"),
            "{q}"
        );
    }
    let r = d.get("/v1/counters/stream?interval_ms=100", &[]);
    r.assert_problem(401, "missing_token");
    let access_only = fixtures().a.token("a", "access");
    let s = open(d.addr, "?interval_ms=100", &access_only, &[]);
    s.head.assert_problem(403, "insufficient_scope");
    let auth = format!("Bearer {token}");
    let r = request(
        d.addr,
        "localhost",
        "HEAD",
        "/v1/counters/stream?interval_ms=100",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, OPTIONS"));
    // A failed attempt holds no stream: a good one still opens.
    let mut s = open(d.addr, "?interval_ms=100", &token, &[]);
    assert_eq!(s.head.status, 200);
    assert!(s.next_line().is_some());
}

#[test]
fn one_stream_per_terminal() {
    let d = Daemon::start("stream-one", "", "");
    let token = counters_token();
    let mut first = open(d.addr, "?interval_ms=200", &token, &[]);
    assert_eq!(first.head.status, 200);
    assert!(first.next_line().is_some());
    // Same terminal (127.0.0.1), even with another tool's token.
    for t in [token.clone(), fixtures().b.token("b", "counters")] {
        let second = open(d.addr, "?interval_ms=100", &t, &[]);
        second.head.assert_problem(429, "rate_limited");
        assert_eq!(second.head.json()["reason"], "stream_open");
        let retry: u64 = second.head.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=121).contains(&retry), "{retry}");
    }
    // The plain endpoints stay available meanwhile.
    assert_eq!(d.get_token("/v1/counters", &token).status, 200);
    // Once the first is closed, the terminal may open another (the box notices at its next write).
    drop(first);
    let reopened = wait_for(Duration::from_secs(5), || {
        open(d.addr, "?interval_ms=100", &token, &[]).head.status == 200
    });
    assert!(reopened, "{}", d.log_text());
    assert!(d.logged("\"reason\":\"closed\""), "{}", d.log_text());
}

/// Contract §5 rev. 3: streams hold at most half of `max_connections` (here 2 of 5); the next
/// terminal's gets 429 `streams_full` with the time until one ends, and is served once one has.
#[test]
fn streams_hold_at_most_half_the_connections() {
    let d = Daemon::start(
        "stream-half",
        "max_connections = 5\nmax_connections_per_terminal = 2",
        "",
    );
    let token = counters_token();
    let mut streams: Vec<Stream> = ["127.0.0.1", "127.0.0.2"]
        .into_iter()
        .map(|src| open_from(src, d.addr, "?interval_ms=200", &token))
        .collect();
    for s in &mut streams {
        assert_eq!(s.head.status, 200, "{:?}", s.head);
        assert!(s.next_line().is_some());
    }
    let third = open_from("127.0.0.3", d.addr, "?interval_ms=200", &token);
    third.head.assert_problem(429, "rate_limited");
    assert_eq!(third.head.json()["reason"], "streams_full");
    let retry: u64 = third.head.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=121).contains(&retry), "{retry}");
    // A plain request from that terminal is still answered.
    let auth = format!("Bearer {token}");
    assert_eq!(
        d.get("/v1/counters", &[("Authorization", &auth)]).status,
        200
    );
    drop(streams.pop());
    let opened = wait_for(Duration::from_secs(5), || {
        open_from("127.0.0.3", d.addr, "?interval_ms=100", &token)
            .head
            .status
            == 200
    });
    assert!(opened, "{}", d.log_text());
}

#[test]
fn a_stream_ends_at_its_time_limit() {
    // Longer than a keep-alive connection may stay idle (5 s): a stream is not idle.
    let d = Daemon::start_in(with_metrics("stream-limit", "stream_max_seconds = 7"), &[]);
    let token = counters_token();
    let started = Instant::now();
    let mut s = open(d.addr, "?interval_ms=100", &token, &[]);
    assert_eq!(s.head.status, 200);
    let mut n = 0;
    while s.next_line().is_some() {
        n += 1;
        assert!(started.elapsed() < Duration::from_secs(20), "never ended");
    }
    assert!(
        s.ended,
        "the body must end with its last chunk, not a cut connection"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(6900) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!((35..=75).contains(&n), "{n} lines");
    assert!(d.logged("\"reason\":\"time_limit\""), "{}", d.log_text());
    // The limit frees the terminal's stream at once.
    let mut again = open(d.addr, "?interval_ms=100", &token, &[]);
    assert_eq!(again.head.status, 200);
    assert!(again.next_line().is_some());
}

#[test]
fn the_limit_is_at_most_120_seconds() {
    for (value, ok) in [("120", true), ("1", true), ("121", false), ("0", false)] {
        let dir = with_metrics("stream-cfg", &format!("stream_max_seconds = {value}"));
        let out = daemon_command()
            .args(["check-config", "--config"])
            .arg(dir.join("boxapi.toml"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(if ok { 0 } else { 64 }),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !ok {
            assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.stream_max_seconds"));
        }
    }
}

#[test]
fn a_withholding_applies_from_the_next_line() {
    let d = Daemon::start("stream-withhold", "", "");
    let mut s = open(d.addr, "?interval_ms=100", &counters_token(), &[]);
    assert_eq!(s.head.status, 200);
    let (_, first) = s.next_line().unwrap();
    assert!(first["wan"].is_object(), "{first}");
    assert_eq!(first["withheld"], serde_json::json!([]));
    let (code, _, err) = d.ctl(&["withhold", "counters", "--tool", "a"]);
    assert_eq!(code, 0, "{err}");
    let mut withheld = None;
    for _ in 0..50 {
        let (_, line) = s.next_line().unwrap();
        if line["wan"].is_null() {
            withheld = Some(line);
            break;
        }
    }
    let line = withheld.expect("the stream kept sending the WAN counters");
    assert_eq!(line["withheld"], serde_json::json!(["counters"]));
    assert!(line["monotonic_us"].is_u64(), "{line}");
}

/// A reload that takes the stream's rights away (the tool revoked in the file, its counters
/// scope removed, its key gone, the origin of the page that opened it no longer the tool's) ends
/// the stream at its next line, as it would refuse the same request made now.
#[test]
fn a_reload_that_takes_the_rights_away_ends_the_stream() {
    let f = fixtures();
    let a_keys = format!("keys = [\"{}/a.jwk\"]", f.dir.display());
    for (name, from, to) in [
        ("revoked", "id = \"a\"\n".to_owned(), "id = \"a\"\nrevoked = true\n".to_owned()),
        (
            "scope",
            "origins = [\"https://a.example\", \"https://a.example:8443\"]\nscopes = [\"access\", \"counters\"]".to_owned(),
            "origins = [\"https://a.example\", \"https://a.example:8443\"]\nscopes = [\"access\"]".to_owned(),
        ),
        ("key", a_keys.clone(), "keys = []".to_owned()),
        (
            "origin",
            "origins = [\"https://a.example\", \"https://a.example:8443\"]".to_owned(),
            "origins = [\"https://a.example:8443\"]".to_owned(),
        ),
    ] {
        let d = Daemon::start(&format!("stream-reload-{name}"), "", "");
        let token = counters_token();
        let auth = format!("Bearer {token}");
        let mut asking = vec![("Authorization", auth.as_str())];
        if name == "origin" {
            asking.push(("Origin", "https://a.example"));
        }
        let mut s = open(d.addr, "?interval_ms=100", &token, &asking[1..]);
        assert_eq!(s.head.status, 200, "{name}");
        assert!(s.next_line().is_some());
        let path = d.dir.join("boxapi.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&from), "{name}");
        std::fs::write(&path, text.replacen(&from, &to, 1)).unwrap();
        let (code, out, err) = d.ctl(&["reload"]);
        assert_eq!(code, 0, "{name}: {out} {err}");
        // The same request made now is refused ...
        assert_ne!(d.get("/v1/counters", &asking).status, 200, "{name}");
        // ... and the open stream ends within a few lines.
        let started = Instant::now();
        let mut after = 0;
        while s.next_line().is_some() {
            after += 1;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{name}: the stream goes on after the reload ({after} lines)"
            );
        }
        assert!(s.ended, "{name}: cut instead of ended");
        assert!(d.logged("\"event\":\"stream_end\""), "{name}");
    }
}

/// `ctl revoke` and the token's own expiry (plus the leeway) end a stream at its next line, each
/// logged with its reason.
#[test]
fn a_stream_ends_with_its_token_and_its_tool() {
    let d = Daemon::start("stream-ends", "", "");
    let mut s = open(d.addr, "?interval_ms=100", &counters_token(), &[]);
    assert_eq!(s.head.status, 200);
    assert!(s.next_line().is_some());
    let (code, _, err) = d.ctl(&["revoke", "a"]);
    assert_eq!(code, 0, "{err}");
    let started = Instant::now();
    while s.next_line().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "goes on revoked"
        );
    }
    assert!(s.ended);
    assert!(d.logged("\"reason\":\"revoked\""), "{}", d.log_text());

    // Tool b's token, past its exp by 28 of the 30 s of leeway: refused within about 2 s.
    let mut claims = common::claims("b", "counters");
    let exp = now() - 28;
    claims["exp"] = exp.into();
    claims["iat"] = (exp - 900).into();
    let token = fixtures().b.sign(&claims);
    let mut s = open(d.addr, "?interval_ms=100", &token, &[]);
    assert_eq!(s.head.status, 200, "{:?}", s.head);
    let started = Instant::now();
    while s.next_line().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "goes on expired"
        );
    }
    assert!(s.ended);
    assert!(d.logged("\"reason\":\"token_expired\""), "{}", d.log_text());
    assert_ne!(d.get_token("/v1/counters", &token).status, 200);
}
