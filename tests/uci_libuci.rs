//! Differential test of our UCI reader (`src/config/uci.rs`) against OpenWrt's real libuci,
//! built from upstream source by the kit (`tests/kit`).
//!
//! libuci's side is `tests/uci/ucidump.c`, compiled here against the kit's `libuci.so`: it
//! loads each file with `uci_load` (what `uci show`, `uci export`, procd's `reload_config`
//! and LuCI go through; strict, no uncommitted changes, no `/var/run/uci` overrides) and
//! prints every section, option and list item in hex, or libuci's parse error and line.
//! Our side is `uci::load`. They must agree on:
//!
//! - accept or reject; when rejecting, libuci's reason and the line libuci reports;
//! - sections in order, with type, anonymity and libuci's name. Anonymous names (`cfgNNHHHH`,
//!   from a section count and a hash of the type) are compared too: a later
//!   `config TYPE cfgNNHHHH` reopens that section in libuci, so the reader must know them to
//!   merge the same way. (The `Document` the schema sees has no name for them and calls them
//!   `@type[i]`, as `uci show` does; the position is what identifies them to a user.)
//! - options in order, single value or list, value bytes exact.
//!
//! Known, deliberate differences (see `uci.rs`): a file with a NUL byte is rejected by us
//! (never generated; the corpus checks we reject it), and `uci::parse` (the `Document`)
//! rejects values that are not UTF-8, naming line and option, where `uci::load` agrees with
//! libuci byte for byte.
//!
//! Inputs: every file in `tests/uci/corpus` (hand-written tricky cases), the shipped configs
//! and the OpenWrt router shapes in `tests/openwrt/*/`, then generated files (proptest; `UCI_DIFF_CASES`, default 5000).

