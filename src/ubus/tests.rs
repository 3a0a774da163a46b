//! The object against a fake ubusd on a socket pair, the reply encoding against the JSON
//! one, and the decoders against random and truncated bytes.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::blob::{self, Attrs, Value};
use super::*;
use crate::control::protocol::{self, Client, Events, RadioState, Rates, Status, WindowState};

/// blobmsg as ubus's CLI prints it (blobmsg_format_json): a table's attributes as a JSON
/// object, int8 as a boolean, unspec as null.
fn to_json(attrs: Attrs<'_>, array: bool) -> Json {
    let items = attrs.map(|a| {
        let (name, v) = a.msg().expect("well-formed blobmsg");
        let v = match v {
            Value::Unspec => Json::Null,
            Value::Table(t) => to_json(t, false),
            Value::Array(t) => to_json(t, true),
            Value::Str(s) => Json::String(String::from_utf8(s.to_vec()).unwrap()),
            Value::Int(n) => json!(n),
            Value::Bool(b) => json!(b),
            Value::Double(d) => json!(d),
        };
        (String::from_utf8(name.to_vec()).unwrap(), v)
    });
    if array {
        Json::Array(items.map(|(_, v)| v).collect())
    } else {
        Json::Object(items.collect())
    }
}

fn blobmsg(reply: &Reply) -> Vec<u8> {
    let mut b = Vec::new();
    ser::write_fields(&mut b, &ReplyLine(reply)).unwrap();
    b
}

fn status() -> Reply {
    Reply::Status(Status {
        window: WindowState {
            open: true,
            secs_left: None,
            for_: Vec::new(),
            count: None,
            done: None,
        },
        radio: Some(RadioState::Connected),
        clients: vec![Client {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ip: Some(Ipv4Addr::new(192, 168, 250, 2)),
            age: 12,
            session_left: 5_000_000_000,
        }],
        bans: vec![],
        window_mode: "always".into(),
        window_until: None,
        max_clients: 8,
        learned: 3,
        rates: Rates {
            client_up: Some(125_000),
            ..Rates::default()
        },
        uptime: 61,
        version: "0.1.0".into(),
        config: "/etc/config/provisioner".into(),
        config_loaded_at: "2025-03-01T12:00:00Z".into(),
        quotas: Default::default(),
    })
}

#[test]
fn replies_in_blobmsg_read_as_their_json() {
    let event = protocol::EventLine {
        seq: 7,
        ts: "2026-12-01T22:50:03.120Z".into(),
        level: "info".into(),
        event: "evicted".into(),
        fields: vec![
            (
                "mac".into(),
                protocol::Scalar::Str("02:00:00:00:00:01".into()),
            ),
            ("age".into(), protocol::Scalar::Num(3)),
        ],
    };
    for reply in [
        status(),
        Reply::Events(Events {
            events: vec![event.clone(), event],
            next: 8,
            lost: 0,
        }),
        Reply::Error(Failure::new(FailureKind::Usage, "'x' is not a MAC address")),
        Reply::Metrics(protocol::MetricsText {
            text: "provisioner_clients 1\n".into(),
        }),
    ] {
        let want: Json = serde_json::from_str(&reply.encode()).unwrap();
        assert_eq!(
            to_json(Attrs::new(&blobmsg(&reply)), false),
            want,
            "{reply:?}"
        );
    }
    // Numbers past i32 are int64, within it int32 (as rpcd's plugins have them).
    let b = blobmsg(&status());
    let big = 5_000_000_000i64.to_be_bytes();
    assert!(b.windows(8).any(|w| w == big), "no int64 for session_left");
}

