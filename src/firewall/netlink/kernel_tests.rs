//! The netlink client against the kernel, each test in its own network namespace (root:
//! `make test` runs them with `--features rig`; without it they are reported as ignored,
//! not passed).

use std::net::Ipv4Addr;
use std::process::Command;

use nix::sched::{CloneFlags, unshare};

use super::*;
use crate::config::Proto;
use crate::core::MacAddr;
use crate::firewall::keys::{Key, SetKey};

/// Keys through the one codec (`firewall::keys`), from the bytes the tests spell out.
fn lease_key(mac: [u8; 6], ip: [u8; 4]) -> Key {
    (MacAddr(mac), Ipv4Addr::from(ip)).encode()
}

fn allow4_key(ip: [u8; 4], proto: Proto, port: u16) -> Key {
    (Ipv4Addr::from(ip), proto, port).encode()
}

const TABLE: &str = "provisioner";
const RULESET: &str = r#"
table inet provisioner {
    set leases { type ether_addr . ipv4_addr; flags timeout; }
    set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ether saddr . ip saddr @leases accept
        counter drop
    }
    chain input {
        type filter hook input priority -5; policy drop;
        iifname "lo" accept
    }
    chain prerouting { type filter hook prerouting priority mangle; }
    chain helper {
        counter
        ip daddr . meta l4proto . th dport @allow4 accept
        return
    }
}
table inet other {
    set leases { type ipv4_addr; }
    chain forward { type filter hook forward priority 0; counter; }
}
"#;

/// Runs `f` on a thread that has its own, empty network namespace (gone when it ends),
/// with RULESET loaded. Needs root; the tests are ignored without `--features rig`, which
/// also keeps them out of `make cross-test` (qemu-user refuses NETLINK_NETFILTER sockets
/// with EPROTONOSUPPORT: it translates only rtnetlink, audit and uevent).
fn in_netns(f: impl FnOnce(&mut Netlink) + Send + 'static) {
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): the rig feature needs root");
        nft_load(RULESET);
        let mut nl = Netlink::open().expect("open netlink");
        f(&mut nl);
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn nft_load(script: &str) {
    if let Err(e) = crate::firewall::run_nft(script) {
        panic!("{e}");
    }
}

