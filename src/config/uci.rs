//! A parser for OpenWrt's UCI file format (`/etc/config/<package>`), as libuci reads it:
//!
//! ```text
//! package provisioner            # optional
//! config allow 'acme'            # section: type and optional name
//!     option proto 'tcp'         # scalar
//!     list port '443'            # list element (repeatable)
//! ```
//! Words are unquoted, `'single'` (no escapes) or `"double"` (backslash escapes) and adjacent
//! pieces join (`'a'"b"c` is `abc`); quoted values may span lines; `#` at the start of a word
//! starts a comment; a backslash outside quotes escapes the next character, a backslash before
//! a newline continues the line. Hand-written because it is small; fuzzed in
//! `fuzz/fuzz_targets/uci.rs` and property-tested below.

use super::document::{Document, Section};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct UciError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> UciError {
    UciError {
        line,
        message: message.into(),
    }
}

/// A word and the line it started on.
struct Word {
    text: String,
    line: usize,
}

/// Splits the text into statements (one per logical line), each a list of words.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn new(text: &str) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next statement's words; `None` at end of input. Blank lines are skipped.
    fn statement(&mut self) -> Result<Option<Vec<Word>>, UciError> {
        let mut words = Vec::new();
        while let Some(c) = self.peek(0) {
            match c {
                '\n' => {
                    self.bump();
                    if !words.is_empty() {
                        return Ok(Some(words));
                    }
                }
                ' ' | '\t' | '\r' => {
                    self.bump();
                }
                // A backslash before a newline joins the next line to this statement.
                '\\' if self.peek(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                '#' => {
                    while !matches!(self.peek(0), None | Some('\n')) {
                        self.bump();
                    }
                }
                _ => words.push(self.word()?),
            }
        }
        Ok((!words.is_empty()).then_some(words))
    }

    fn word(&mut self) -> Result<Word, UciError> {
        let line = self.line;
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\r' | '\n' => break,
                '\\' if self.peek(1) == Some('\n') => break,
                '\'' => {
                    self.bump();
                    loop {
                        match self.bump() {
                            Some('\'') => break,
                            Some(c) => text.push(c),
                            None => return Err(err(line, "unterminated ' quote")),
                        }
                    }
                }
                '"' => {
                    self.bump();
                    loop {
                        match self.bump() {
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some(c) => text.push(c),
                                None => return Err(err(line, "unterminated \" quote")),
                            },
                            Some(c) => text.push(c),
                            None => return Err(err(line, "unterminated \" quote")),
                        }
                    }
                }
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some(c) => text.push(c),
                        None => return Err(err(line, "backslash at end of file")),
                    }
                }
                _ => {
                    self.bump();
                    text.push(c);
                }
            }
        }
        Ok(Word { text, line })
    }
}

/// Section types and option names are identifiers in libuci: letters, digits, underscore.
fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Section names additionally allow `-` in practice (libuci accepts them for named sections).
fn is_section_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn parse(text: &str) -> Result<Document, UciError> {
    let mut lexer = Lexer::new(text);
    let mut doc = Document::default();
    let mut current: Option<Section> = None;
    while let Some(words) = lexer.statement()? {
        let line = words[0].line;
        let args: Vec<&str> = words[1..].iter().map(|w| w.text.as_str()).collect();
        match words[0].text.as_str() {
            "package" => {
                if args.len() != 1 {
                    return Err(err(line, "'package' takes one name"));
                }
            }
            "config" => {
                let (kind, name) = match args.as_slice() {
                    [kind] => (*kind, None),
                    [kind, name] => (*kind, Some(*name)),
                    _ => return Err(err(line, "'config' takes a type and an optional name")),
                };
                if !is_ident(kind) {
                    return Err(err(line, format!("invalid section type '{kind}'")));
                }
                if let Some(name) = name {
                    if !is_section_name(name) {
                        return Err(err(
                            line,
                            format!(
                                "invalid section name '{name}' (letters, digits, _ and - only)"
                            ),
                        ));
                    }
                }
                if let Some(done) = current.take() {
                    doc.sections.push(done);
                }
                current = Some(Section::new(kind, name, line));
            }
            kw @ ("option" | "list") => {
                let [name, value] = args.as_slice() else {
                    return Err(err(line, format!("'{kw}' takes a name and one value")));
                };
                if !is_ident(name) {
                    return Err(err(line, format!("invalid option name '{name}'")));
                }
                let Some(section) = current.as_mut() else {
                    return Err(err(line, format!("'{kw} {name}' before any 'config' line")));
                };
                section.push(name, value, line, kw == "list");
            }
            other => {
                return Err(err(
                    line,
                    format!("unknown keyword '{other}' (expected config, option or list)"),
                ));
            }
        }
    }
    if let Some(done) = current.take() {
        doc.sections.push(done);
    }
    Ok(doc)
}