#[test]
fn the_signature_lists_the_plugins_methods_and_types() {
    let mut b = Vec::new();
    methods::signature(&mut b);
    let sig = to_json(Attrs::new(&b), false);
    // What `ubus -v list` shows, by blobmsg type number: 3 string, 5 int32, 1 array.
    assert_eq!(
        sig,
        json!({
            "status": {}, "clients": {},
            "evict": {"mac": 3, "ban": 5}, "ban": {"mac": 3, "secs": 5},
            "unban": {"mac": 3}, "window": {"action": 3, "secs": 5, "for": 1, "count": 5},
            "allow_list": {"name": 3},
            "allow_add": {"name": 3, "domain": 1, "address": 1, "proto": 3, "port": 1, "profile": 3},
            "allow_remove": {"name": 1}, "reload": {}, "events": {"since": 5},
            "metrics": {}
        })
    );
    let names: Vec<&str> = methods::METHODS.iter().map(|m| m.name).collect();
    let listed: Vec<&str> = sig
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        listed, sorted,
        "serde_json's map sorts; the order is METHODS'"
    );
}

/// Blobmsg arguments from JSON, as `ubus call` builds them (blobmsg_add_json_element).
fn args(v: &Json) -> Vec<u8> {
    fn put(b: &mut Vec<u8>, name: &str, v: &Json) {
        let at = blob::msg_start(b, name.as_bytes());
        let ty = match v {
            Json::Null => blob::UNSPEC,
            Json::Bool(x) => {
                b.push(u8::from(*x));
                blob::INT8
            }
            Json::Number(n) => match n.as_i64() {
                Some(n) if i32::try_from(n).is_ok() => {
                    b.extend_from_slice(&(n as i32).to_be_bytes());
                    blob::INT32
                }
                Some(n) => {
                    b.extend_from_slice(&n.to_be_bytes());
                    blob::INT64
                }
                None => {
                    b.extend_from_slice(&n.as_f64().unwrap().to_bits().to_be_bytes());
                    blob::DOUBLE
                }
            },
            Json::String(s) => {
                b.extend_from_slice(s.as_bytes());
                b.push(0);
                blob::STRING
            }
            Json::Array(a) => {
                for x in a {
                    put(b, "", x);
                }
                blob::ARRAY
            }
            Json::Object(o) => {
                for (k, x) in o {
                    put(b, k, x);
                }
                blob::TABLE
            }
        };
        blob::end(b, at, blob::msg_word(ty));
    }
    let mut b = Vec::new();
    for (k, x) in v.as_object().unwrap() {
        put(&mut b, k, x);
    }
    b
}

fn call(method: &str, a: Json) -> Result<Request, String> {
    let m = methods::find(method.as_bytes()).unwrap();
    methods::request(m, Attrs::new(&args(&a)))
}