fn nft_list_set(set: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "set", "inet", TABLE, set])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn elements(nl: &mut Netlink, set: &str) -> Vec<SetElement> {
    let mut v = nl.set_elements(TABLE, set).unwrap();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn mac(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [2, 0, 0, 0, hi, lo]
}

fn add<'a>(set: &'a str, key: &'a [u8], secs: u64) -> SetOp<'a> {
    SetOp::Add {
        set,
        key,
        timeout: Some(Duration::from_secs(secs)),
        comment: None,
    }
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_add_and_read_back() {
    in_netns(|nl| {
        let seq = nl.seq;
        nl.apply(TABLE, &[]).unwrap();
        assert_eq!(nl.seq, seq, "an empty apply sends nothing");

        let k1 = lease_key(mac(1), [192, 168, 250, 5]);
        let k2 = lease_key(mac(2), [192, 168, 250, 6]);
        let k3 = lease_key(mac(3), [192, 168, 250, 7]);
        let a1 = allow4_key([192, 168, 250, 5], Proto::Tcp, 443);
        let ops = [
            add("leases", &k1, 60),
            add("leases", &k2, 120),
            SetOp::Add {
                set: "leases",
                key: &k3,
                timeout: None,
                comment: None,
            },
            add("allow4", &a1, 30),
        ];
        nl.apply(TABLE, &ops).unwrap();

        let got = elements(nl, "leases");
        assert_eq!(got.len(), 3);
        for (e, key, secs) in [(&got[0], k1, Some(60)), (&got[1], k2, Some(120))] {
            assert_eq!(e.key, key.as_bytes());
            assert_eq!(e.timeout, secs.map(Duration::from_secs));
            let (t, x) = (e.timeout.unwrap(), e.expires.expect("expires"));
            assert!(x <= t && x > t - Duration::from_secs(10), "{e:?}");
        }
        assert_eq!(
            got[2],
            SetElement {
                key: k3.to_vec(),
                timeout: None,
                expires: None,
                comment: None,
                counter: None,
                quota: None,
            }
        );
        let allow = elements(nl, "allow4");
        assert_eq!(allow.len(), 1);
        assert_eq!(allow[0].key, a1.as_bytes());

        // The key layout must be what nft itself means by these types.
        let text = nft_list_set("leases");
        assert!(text.contains("02:00:00:00:00:01 . 192.168.250.5"), "{text}");
        assert!(text.contains("02:00:00:00:00:03 . 192.168.250.7"), "{text}");
        let text = nft_list_set("allow4");
        assert!(text.contains("192.168.250.5 . tcp . 443"), "{text}");
    });
}

/// A comment travels as nft's own user data: `nft list` shows it, and a dump returns it.
#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_comments_read_back_and_show_in_nft() {
    in_netns(|nl| {
        let a1 = allow4_key([11, 1, 0, 10], Proto::Tcp, 443);
        let long = "x".repeat(200);
        let a2 = allow4_key([11, 1, 0, 11], Proto::Tcp, 443);
        let ops = [
            SetOp::Add {
                set: "allow4",
                key: &a1,
                timeout: Some(Duration::from_secs(60)),
                comment: Some("setup.acme.example"),
            },
            SetOp::Add {
                set: "allow4",
                key: &a2,
                timeout: Some(Duration::from_secs(60)),
                comment: Some(&long),
            },
        ];
        nl.apply(TABLE, &ops).unwrap();
        let got = elements(nl, "allow4");
        assert_eq!(got[0].comment.as_deref(), Some("setup.acme.example"));
        assert_eq!(got[1].comment.as_deref(), Some(&long[..MAX_COMMENT_LEN]));
        let text = nft_list_set("allow4");
        assert!(text.contains("comment \"setup.acme.example\""), "{text}");
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_delete_and_re_add() {
    in_netns(|nl| {
        let k = lease_key(mac(1), [10, 0, 0, 1]);
        nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
        // Adding an element that exists is not an error (no NLM_F_EXCL), twice in a
        // batch or in a later one.
        nl.apply(TABLE, &[add("leases", &k, 60), add("leases", &k, 60)])
            .unwrap();
        nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
        assert_eq!(elements(nl, "leases").len(), 1);

        nl.apply(
            TABLE,
            &[SetOp::Delete {
                set: "leases",
                key: &k,
            }],
        )
        .unwrap();
        assert!(elements(nl, "leases").is_empty());
        assert!(!nft_list_set("leases").contains("02:00:00:00:00:01"));
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_add_delete_add_refreshes_the_timeout() {
    in_netns(|nl| {
        let (old, fresh) = (
            lease_key(mac(1), [10, 0, 0, 1]),
            lease_key(mac(2), [10, 0, 0, 2]),
        );
        nl.apply(TABLE, &[add("leases", &old, 10)]).unwrap();

        // For an existing element and for one that only appears inside the batch.
        for k in [&old, &fresh] {
            let refresh = [
                add("leases", k, 600),
                SetOp::Delete {
                    set: "leases",
                    key: k,
                },
                add("leases", k, 600),
            ];
            nl.apply(TABLE, &refresh).unwrap();
        }
        let got = elements(nl, "leases");
        assert_eq!(got.len(), 2);
        for e in &got {
            assert_eq!(e.timeout, Some(Duration::from_secs(600)), "{e:?}");
            assert!(e.expires.unwrap() > Duration::from_secs(590), "{e:?}");
        }
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_plain_re_add_timeout_behaviour() {
    // Informational: kernels with element timeout updates (Linux 6.10+?) apply the new
    // timeout on a plain re-add, older ones keep the old one. Either way it succeeds.
    in_netns(|nl| {
        let k = lease_key(mac(1), [10, 0, 0, 1]);
        nl.apply(TABLE, &[add("leases", &k, 10)]).unwrap();
        nl.apply(TABLE, &[add("leases", &k, 600)]).unwrap();
        let e = &elements(nl, "leases")[0];
        assert!(
            [10, 600]
                .map(Duration::from_secs)
                .contains(&e.timeout.unwrap()),
            "{e:?}"
        );
        eprintln!("plain re-add with a longer timeout leaves: {e:?}");
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_failed_batch_applies_nothing() {
    in_netns(|nl| {
        let (a, missing, c) = (
            lease_key(mac(1), [10, 0, 0, 1]),
            lease_key(mac(2), [10, 0, 0, 2]),
            lease_key(mac(3), [10, 0, 0, 3]),
        );
        let ops = [
            add("leases", &a, 60),
            SetOp::Delete {
                set: "leases",
                key: &missing,
            },
            add("leases", &c, 60),
        ];
        let err = nl.apply(TABLE, &ops).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        assert!(matches!(
            err,
            NetlinkError::Kernel {
                op: "delete set element",
                ..
            }
        ));
        assert!(
            err.to_string()
                .contains("ENOENT: no such table/set/element"),
            "{err}"
        );
        assert!(
            elements(nl, "leases").is_empty(),
            "the batch was applied in part"
        );

        // Other kernel refusals; the socket stays usable after each.
        let short = [1u8; 8];
        let err = nl.apply(TABLE, &[add("leases", &short, 60)]).unwrap_err();
        eprintln!("wrong key length: {err}");
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
        let err = nl.apply(TABLE, &[add("nosuchset", &a, 60)]).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        let err = nl
            .apply("nosuchtable", &[add("leases", &a, 60)])
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        let err = nl.set_elements(TABLE, "nosuchset").unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");

        nl.apply(TABLE, &[add("leases", &a, 60)]).unwrap();
        assert_eq!(elements(nl, "leases").len(), 1);
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_5000_elements_in_one_batch() {
    in_netns(|nl| {
        let keys: Vec<Key> = (0..5000u16)
            .map(|i| lease_key(mac(i), [10, 1, (i >> 8) as u8, i as u8]))
            .collect();
        let ops: Vec<SetOp> = keys.iter().map(|k| add("leases", k, 300)).collect();
        let start = std::time::Instant::now();
        nl.apply(TABLE, &ops).unwrap();
        eprintln!("5000 adds: {:?}", start.elapsed());
        let got = elements(nl, "leases");
        let got: Vec<&[u8]> = got.iter().map(|e| &e.key[..]).collect();
        let want: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        assert_eq!(got, want);
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_a_dump_holding_the_expected_keys_is_read_once() {
    in_netns(|nl| {
        let mut keys: Vec<Key> = (0..300u16)
            .map(|i| lease_key(mac(i), [10, 1, (i >> 8) as u8, i as u8]))
            .collect();
        keys.sort_by(|a, b| a[..].cmp(&b[..]));
        let ops: Vec<SetOp> = keys.iter().map(|k| add("leases", k, 300)).collect();
        nl.apply(TABLE, &ops).unwrap();
        let want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let dumps = |nl: &mut Netlink, expected: Option<&[Vec<u8>]>| {
            let before = nl.dumps;
            let got = nl
                .set_elements_expecting(TABLE, "leases", expected)
                .unwrap();
            let got: Vec<Vec<u8>> = got.into_iter().map(|e| e.key).collect();
            assert_eq!(got, want, "the set's keys, whatever was expected");
            nl.dumps - before
        };
        assert_eq!(dumps(nl, Some(&want)), 1, "the expected keys: one dump");
        assert!(dumps(nl, None) >= 2, "nothing expected: two dumps alike");
        // An expectation the set does not meet (one key short, one key too many) is not
        // taken for the truth: the read falls back to two dumps and returns the set.
        assert!(dumps(nl, Some(&want[1..])) >= 2);
        let mut more = want.clone();
        more.push(vec![0xff; want[0].len()]);
        assert!(dumps(nl, Some(&more)) >= 2);
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_refresh_of_many_keys_gets_every_ack() {
    // 1500 keys x (add, delete, add): only "add k2" can join "add k1", so 3001 messages
    // and as many acks, all queued before sendmsg() returns. Without growing SO_RCVBUF
    // this overruns (ENOBUFS); the batch also outgrows the default SO_SNDBUF.
    in_netns(|nl| {
        let default_sndbuf = nl.sndbuf;
        let keys: Vec<Key> = (0..1500u16)
            .map(|i| allow4_key([10, 2, (i >> 8) as u8, i as u8], Proto::Tcp, i))
            .collect();
        let initial: Vec<SetOp> = keys.iter().map(|k| add("allow4", k, 10)).collect();
        nl.apply(TABLE, &initial).unwrap();
        let refresh: Vec<SetOp> = keys
            .iter()
            .flat_map(|k| {
                [
                    add("allow4", k, 900),
                    SetOp::Delete {
                        set: "allow4",
                        key: k,
                    },
                    add("allow4", k, 900),
                ]
            })
            .collect();
        let start = std::time::Instant::now();
        nl.apply(TABLE, &refresh).unwrap();
        let (msgs, bytes) = (nl.batch_ops.len(), nl.send.len());
        eprintln!(
            "{msgs} messages, {bytes} bytes: {:?}; SO_SNDBUF {} SO_RCVBUF {}",
            start.elapsed(),
            nl.sndbuf,
            nl.rcvbuf
        );
        assert_eq!(msgs, 3001);
        assert!(bytes > default_sndbuf, "the send buffer had to grow");
        let got = elements(nl, "allow4");
        assert_eq!(got.len(), keys.len());
        assert!(
            got.iter()
                .all(|e| e.timeout == Some(Duration::from_secs(900)))
        );
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_describe_table() {
    in_netns(|nl| {
        let mut info = nl
            .describe_table(FAMILY_INET, TABLE)
            .unwrap()
            .expect("table exists");
        info.chains.sort_by(|a, b| a.name.cmp(&b.name));
        info.sets.sort_by(|a, b| a.name.cmp(&b.name));
        let chain = |name: &str, hook, priority, policy, rules| ChainInfo {
            name: name.into(),
            hook,
            priority,
            policy,
            rules,
        };
        let want = [
            chain(
                "forward",
                Some(HOOK_FORWARD),
                Some(0),
                Some(POLICY_ACCEPT),
                2,
            ),
            chain("helper", None, None, None, 3),
            chain("input", Some(HOOK_INPUT), Some(-5), Some(POLICY_DROP), 1),
            chain(
                "prerouting",
                Some(HOOK_PREROUTING),
                Some(-150),
                Some(POLICY_ACCEPT),
                0,
            ),
        ];
        assert_eq!(info.chains, want);
        let names: Vec<_> = info
            .sets
            .iter()
            .map(|s| (s.name.as_str(), s.key_len))
            .collect();
        assert_eq!(names, [("allow4", 12), ("leases", 12)]);
        assert!(
            info.sets.iter().all(|s| s.flags & SET_F_TIMEOUT != 0),
            "{:?}",
            info.sets
        );

        assert_eq!(nl.describe_table(FAMILY_INET, "nosuchtable").unwrap(), None);
        let other = nl.describe_table(FAMILY_INET, "other").unwrap().unwrap();
        assert_eq!(other.chains.len(), 1);
        assert_eq!(other.chains[0].rules, 1);
        assert_eq!(other.sets[0].key_len, 4);
    });
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_delete_table() {
    in_netns(|nl| {
        let k = lease_key(mac(1), [10, 0, 0, 1]);
        nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap();
        assert!(nl.delete_table(FAMILY_INET, TABLE).unwrap());
        assert_eq!(nl.describe_table(FAMILY_INET, TABLE).unwrap(), None);
        assert!(!nl.delete_table(FAMILY_INET, TABLE).unwrap());
        let err = nl.apply(TABLE, &[add("leases", &k, 60)]).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(
            nl.describe_table(FAMILY_INET, "other").unwrap().is_some(),
            "only our table goes"
        );
    });
}

/// Loopback up and conntrack on (a `ct` rule registers its hooks in the namespace).
fn track_loopback() {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    nft_load(
        "table inet tracking {\n\tchain out { type filter hook output priority 0; ct state new accept; }\n}\n",
    );
}

/// `n` conntrack entries whose original source is `src`: UDP to 127.0.0.1, one
/// destination port each (nobody listens; the entries stay, unreplied).
fn udp_flows(src: Ipv4Addr, n: u16) {
    let s = std::net::UdpSocket::bind((src, 0)).unwrap();
    for port in 0..n {
        s.send_to(&[0], (Ipv4Addr::LOCALHOST, 10_000 + port))
            .unwrap();
    }
}

#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_end_flows_takes_the_given_sources_only() {
    in_netns(|nl| {
        track_loopback();
        let ip = |i| Ipv4Addr::new(127, 0, 0, i);
        // More than one send of deletes for .2.
        udp_flows(ip(2), 1500);
        udp_flows(ip(3), 200);
        udp_flows(ip(4), 300);
        udp_flows(ip(5), 1);
        assert_eq!(nl.end_flows(&[]).unwrap(), 0);
        assert_eq!(nl.end_flows(&[ip(2), ip(3), ip(2), ip(9)]).unwrap(), 1700);
        assert_eq!(nl.end_flows(&[ip(2), ip(3)]).unwrap(), 0, "gone");
        assert_eq!(nl.end_flows(&[ip(5), ip(4)]).unwrap(), 301, "left alone");
    });
}

/// The kernel filters a dump by original source (CTA_FILTER): only that address's
/// entries cross to the daemon, not the whole table.
#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_filters_a_conntrack_dump_by_source() {
    in_netns(|nl| {
        track_loopback();
        udp_flows(Ipv4Addr::new(127, 0, 0, 2), 30);
        udp_flows(Ipv4Addr::new(127, 0, 0, 3), 500);
        let count = |nl: &mut Netlink, source: Option<[u8; 4]>| {
            let mut n = 0;
            nl.dump_conntrack(source, |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            n
        };
        assert!(count(nl, None) >= 530);
        assert_eq!(count(nl, Some([127, 0, 0, 2])), 30);
        assert_eq!(count(nl, Some([127, 0, 0, 9])), 0);
    });
}

/// Informational: ending the flows of many addresses in one dump against one dump per
/// address (what the daemon did before), with a table full of other entries.
#[test]
#[cfg_attr(not(feature = "rig"), ignore = "needs root: cargo test --features rig")]
fn kernel_end_flows_dumps_once_for_all_addresses() {
    in_netns(|nl| {
        track_loopback();
        let (clients, flows, others) = (50u8, 40u16, 15_000u16);
        for i in 0..clients {
            udp_flows(Ipv4Addr::new(127, 0, 1, i), flows);
        }
        udp_flows(Ipv4Addr::new(127, 0, 2, 1), others);
        let ips: Vec<Ipv4Addr> = (0..clients).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
        let (each, all) = ips.split_at(ips.len() / 2);

        let start = std::time::Instant::now();
        let mut n = 0;
        for ip in each {
            n += nl.end_flows(&[*ip]).unwrap();
        }
        let one_by_one = start.elapsed();
        let start = std::time::Instant::now();
        let m = nl.end_flows(all).unwrap();
        let at_once = start.elapsed();
        let per_half = usize::from(clients / 2) * usize::from(flows);
        assert_eq!((n, m), (per_half, per_half));
        eprintln!(
            "{} entries; the flows of {} addresses ({per_half} entries): one dump each {one_by_one:?}, one dump for all {at_once:?}",
            usize::from(clients) * usize::from(flows) + usize::from(others),
            each.len(),
        );
        let left = nl.end_flows(&[Ipv4Addr::new(127, 0, 2, 1)]).unwrap();
        assert_eq!(left, usize::from(others));
    });
}