mod kit;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use provisioner::config::uci::{self, UciErrorKind, Value};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sections(Vec<Sec>),
    ParseError { reason: String, line: usize },
    Other(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Sec {
    anonymous: bool,
    name: B,
    kind: B,
    options: Vec<(B, Val)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Val {
    Single(B),
    List(Vec<B>),
}

/// Bytes that print as an escaped string.
#[derive(Clone, PartialEq, Eq)]
struct B(Vec<u8>);

impl std::fmt::Debug for B {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// The dumper, compiled once per test run.
fn dumper() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let k = kit::prefix();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/uci/ucidump.c");
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ucidump");
        let out = Command::new("cc")
            .args(["-O", "-Wall", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg(format!("-I{}", k.join("include").display()))
            .arg(format!("-L{}", k.join("lib").display()))
            .arg(format!("-Wl,-rpath,{}", k.join("lib").display()))
            .args(["-luci", "-lubox"])
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// A running dumper with a config directory of its own.
struct Libuci {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    confdir: PathBuf,
    savedir: PathBuf,
}

impl Libuci {
    fn start(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("uci-libuci-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (confdir, savedir) = (dir.join("config"), dir.join("save"));
        std::fs::create_dir_all(&confdir).unwrap();
        std::fs::create_dir_all(&savedir).unwrap();
        let mut child = Command::new(dumper())
            .arg(&confdir)
            .arg(&savedir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ucidump");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Libuci {
            child,
            stdin,
            stdout,
            confdir,
            savedir,
        }
    }

    /// libuci's reading of `text` (written as config `f`).
    fn read(&mut self, text: &[u8]) -> Outcome {
        std::fs::write(self.confdir.join("f"), text).unwrap();
        writeln!(self.stdin, "f").unwrap();
        self.stdin.flush().unwrap();
        let mut sections: Vec<Sec> = Vec::new();
        let mut outcome = None;
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "ucidump died"
            );
            let line = line.trim_end_matches('\n');
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            let words: Vec<B> = rest.split(' ').filter_map(unhex).map(B).collect();
            match tag {
                "end" => break,
                "section" => sections.push(Sec {
                    anonymous: rest.starts_with('1'),
                    name: words[0].clone(),
                    kind: words[1].clone(),
                    options: Vec::new(),
                }),
                "option" => sections
                    .last_mut()
                    .unwrap()
                    .options
                    .push((words[0].clone(), Val::Single(words[1].clone()))),
                "list" => sections
                    .last_mut()
                    .unwrap()
                    .options
                    .push((words[0].clone(), Val::List(words[1..].to_vec()))),
                "error" => {
                    outcome = Some(match rest.rsplit_once('|') {
                        Some((reason, n)) => Outcome::ParseError {
                            reason: reason.to_owned(),
                            line: n.parse().unwrap(),
                        },
                        None => Outcome::Other(rest.to_owned()),
                    })
                }
                _ => panic!("ucidump said {line:?}"),
            }
        }
        outcome.unwrap_or(Outcome::Sections(sections))
    }
}

impl Drop for Libuci {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unhex(w: &str) -> Option<Vec<u8>> {
    let h = w.strip_prefix('x')?;
    Some(
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect(),
    )
}

/// Our reading, in the dumper's terms.
fn ours(text: &[u8]) -> Outcome {
    match uci::load(text) {
        Ok(p) => Outcome::Sections(
            p.sections
                .into_iter()
                .map(|s| Sec {
                    anonymous: s.anonymous,
                    name: B(s.name.into_bytes()),
                    kind: B(s.kind.into_bytes()),
                    options: s
                        .options
                        .into_iter()
                        .map(|o| {
                            let v = match o.value {
                                Value::Single(i) => Val::Single(B(i.value)),
                                Value::List(items) => {
                                    Val::List(items.into_iter().map(|i| B(i.value)).collect())
                                }
                            };
                            (B(o.name.into_bytes()), v)
                        })
                        .collect(),
                })
                .collect(),
        ),
        Err(e) => match e.kind.libuci_reason() {
            Some(reason) => Outcome::ParseError {
                reason: reason.to_owned(),
                line: e.uci_line,
            },
            None => Outcome::Other(format!("{:?}: {e}", e.kind)),
        },
    }
}

/// Checks one file; `Ok(None)` if libuci accepted it, else libuci's reason.
fn agree(libuci: &mut Libuci, text: &[u8]) -> Result<Option<String>, String> {
    let theirs = libuci.read(text);
    let show = || format!("\"{}\"", text.escape_ascii());
    if text.contains(&0) {
        // Deliberate: a NUL byte makes libuci's reading depend on its buffer sizes.
        return match uci::load(text) {
            Err(e) if e.kind == UciErrorKind::NulByte => Ok(Some("NUL byte (ours)".into())),
            other => Err(format!("{}: NUL byte not rejected: {other:?}", show())),
        };
    }
    let mine = ours(text);
    if mine != theirs {
        return Err(format!(
            "{}\n  libuci: {theirs:?}\n  ours:   {mine:?}",
            show()
        ));
    }
    match (&theirs, uci::load(text), uci::parse(text)) {
        (Outcome::Sections(_), Ok(p), doc) => {
            // The Document differs from libuci's view only by refusing values that are not
            // UTF-8, and then names the first such value's line and option.
            let bad = p.sections.iter().flat_map(|s| &s.options).find_map(|o| {
                let items = match &o.value {
                    Value::Single(i) => std::slice::from_ref(i),
                    Value::List(items) => items.as_slice(),
                };
                items
                    .iter()
                    .find(|i| std::str::from_utf8(&i.value).is_err())
                    .map(|i| (i.line, o.name.clone()))
            });
            match (bad, doc) {
                (None, Ok(_)) => {}
                (Some((line, name)), Err(e))
                    if e.kind == UciErrorKind::NotUtf8
                        && (e.line, e.option.as_deref()) == (line, Some(name.as_str())) => {}
                (bad, doc) => {
                    return Err(format!(
                        "{}: non-UTF-8 value {bad:?} but parse gave {doc:?}",
                        show()
                    ));
                }
            }
            Ok(None)
        }
        (Outcome::ParseError { line, reason }, Err(e), _) => {
            // Our own line is libuci's, or the line a quote opened on, or one more on a last
            // line without a newline (libuci counts newlines).
            let quote = matches!(
                e.kind,
                UciErrorKind::UnterminatedSingle | UciErrorKind::UnterminatedDouble
            );
            let ok = e.line == *line
                || (quote && e.line <= *line + 1)
                || (e.line == line + 1 && !text.ends_with(b"\n"));
            if !ok {
                return Err(format!(
                    "{}: we say line {}, libuci line {line} ({e})",
                    show(),
                    e.line
                ));
            }
            Ok(Some(reason.clone()))
        }
        (theirs, mine, _) => Err(format!("{}: libuci {theirs:?}, ours {mine:?}", show())),
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/uci/corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    // Real configs too: ours as shipped, and the OpenWrt-like ones the package tests use.
    files.push(root.join("etc/provisioner.uci"));
    files.push(root.join("openwrt/files/provisioner.config"));
    // Every router shape's files (tests/openwrt/<shape>/<config>) and the shared ones.
    let mut openwrt = Vec::new();
    for entry in std::fs::read_dir(root.join("tests/openwrt")).expect("tests/openwrt") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            openwrt.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            openwrt.push(path);
        }
    }
    assert!(
        openwrt.len() >= 10,
        "the router shapes went missing: {openwrt:?}"
    );
    openwrt.sort();
    files.extend(openwrt);
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: libuci differential test skipped"
)]
fn corpus_reads_as_libuci_reads_it() {
    let start = Instant::now();
    let mut libuci = Libuci::start("corpus");
    let (mut accepted, mut failures) = (0, Vec::new());
    let files = corpus();
    assert!(files.len() > 40, "corpus went missing");
    for (name, text) in &files {
        // The file name says what the case is about: `err-*` libuci rejects, `nul-*` we
        // reject (a known difference), anything else libuci reads.
        let base = Path::new(name).file_name().unwrap().to_str().unwrap();
        let expect = if base.starts_with("err-") {
            "rejected by libuci"
        } else if base.starts_with("nul-") {
            "NUL byte (ours)"
        } else {
            "accepted"
        };
        match agree(&mut libuci, text) {
            Ok(None) if expect == "accepted" => accepted += 1,
            Ok(Some(r))
                if r == expect || (expect.starts_with("rejected") && !r.contains("ours")) => {}
            Ok(r) => failures.push(format!("{name}: expected {expect}, libuci gave {r:?}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    eprintln!(
        "corpus: {} files, {accepted} accepted by libuci, in {:?}",
        files.len(),
        start.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Both outcomes must be well represented, or the corpus tests little.
    assert!(accepted > 15 && files.len() - accepted > 15, "{accepted}");
}

/// The `uci` command itself (not only the library call the dumper makes) accepts exactly
/// the files we accept, and what `uci export` writes for them reads back the same.
#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: libuci differential test skipped"
)]
fn uci_command_agrees_on_the_corpus() {
    let mut libuci = Libuci::start("cli");
    let uci_bin = kit::bin("uci");
    for (name, text) in corpus() {
        if text.contains(&0) {
            continue;
        }
        libuci.read(&text);
        let out = Command::new(&uci_bin)
            .arg("-c")
            .arg(&libuci.confdir)
            .arg("-t")
            .arg(&libuci.savedir)
            .args(["export", "f"])
            .output()
            .unwrap();
        let mine = uci::load(&text);
        assert_eq!(
            out.status.success(),
            mine.is_ok(),
            "{name}: uci export: {}; ours: {mine:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(p) = mine {
            let again = uci::load(&out.stdout).unwrap_or_else(|e| panic!("{name}: export: {e}"));
            // Export leaves anonymous names out (they are renumbered) and lines change.
            let strip = |p: uci::Package| {
                p.sections
                    .into_iter()
                    .map(|s| {
                        let name = (!s.anonymous).then_some(s.name);
                        let options: Vec<_> = s
                            .options
                            .into_iter()
                            .map(|o| {
                                let v: Vec<Vec<u8>> = match o.value {
                                    Value::Single(i) => vec![i.value],
                                    Value::List(items) => {
                                        items.into_iter().map(|i| i.value).collect()
                                    }
                                };
                                (o.name, v)
                            })
                            .collect();
                        (s.kind, name, options)
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(again), strip(p), "{name}");
        }
    }
}

/// Pieces of UCI text that are hard to get right: quotes, escapes, comments, separators,
/// odd bytes, names that collide with libuci's anonymous names.
fn pick(items: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(items).prop_map(<[u8]>::to_vec)
}

fn concat(parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.concat()
}

/// Inside quotes.
fn content() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        pick(&[
            b"a",
            b"port",
            b" ",
            b"#",
            b";",
            b"\\",
            b"\\\"",
            b"\\\\",
            b"\n",
            b"\r\n",
            b"\\\n",
            b"'",
            b"\"",
            b"\t",
            b"\xff",
            b"\xc3\xa9",
            b"x y",
            b"\x01",
            b"\xef\xbb\xbf",
        ]),
        0..6,
    )
    .prop_map(concat)
}

/// A word: one to three pieces, unquoted, quoted or escaped.
fn word() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => pick(&[
            b"a", b"b", b"x", b"port", b"443", b"8883", b"cfg01b606", b"cfg025c24", b"allow",
            b"a-b", b"a.b", b"t!", b"443#https", b"_", b"A1", b"\xff", b"\xc3\xa9", b"\x01",
        ]),
        2 => content().prop_map(|c| [&b"'"[..], &c, b"'"].concat()),
        2 => content().prop_map(|c| [&b"\""[..], &c, b"\""].concat()),
        1 => pick(&[
            b"\\ ", b"\\#", b"\\;", b"\\'", b"\\\"", b"\\\\", b"\\\n", b"\\\r\n", b"\\n", b"#c",
            b";", b"''", b"\"\"", b"\\",
        ]),
    ];
    proptest::collection::vec(piece, 1..4).prop_map(concat)
}

fn sep() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => Just(b" ".to_vec()),
        4 => Just(b"\t".to_vec()),
        1 => pick(&[b"  ", b" \t", b"\x0b", b"\x0c", b" ; ", b";", b"\\\n", b"\\\n ", b" # c "]),
    ]
}

fn join(kw: Vec<u8>, args: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = kw;
    for (s, w) in args {
        out.extend(s);
        out.extend(w);
    }
    out
}

fn statement() -> impl Strategy<Value = Vec<u8>> {
    let section_type = || {
        prop_oneof![
            4 => pick(&[b"a", b"allow", b"network", b"'allow'", b"\"a\""]),
            1 => pick(&[b"x-y", b"a.b", b"t!", b"a b", b"\xff", b"'a\nb'"]),
        ]
    };
    let section_name = || {
        prop_oneof![
            4 => pick(&[b"a", b"b", b"acme", b"cfg01b606", b"cfg025c24", b"cfg035c24", b"''", b"'a'"]),
            1 => pick(&[b"x-y", b"A1", b"a.b", b"\xef\xbb\xbfa", b"a\\\nb"]),
        ]
    };
    let option_name = || {
        prop_oneof![
            6 => pick(&[b"port", b"x", b"y", b"'port'"]),
            1 => pick(&[b"a-b", b"p\\\nort", b"\"x\"", b"x\x0b"]),
        ]
    };
    let kw = |items: &'static [&'static [u8]]| pick(items);
    prop_oneof![
        6 => (kw(&[b"config", b"config", b"c"]), sep(), section_type(),
              proptest::option::of((sep(), section_name())))
            .prop_map(|(k, s, t, n)| join(k, [(s, t)].into_iter().chain(n).collect())),
        12 => (kw(&[b"option", b"list", b"option", b"list", b"o", b"l"]), sep(), option_name(),
              proptest::option::of((sep(), word())))
            .prop_map(|(k, s, n, v)| join(k, [(s, n)].into_iter().chain(v).collect())),
        1 => (kw(&[b"package", b"p"]), sep(), pick(&[b"provisioner", b"a-b", b"a.b", b""]))
            .prop_map(|(k, s, n)| join(k, vec![(s, n)])),
        1 => (kw(&[b"config", b"option", b"list", b"conf", b"#config", b"\xef\xbb\xbfconfig"]),
              proptest::collection::vec((sep(), word()), 0..4))
            .prop_map(|(k, args)| join(k, args)),
        2 => (Just(b"#".to_vec()), content()).prop_map(|(h, c)| {
            let mut c = [h, c].concat();
            c.retain(|&b| b != b'\n');
            c
        }),
        1 => pick(&[b"", b"  ", b"\t", b"\x0c"]),
    ]
}