/// Quotes a value the way `uci export` would, so that `parse(render(doc)) == doc`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_sections_options_and_lists() {
        let doc = parse(
            "package provisioner\n\
             \n\
             # a comment\n\
             config network 'network'\n\
             \toption interface 'br-provision'   # trailing comment\n\
             \toption wan wan\n\
             config allow\n\
             \tlist port '443'\n\
             \tlist port \"8883\"\n",
        )
        .unwrap();
        assert_eq!(doc.sections.len(), 2);
        let net = &doc.sections[0];
        assert_eq!(
            (net.kind.as_str(), net.name.as_deref(), net.line),
            ("network", Some("network"), 4)
        );
        assert_eq!(net.entries[0].name, "interface");
        assert_eq!(net.entries[0].value, "br-provision");
        assert_eq!(net.entries[0].line, 5);
        assert!(!net.entries[0].list);
        assert_eq!(net.entries[1].value, "wan");
        let allow = &doc.sections[1];
        assert_eq!(allow.name, None);
        let ports: Vec<_> = allow
            .entries
            .iter()
            .map(|e| (e.value.as_str(), e.list, e.line))
            .collect();
        assert_eq!(ports, [("443", true, 8), ("8883", true, 9)]);
    }

    #[test]
    fn quoting_rules() {
        let doc = parse(
            "config x\n option a 'it'\\''s'\n option b \"say \\\"hi\\\"\"\n option c 'a'\"b\"c\n option d ''\n option e 'multi\nline'\n option f a#b\n",
        )
        .unwrap();
        let v: Vec<_> = doc.sections[0]
            .entries
            .iter()
            .map(|e| (e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            v,
            [
                ("it's", 2),
                ("say \"hi\"", 3),
                ("abc", 4),
                ("", 5),
                ("multi\nline", 6),
                ("a#b", 8)
            ]
        );
    }

    #[test]
    fn continuation_lines() {
        let doc = parse("config x\n option a \\\n   'v'\n option b 'w'\n").unwrap();
        let v: Vec<_> = doc.sections[0]
            .entries
            .iter()
            .map(|e| (e.value.as_str(), e.line))
            .collect();
        assert_eq!(v, [("v", 2), ("w", 4)]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("option a 'b'\n", 1, "before any 'config'"),
            ("config x\n option a\n", 2, "takes a name and one value"),
            (
                "config x\n option a 'b' 'c'\n",
                2,
                "takes a name and one value",
            ),
            ("config x\n\n option a 'b\n", 3, "unterminated ' quote"),
            ("config x\n option a \"b\n", 2, "unterminated \" quote"),
            ("config x y z\n", 1, "takes a type"),
            ("config x-y\n", 1, "invalid section type"),
            ("config x 'a b'\n", 1, "invalid section name"),
            ("config x\n option 'a-b' c\n", 2, "invalid option name"),
            ("config x\n\n\nfoo bar\n", 4, "unknown keyword 'foo'"),
            ("config x\n option a b\\", 2, "backslash at end of file"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(parse("").unwrap(), Document::default());
        assert_eq!(parse("\n\n# x\n   \n").unwrap(), Document::default());
    }

    fn render(doc: &Document) -> String {
        let mut out = String::new();
        for s in &doc.sections {
            out.push_str("config ");
            out.push_str(&s.kind);
            if let Some(n) = &s.name {
                out.push(' ');
                out.push_str(&quote(n));
            }
            out.push('\n');
            for e in &s.entries {
                out.push_str(if e.list { "\tlist " } else { "\toption " });
                out.push_str(&e.name);
                out.push(' ');
                out.push_str(&quote(&e.value));
                out.push('\n');
            }
        }
        out
    }

    proptest! {
        /// Any bytes: an error or a document, never a panic.
        #[test]
        fn never_panics(text in "(?s).{0,400}") {
            let _ = parse(&text);
        }

        /// Whatever `render` writes (values with quotes, #, backslashes, newlines) reads back
        /// the same, apart from line numbers.
        #[test]
        fn round_trips(
            sections in proptest::collection::vec(
                ("[a-z_]{1,8}", proptest::option::of("[a-zA-Z0-9_-]{1,8}"),
                 proptest::collection::vec(("[a-z0-9_]{1,8}", "(?s).{0,20}", any::<bool>()), 0..5)),
                0..4)
        ) {
            let mut doc = Document::default();
            for (kind, name, entries) in &sections {
                let mut s = Section::new(kind, name.as_deref(), 0);
                for (n, v, l) in entries {
                    s.push(n, v, 0, *l);
                }
                doc.sections.push(s);
            }
            let mut back = parse(&render(&doc)).unwrap();
            for s in &mut back.sections {
                s.line = 0;
                for e in &mut s.entries { e.line = 0; }
            }
            prop_assert_eq!(back, doc);
        }
    }
}