#[test]
fn arguments_make_the_requests_provisionerctl_made() {
    let mac: crate::core::MacAddr = "02:00:00:00:00:01".parse().unwrap();
    assert_eq!(call("status", json!({"extra": 1})), Ok(Request::Status));
    assert_eq!(
        call("evict", json!({"mac": "02:00:00:00:00:01", "ban": 3600})),
        Ok(Request::Evict {
            mac,
            ban_secs: Some(3600)
        })
    );
    assert_eq!(
        call("ban", json!({"mac": "02:00:00:00:00:01", "secs": "60"})),
        Ok(Request::Ban {
            mac,
            secs: Some(60)
        })
    );
    assert_eq!(
        call("window", json!({"action": "open", "secs": 900})),
        Ok(Request::WindowOpen {
            secs: Some(900),
            for_: vec![],
            count: None,
        })
    );
    assert_eq!(
        call(
            "window",
            json!({"action": "open", "for": ["00:11:22:33:44:55", "00:11:23"], "count": 2})
        ),
        Ok(Request::WindowOpen {
            secs: None,
            for_: vec![
                "00:11:22:33:44:55".parse().unwrap(),
                "00:11:23".parse().unwrap()
            ],
            count: Some(2),
        })
    );
    // One device may be given as a string.
    assert_eq!(
        call("window", json!({"action": "open", "for": "00:11:22"})),
        Ok(Request::WindowOpen {
            secs: None,
            for_: vec!["00:11:22".parse().unwrap()],
            count: None,
        })
    );
    assert_eq!(
        call("window", json!({"action": "close"})),
        Ok(Request::WindowClose)
    );
    assert_eq!(
        call(
            "allow_add",
            json!({"name": "fw", "address": ["11.1.0.30"], "port": [8443, "9000-9001"], "domain": "a.example"})
        ),
        Ok(Request::AllowAdd(protocol::AllowSpec {
            name: "fw".into(),
            domains: vec!["a.example".into()],
            addresses: vec!["11.1.0.30".into()],
            proto: None,
            ports: vec!["8443".into(), "9000-9001".into()],
            profile: None,
        }))
    );
    assert_eq!(
        call("allow_remove", json!({"name": "fw"})),
        Ok(Request::AllowRemove {
            names: vec!["fw".into()]
        })
    );
    assert_eq!(
        call("allow_list", json!({"name": ""})),
        Ok(Request::AllowList { name: None })
    );
    assert_eq!(
        call("events", json!({"since": 5})),
        Ok(Request::Events {
            since: Some(5),
            follow: false
        })
    );

    for (method, a, says) in [
        ("evict", json!({}), "evict: missing (a MAC address)"),
        (
            "evict",
            json!({"mac": "02:00:00:00:00:01 --ban 1h"}),
            "is not a MAC address",
        ),
        (
            "evict",
            json!({"mac": 2}),
            "mac: expected a string, got an integer",
        ),
        (
            "ban",
            json!({"mac": "02:00:00:00:00:01", "secs": "$(reboot)"}),
            "'$(reboot)' is not a duration",
        ),
        (
            "ban",
            json!({"mac": "02:00:00:00:00:01", "secs": -1}),
            "'-1' is not a duration",
        ),
        (
            "ban",
            json!({"mac": "02:00:00:00:00:01", "secs": true}),
            "secs: expected an integer, got a boolean",
        ),
        (
            "window",
            json!({"action": "reboot"}),
            "action must be \"open\" or \"close\"",
        ),
        ("window", json!({}), "action must be"),
        (
            "window",
            json!({"action": "open", "for": ["00:11:zz"]}),
            "for: '00:11:zz' is not a MAC prefix",
        ),
        ("allow_add", json!({"domain": ["a"]}), "allow_add: missing"),
        (
            "allow_add",
            json!({"name": "x", "port": [{"a": 1}]}),
            "port: expected strings, got a table",
        ),
        ("allow_remove", json!({"name": []}), "at least one entry"),
        (
            "events",
            json!({"since": 1.5}),
            "since: expected an integer, got a double",
        ),
    ] {
        let got = call(method, a.clone());
        assert!(
            matches!(&got, Err(e) if e.contains(says)),
            "{method} {a}: {got:?}, not {says:?}"
        );
    }
}

proptest! {
    /// Random bytes as a message's attributes, as a call's arguments, as a stream of
    /// messages: never a panic, never a read out of bounds.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::attrs(&bytes);
        for m in methods::METHODS {
            let _ = methods::request(m, Attrs::new(&bytes));
        }
        let mut out = Vec::new();
        let h = Header { version: 0, kind: wire::INVOKE, seq: 1, peer: 2 };
        let _ = invoke(7, h, &bytes, &mut out);
        let mut inbox = Inbox::new();
        inbox.buf[..bytes.len()].copy_from_slice(&bytes);
        inbox.len = bytes.len();
        while let Ok(Some(f)) = inbox.frame() {
            match f {
                Frame::Message(_, n) => {
                    let _ = wire::attrs(inbox.payload(n));
                    inbox.consume(n);
                }
                Frame::Skipped(_) => {}
            }
        }
    }

    /// A well-formed call cut anywhere is refused or waited for, never misread as another.
    #[test]
    fn truncated_calls_never_panic(cut in 0usize..200) {
        let mut m = Vec::new();
        let at = wire::begin(&mut m, wire::INVOKE, 3, 4);
        blob::put_u32(&mut m, wire::ATTR_OBJID, 7);
        blob::put_str(&mut m, wire::ATTR_METHOD, "evict");
        let d = blob::start(&mut m);
        m.extend_from_slice(&args(&json!({"mac": "02:00:00:00:00:01", "ban": 60})));
        blob::end(&mut m, d, blob::word(wire::ATTR_DATA));
        wire::end(&mut m, at);
        let cut = cut.min(m.len());
        let mut inbox = Inbox::new();
        inbox.buf[..cut].copy_from_slice(&m[..cut]);
        inbox.len = cut;
        match inbox.frame() {
            Ok(Some(Frame::Message(h, n))) => {
                prop_assert_eq!(cut, m.len());
                let mut out = Vec::new();
                prop_assert!(invoke(7, h, inbox.payload(n), &mut out).is_some());
            }
            Ok(None) => prop_assert!(cut < m.len()),
            other => prop_assert!(false, "{:?}", other.map(|f| f.is_some())),
        }
        // And the payload itself cut: what is left is refused or parsed, no panic.
        let payload = &m[wire::PREFIX..];
        let mut out = Vec::new();
        let h = Header { version: 0, kind: wire::INVOKE, seq: 3, peer: 4 };
        let _ = invoke(7, h, &payload[..cut.min(payload.len())], &mut out);
    }
}