/// A file: usually starting with a section, lines of statements (sometimes several joined
/// by `;`), LF or CRLF, the last one possibly without a newline.
fn file() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        statement(),
        proptest::option::weighted(0.1, (pick(&[b";", b"; ", b" ; "]), statement())),
        proptest::option::weighted(0.05, (sep(), word())),
        prop_oneof![
            12 => Just(b"\n".to_vec()),
            3 => pick(&[b"\r\n", b" # end\n", b"\t\n"]),
            1 => pick(&[b"\\\n", b"\\\r\n", b";\n"]),
        ],
    )
        .prop_map(|(s, more, extra, end)| {
            let mut l = s;
            for (a, b) in more.into_iter().chain(extra) {
                l.extend(a);
                l.extend(b);
            }
            l.extend(end);
            l
        });
    (
        proptest::bool::weighted(0.85),
        proptest::collection::vec(line, 0..8),
        any::<bool>(),
    )
        .prop_map(|(head, lines, trim)| {
            let mut f = if head {
                b"config allow 'a'\n".to_vec()
            } else {
                Vec::new()
            };
            for l in lines {
                f.extend(l);
            }
            if trim && f.ends_with(b"\n") {
                f.pop();
            }
            f
        })
}

#[test]
#[cfg_attr(
    not(openwrt_kit),
    ignore = "../shared/openwrt is not here: libuci differential test skipped"
)]
fn generated_files_read_as_libuci_reads_them() {
    let cases: u32 = std::env::var("UCI_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let libuci = RefCell::new(Libuci::start("generated"));
    let reasons = RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let start = Instant::now();
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    // One file in five is raw token soup rather than statements, for what the statement
    // shapes above do not think of.
    let soup = proptest::collection::vec(
        pick(&[
            b"config ",
            b"option ",
            b"list ",
            b"package ",
            b"c ",
            b"o ",
            b"\n",
            b"\r\n",
            b"\\\n",
            b"\\",
            b"'",
            b"\"",
            b"#",
            b";",
            b" ",
            b"\t",
            b"\x0b",
            b"x",
            b"ab_1",
            b"\xff",
            b"\r",
            b"-",
            b"cfg01b606 ",
            b"\xef\xbb\xbf",
        ]),
        0..60,
    )
    .prop_map(concat);
    let result = runner.run(&prop_oneof![4 => file(), 1 => soup], |text| {
        let reason = agree(&mut libuci.borrow_mut(), &text).map_err(TestCaseError::fail)?;
        *reasons
            .borrow_mut()
            .entry(reason.unwrap_or_else(|| "accepted".into()))
            .or_default() += 1;
        Ok(())
    });
    let reasons = reasons.into_inner();
    let total: u32 = reasons.values().sum();
    let accepted = reasons.get("accepted").copied().unwrap_or(0);
    let rejected = total - accepted;
    eprintln!(
        "generated: {total} files compared in {:?}: {reasons:?}",
        start.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // A generator that libuci (almost) always rejects, or always accepts, tests little.
    let total = f64::from(accepted + rejected);
    assert!(
        f64::from(accepted) > 0.25 * total && f64::from(rejected) > 0.1 * total,
        "{accepted} accepted, {rejected} rejected"
    );
}