/// A fake ubusd: greets, takes the object (id 0x42), then sends `calls` and hands back
/// what the object answered to each (the DATA message's reply object and the status).
async fn fake_ubusd(
    listener: UnixListener,
    calls: Vec<(u16, &'static str, Json)>,
) -> Vec<(u16, u32, Option<Json>, u32)> {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut out = Vec::new();
    let at = wire::begin(&mut out, wire::HELLO, 0, 0x99);
    wire::end(&mut out, at);
    s.write_all(&out).await.unwrap();
    let mut inbox = Inbox::new();
    let (h, n) = inbox.next(&mut s).await.unwrap();
    assert_eq!(h.kind, wire::ADD_OBJECT);
    let a = wire::attrs(inbox.payload(n));
    assert_eq!(
        a[wire::ATTR_OBJPATH as usize].unwrap().str(),
        Some(&b"provisioner"[..])
    );
    assert!(a[wire::ATTR_SIGNATURE as usize].is_some());
    inbox.consume(n);
    out.clear();
    let at = wire::begin(&mut out, wire::DATA, h.seq, 0x99);
    blob::put_u32(&mut out, wire::ATTR_OBJID, 0x42);
    wire::end(&mut out, at);
    wire::status(&mut out, h.seq, 0x99, 0, wire::OK);
    // A subscription notice, which needs no answer.
    let at = wire::begin(&mut out, 10, 1, 0);
    blob::put_u32(&mut out, wire::ATTR_OBJID, 0x42);
    wire::end(&mut out, at);
    for (seq, method, a) in &calls {
        let at = wire::begin(&mut out, wire::INVOKE, *seq, 0x1000 + u32::from(*seq));
        blob::put_u32(&mut out, wire::ATTR_OBJID, 0x42);
        blob::put_str(&mut out, wire::ATTR_METHOD, method);
        let d = blob::start(&mut out);
        out.extend_from_slice(&args(a));
        blob::end(&mut out, d, blob::word(wire::ATTR_DATA));
        wire::end(&mut out, at);
    }
    // One call over the limit: skipped, and answered "invalid argument".
    let at = wire::begin(&mut out, wire::INVOKE, 99, 0x1099);
    blob::put_u32(&mut out, wire::ATTR_OBJID, 0x42);
    blob::put_str(&mut out, wire::ATTR_METHOD, &"x".repeat(MAX_MESSAGE));
    wire::end(&mut out, at);
    s.write_all(&out).await.unwrap();

    let mut answers = Vec::new();
    let mut data = None;
    while answers.len() < calls.len() + 1 {
        let (h, n) = inbox.next(&mut s).await.unwrap();
        let a = wire::attrs(inbox.payload(n));
        assert_eq!(a[wire::ATTR_OBJID as usize].unwrap().u32(), Some(0x42));
        match h.kind {
            wire::DATA => {
                let d = a[wire::ATTR_DATA as usize].unwrap();
                data = Some(to_json(Attrs::new(d.data), false));
            }
            wire::STATUS => {
                let st = a[wire::ATTR_STATUS as usize].unwrap().u32().unwrap();
                answers.push((h.seq, h.peer, data.take(), st));
            }
            k => panic!("message type {k} from the object"),
        }
        inbox.consume(n);
    }
    answers
}

#[tokio::test]
async fn calls_through_a_fake_ubusd_reach_the_loop_and_come_back_as_replies() {
    let path = std::env::temp_dir().join(format!("prov-ubus-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, mut rx) = mpsc::channel::<Order>(4);
    let served = tokio::spawn(serve(path.clone(), tx));
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let reply = match o.request {
                Request::Status => status(),
                Request::WindowClose => Reply::Window(WindowState {
                    open: false,
                    secs_left: None,
                    for_: Vec::new(),
                    count: None,
                    done: None,
                }),
                r => Failure::new(FailureKind::Refused, format!("{r:?}")).into(),
            };
            let _ = o.reply.send(reply);
        }
    });
    let answers = fake_ubusd(
        listener,
        vec![
            (1, "status", json!({})),
            (2, "evict", json!({"mac": "nope"})),
            (3, "window", json!({"action": "close"})),
            (4, "reboot", json!({})),
        ],
    )
    .await;
    served.abort();
    let _ = std::fs::remove_file(&path);
    let want_status: Json = serde_json::from_str(&status().encode()).unwrap();
    let by_seq = |seq: u16| {
        answers
            .iter()
            .find(|a| a.0 == seq)
            .unwrap_or_else(|| panic!("no answer to {seq}: {answers:?}"))
            .clone()
    };
    assert_eq!(by_seq(1), (1, 0x1001, Some(want_status), wire::OK));
    let (_, _, usage, st) = by_seq(2);
    assert_eq!(st, wire::OK);
    assert_eq!(
        usage,
        Some(
            json!({"version": 1, "error": {"kind": "usage", "message": "'nope' is not a MAC address"}})
        )
    );
    assert_eq!(
        by_seq(3).2,
        Some(json!({"version": 1, "window": {"open": false, "secs_left": null}}))
    );
    assert_eq!(by_seq(4), (4, 0x1004, None, wire::METHOD_NOT_FOUND));
    assert_eq!(by_seq(99), (99, 0x1099, None, wire::INVALID_ARGUMENT));
}

/// Not a test: writes the fuzz target's seeds (`cargo test --lib fuzz_seeds -- --ignored`;
/// see README.md, "Fuzzing"): what ubusd sends a session, read in pieces of 16 bytes.
#[test]
#[ignore]
fn fuzz_seeds() {
    let objid = 0x2a; // the fuzz target's (src/ubus/fuzz.rs)
    let mut out = Vec::new();
    let at = wire::begin(&mut out, wire::HELLO, 0, 0x99);
    wire::end(&mut out, at);
    let at = wire::begin(&mut out, wire::DATA, 1, 0x99);
    blob::put_u32(&mut out, wire::ATTR_OBJID, objid);
    wire::end(&mut out, at);
    wire::status(&mut out, 1, 0x99, 0, wire::OK);
    let calls = [
        ("status", json!({})),
        ("evict", json!({"mac": "02:00:00:00:00:01", "ban": 3600})),
        (
            "window",
            json!({"action": "open", "for": ["02:00:00"], "count": 2}),
        ),
        ("evict", json!({"mac": 7})),
    ];
    for (seq, (method, a)) in (2..).zip(&calls) {
        let at = wire::begin(&mut out, wire::INVOKE, seq, 0x1000);
        blob::put_u32(&mut out, wire::ATTR_OBJID, objid);
        blob::put_str(&mut out, wire::ATTR_METHOD, method);
        let d = blob::start(&mut out);
        out.extend_from_slice(&args(a));
        blob::end(&mut out, d, blob::word(wire::ATTR_DATA));
        wire::end(&mut out, at);
    }
    crate::fuzz_seed("ubus", "session", &[&[16], &out[..]].concat());
}
