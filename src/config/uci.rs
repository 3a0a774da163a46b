//! OpenWrt's UCI file format (`/etc/config/<package>`), read exactly as libuci reads it
//! (`uci_load`, which `uci show`, `uci export`, procd, LuCI and `reload_config` go through):
//!
//! ```text
//! package provisioner            # optional, ignored (the file name is the package)
//! config allow 'acme'            # section: type and optional name
//!     option proto 'tcp'         # single value
//!     list port '443'            # list item
//! ```
//!
//! Whatever libuci accepts must mean the same here, or the daemon would enforce something
//! `uci show` does not display; whatever it rejects must be rejected, or `reload_config`,
//! the init script's triggers and LuCI would silently work on nothing. So the lexer below is
//! a port of libuci's `file.c` (`uci_parse_line`, `next_arg`, `parse_str`, the quote and
//! backslash helpers), on the same in-place line buffer, because several of its rules only
//! exist as side effects of that buffer:
//!
//! - one physical line at a time; a quote or a backslash at the end of a line pulls in the
//!   next one. A newline inside quotes is part of the value (CRLF files keep the `\r`);
//!   backslash-newline (or backslash-CRLF) joins lines with nothing in between, and a word
//!   ends there if the next line starts with whitespace (so `a\` + ` b` is two words);
//! - `'...'` is literal, `"..."` and unquoted text take `\x` as `x`; adjacent pieces join;
//! - `#` outside quotes ends the line, also inside a word (`443#https` is `443`); inside
//!   quotes it is text. Comments may hold any bytes;
//! - whitespace is C's `isspace` (so `\v`, `\f` and a CRLF's `\r` separate words); a UTF-8
//!   byte-order mark is no whitespace, so a file starting with one is an invalid command;
//! - the keyword is split off at a space or tab only (`config\n` is an invalid command) and
//!   may be abbreviated to its first letter (`c`, `o`, `l`, `p`);
//! - `;` ends a command, but if it directly follows an unquoted word libuci overwrites it
//!   with that word's terminator and ignores the rest of the line (`list port 443; list
//!   port 8883` is port 443 only, in uci and here);
//! - strict mode, as `uci_alloc_context` sets it: any error rejects the whole file.
//!
//! On top of the lexer, the merge rules of `uci_set`/`uci_add_list`
//! ([`Package`] is the result): a later `option` replaces the earlier value or list in
//! place; a `list` after an `option` turns it into a list and appends; an empty value
//! (`option x ''` or a bare `option x`) changes nothing, neither deleting nor creating; a
//! second `config TYPE NAME` reopens the section (a different type is an error); anonymous
//! sections get libuci's `cfgNNHHHH` names, which a later `config TYPE cfgNNHHHH` reopens.
//!
//! Two deliberate differences, both rejections of files libuci reads: a NUL byte (libuci's
//! `fgets`/`strlen` then drops text up to its buffer's next boundary and joins lines, so
//! what it reads depends on its buffer sizes), and, in [`parse`] only, values that are not
//! UTF-8 (our config is text; [`load`] still returns them byte for byte).
//! Differential test against the real libuci: `tests/uci_libuci.rs`.

use super::document::{self, Document};

/// What libuci calls the problem; [`UciErrorKind::libuci_reason`] is its exact text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UciErrorKind {
    /// `package`/`config`/`option` as the last word of the file.
    WithoutName(&'static str),
    InsufficientArguments,
    InvalidName,
    InvalidType,
    TooManyArguments,
    UnterminatedDouble,
    UnterminatedSingle,
    TypeConflict,
    OptionBeforeSection,
    InvalidCommand,
    /// Ours: libuci has no error for it (see the module docs).
    NulByte,
    /// Ours, from [`parse`]: a value libuci accepts but our text-only config cannot hold.
    NotUtf8,
}

impl UciErrorKind {
    /// libuci's `reason` for the same error, as `uci` prints it (`Parse error (REASON) at
    /// line N, byte M`); `None` for the errors libuci does not have.
    pub fn libuci_reason(self) -> Option<&'static str> {
        Some(match self {
            UciErrorKind::WithoutName("package") => "package without name",
            UciErrorKind::WithoutName("config") => "config without name",
            UciErrorKind::WithoutName(_) => "option without name",
            UciErrorKind::InsufficientArguments => "insufficient arguments",
            UciErrorKind::InvalidName => "invalid character in name field",
            UciErrorKind::InvalidType => "invalid character in type field",
            UciErrorKind::TooManyArguments => "too many arguments",
            UciErrorKind::UnterminatedDouble => "EOF with unterminated \"",
            UciErrorKind::UnterminatedSingle => "EOF with unterminated '",
            UciErrorKind::TypeConflict => {
                "section of different type overwrites prior section with same name"
            }
            UciErrorKind::OptionBeforeSection => {
                "option/list command found before the first section"
            }
            UciErrorKind::InvalidCommand => "invalid command",
            UciErrorKind::NulByte | UciErrorKind::NotUtf8 => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}{message}", .option.as_ref().map(|o| format!("option '{o}': ")).unwrap_or_default())]
pub struct UciError {
    pub kind: UciErrorKind,
    /// Where to look: the line the problem is on; for an unterminated quote, the line the
    /// quote opened on.
    pub line: usize,
    /// The line libuci reports for the same error: the newlines it had read, so one less
    /// than `line` on a last line without a newline, and the end of the file for an
    /// unterminated quote (`line` for the errors libuci does not have). Kept for the
    /// differential test.
    pub uci_line: usize,
    /// The option the statement was about, once its name was read.
    pub option: Option<String>,
    pub message: String,
}

/// A config as libuci holds it after `uci_load`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    pub sections: Vec<UciSection>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UciSection {
    /// Printable ASCII (libuci's `uci_validate_type`).
    pub kind: String,
    /// libuci's name: the given one, or `cfgNNHHHH` for an anonymous section (what
    /// `uci show -X` prints and what a later `config TYPE NAME` can reopen).
    pub name: String,
    pub anonymous: bool,
    /// The first `config` line for it.
    pub line: usize,
    /// In libuci's order: where each name first appeared.
    pub options: Vec<UciOption>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UciOption {
    /// Letters, digits and `_`.
    pub name: String,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Single(Item),
    List(Vec<Item>),
}

/// A value as libuci stores it (any bytes but NUL) and the line of the statement that gave
/// it, so that a merged or replaced value's errors point where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub line: usize,
}

/// `s` with invisible characters made visible: control and format characters (a BOM, a
/// zero-width space) as Rust escapes, bytes that are not UTF-8 as `\xNN`. Quotes and
/// backslashes stay as they are, so ordinary values read as written.
pub fn visible(s: &[u8]) -> String {
    let mut out = String::new();
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            if matches!(c, '\'' | '"' | '\\') {
                out.push(c);
            } else {
                out.extend(c.escape_debug());
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reads a config file as libuci's `uci_load` would.
pub fn load(text: &[u8]) -> Result<Package, UciError> {
    if let Some(at) = text.iter().position(|&b| b == 0) {
        let line = text[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(UciError {
            kind: UciErrorKind::NulByte,
            line,
            uci_line: line,
            option: None,
            message: "a NUL byte (\\x00): libuci would silently drop text after it and join \
                      lines, so what uci shows is not what the file says; remove it"
                .into(),
        });
    }
    let mut lx = Lexer::new(text);
    // uci_import: one physical line at a time until the input is used up.
    while lx.at < lx.input.len() {
        lx.pos = 0;
        lx.getln(0);
        if lx.ch(0) != 0 {
            lx.parse_line()?;
        }
    }
    Ok(lx.package)
}

/// Reads a config file into the format-neutral [`Document`]: libuci's view, with anonymous
/// sections unnamed (the schema calls them `@type[i]`, as `uci show` does). A value that is
/// not UTF-8 is an error naming its line and option.
pub fn parse(text: &[u8]) -> Result<Document, UciError> {
    let package = load(text)?;
    let mut doc = Document::default();
    for s in package.sections {
        let name = (!s.anonymous).then_some(s.name.as_str());
        let mut section = document::Section::new(&s.kind, name, s.line);
        for o in &s.options {
            let (items, list) = match &o.value {
                Value::Single(item) => (std::slice::from_ref(item), false),
                Value::List(items) => (items.as_slice(), true),
            };
            for item in items {
                let value = std::str::from_utf8(&item.value).map_err(|_| UciError {
                    kind: UciErrorKind::NotUtf8,
                    line: item.line,
                    uci_line: item.line,
                    option: Some(o.name.clone()),
                    message: format!(
                        "'{}' is not UTF-8 text (uci accepts any bytes, provisioner reads text)",
                        visible(&item.value)
                    ),
                })?;
                section.push(&o.name, value, item.line, list);
            }
        }
        doc.sections.push(section);
    }
    Ok(doc)
}

/// Quotes a value the way `uci export` does, so that `parse(render(doc)) == doc`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// C's `isspace` in the C locale (which includes `\v`, unlike `u8::is_ascii_whitespace`).
fn isspace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// `uci_validate_str`: names are letters, digits and `_` (and `-` for a package); types
/// any printable ASCII but space.
fn validate(s: &[u8], name: bool, package: bool) -> bool {
    !s.is_empty()
        && s.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || c == b'_'
                || (c == b'-' && package)
                || (!name && (33..=126).contains(&c))
        })
}

/// The argument `next_arg` is reading, for error messages.
#[derive(Clone, Copy)]
enum Arg<'a> {
    Package,
    Type,
    SectionName,
    OptionName(&'a str),
    Value,
}

/// The statement `assert_eol` finishes, for its message.
#[derive(Clone, Copy)]
enum Stmt<'a> {
    Package,
    Config,
    Option(&'a str),
}

/// libuci's parse context: the line buffer (`pctx->buf`, with the NULs its parser writes
/// into it), the read position in it and the file.
struct Lexer<'a> {
    input: &'a [u8],
    /// Next unread byte of `input` (the FILE position).
    at: usize,
    /// The buffer up to its terminating NUL; reading past the end gives 0, as in C.
    buf: Vec<u8>,
    /// `pctx->buf_filled`: the length after the last line read (not updated at EOF).
    filled: usize,
    pos: usize,
    /// Physical lines read, and of those the ones ended by a newline (`pctx->line`).
    lines: usize,
    newlines: usize,
    /// Line of the current statement's keyword.
    stmt_line: usize,
    package: Package,
    /// Index of the section `option`/`list` go to.
    current: Option<usize>,
    /// `package->n_section`: sections created so far (part of anonymous names).
    n_section: usize,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lexer {
            input,
            at: 0,
            buf: Vec::new(),
            filled: 0,
            pos: 0,
            lines: 0,
            newlines: 0,
            stmt_line: 0,
            package: Package::default(),
            current: None,
            n_section: 0,
        }
    }

    fn ch(&self, i: usize) -> u8 {
        self.buf.get(i).copied().unwrap_or(0)
    }

    fn cur(&self) -> u8 {
        self.ch(self.pos)
    }

    /// Writes a NUL the way the C code does (at the terminator it is a no-op).
    fn terminate(&mut self, i: usize) {
        if let Some(b) = self.buf.get_mut(i) {
            *b = 0;
        }
    }

    /// The C string at `i`.
    fn cstr(&self, i: usize) -> &[u8] {
        let rest = self.buf.get(i..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn error(&self, kind: UciErrorKind, message: String) -> UciError {
        UciError {
            kind,
            line: self.lines.max(1),
            uci_line: self.newlines,
            option: None,
            message,
        }
    }

    /// `uci_getln`: the next physical line replaces the buffer from `offset` on.
    fn getln(&mut self, offset: usize) {
        self.buf.truncate(offset);
        let rest = &self.input[self.at..];
        if rest.is_empty() {
            return;
        }
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.buf.extend_from_slice(&rest[..n]);
        self.at += n;
        self.filled = self.buf.len();
        self.lines += 1;
        if rest[n - 1] == b'\n' {
            self.newlines += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while self.cur() != 0 && isspace(self.cur()) {
            self.pos += 1;
        }
    }

    fn addc(&mut self, target: &mut usize) {
        self.buf[*target] = self.buf[self.pos];
        *target += 1;
        self.pos += 1;
    }

    /// `parse_backslash`: false if it was a line continuation (the next line is read in).
    fn parse_backslash(&mut self) -> bool {
        self.pos += 1;
        let c = self.cur();
        if c == 0
            || c == b'\n'
            || (c == b'\r' && self.ch(self.pos + 1) == b'\n' && self.ch(self.pos + 2) == 0)
        {
            self.getln(self.pos);
            return false;
        }
        true
    }

    fn parse_quoted(&mut self, target: &mut usize, quote: u8) -> Result<(), UciError> {
        let opened = self.lines;
        self.pos += 1;
        loop {
            match self.cur() {
                c if c == quote => {
                    self.pos += 1;
                    return Ok(());
                }
                0 => {
                    self.getln(self.pos);
                    if self.cur() == 0 {
                        let (kind, q) = if quote == b'"' {
                            (UciErrorKind::UnterminatedDouble, "\"")
                        } else {
                            (UciErrorKind::UnterminatedSingle, "'")
                        };
                        let mut e = self.error(
                            kind,
                            format!("unterminated {q} quote (it opens here and the file ends before it closes)"),
                        );
                        e.line = opened;
                        return Err(e);
                    }
                }
                b'\\' if quote == b'"' => {
                    if self.parse_backslash() {
                        self.addc(target);
                    }
                }
                _ => self.addc(target),
            }
        }
    }

    /// `parse_str`: one word, unquoting in place from `target` on.
    fn parse_str(&mut self, target: &mut usize) -> Result<(), UciError> {
        let mut next = true;
        loop {
            match self.cur() {
                b'\'' => self.parse_quoted(target, b'\'')?,
                b'"' => self.parse_quoted(target, b'"')?,
                b'#' => {
                    self.terminate(self.pos);
                    break;
                }
                0 => break,
                b';' => {
                    next = false;
                    break;
                }
                b'\\' => {
                    if self.parse_backslash() {
                        self.addc(target);
                    }
                }
                _ => self.addc(target),
            }
            let c = self.cur();
            if c == 0 || isspace(c) {
                break;
            }
        }
        if self.cur() != 0 && next {
            self.pos += 1;
        }
        // When an unquoted word ends at `;`, this NUL lands on the `;` itself.
        self.terminate(*target);
        Ok(())
    }

    /// `next_arg`: the offset of the next argument (empty at the end of the command).
    fn next_arg(&mut self, required: bool, arg: Arg<'_>) -> Result<usize, UciError> {
        self.skip_whitespace();
        let val = self.pos;
        if self.cur() == b';' {
            self.terminate(self.pos);
            self.pos += 1;
        } else {
            let mut target = val;
            self.parse_str(&mut target)?;
        }
        if self.ch(val) == 0 {
            if required {
                let message = match arg {
                    Arg::Package => "'package' takes a name".into(),
                    Arg::OptionName(kw) => format!("'{kw}' takes a name and a value"),
                    _ => "'config' takes a type and an optional name".into(),
                };
                return Err(self.error(UciErrorKind::InsufficientArguments, message));
            }
            return Ok(val);
        }
        let (name, package) = match arg {
            Arg::Package => (true, true),
            Arg::SectionName | Arg::OptionName(_) => (true, false),
            _ => (false, false),
        };
        if name && !validate(self.cstr(val), true, package) {
            let what = match arg {
                Arg::Package => "package name",
                Arg::SectionName => "section name",
                _ => "option name",
            };
            let allowed = if package { ", _ and -" } else { " and _" };
            let message = format!(
                "invalid {what} '{}' (letters, digits{allowed} only)",
                visible(self.cstr(val))
            );
            return Err(self.error(UciErrorKind::InvalidName, message));
        }
        Ok(val)
    }

    /// `assert_eol`: strict mode rejects anything after the last argument.
    fn assert_eol(&mut self, stmt: Stmt<'_>) -> Result<(), UciError> {
        self.skip_whitespace();
        let extra = self.next_arg(false, Arg::Value)?;
        if self.ch(extra) != 0 {
            let extra = visible(self.cstr(extra));
            let mut e = self.error(UciErrorKind::TooManyArguments, String::new());
            e.message = match stmt {
                Stmt::Package => format!("'package' takes one name; '{extra}' is extra"),
                Stmt::Option(name) => {
                    e.option = Some(name.to_owned());
                    format!(
                        "takes one value ('{extra}' is extra; uci rejects the whole file): a list is one 'list' line per item"
                    )
                }
                Stmt::Config => format!(
                    "'config' takes a type and an optional name; '{extra}' is extra (uci rejects the whole file)"
                ),
            };
            return Err(e);
        }
        Ok(())
    }

    /// `uci_parse_line`: the commands of one line (several if `;` separates them).
    fn parse_line(&mut self) -> Result<(), UciError> {
        self.skip_whitespace();
        loop {
            // strtok(cur_str, " \t")
            let mut start = self.pos;
            while matches!(self.ch(start), b' ' | b'\t') {
                start += 1;
            }
            if self.ch(start) == 0 {
                return Ok(());
            }
            let mut end = start;
            while !matches!(self.ch(end), 0 | b' ' | b'\t') {
                end += 1;
            }
            self.terminate(end);
            self.stmt_line = self.lines;
            let word = self.buf[start..end].to_vec();
            match word.as_slice() {
                [b'#', ..] => return Ok(()),
                b"p" | b"package" => self.parse_package()?,
                b"c" | b"config" => self.parse_config()?,
                b"o" | b"option" => self.parse_option(false)?,
                b"l" | b"list" => self.parse_option(true)?,
                _ => return Err(self.invalid_command(&word)),
            }
        }
    }

    fn invalid_command(&self, word: &[u8]) -> UciError {
        let trimmed = word.trim_ascii_end();
        let message = if word.starts_with("\u{feff}".as_bytes()) {
            let place = if self.lines == 1 {
                "the file starts with"
            } else {
                "this line starts with"
            };
            format!(
                "{place} a byte-order mark (\\u{{feff}}), which uci cannot read: save the file without one"
            )
        } else if matches!(trimmed, b"config" | b"option" | b"list" | b"package") {
            // strtok splits the keyword off at a space or tab only, so alone on its line
            // it keeps the newline and is no keyword.
            format!(
                "'{}' needs its arguments on the same line",
                visible(trimmed)
            )
        } else {
            format!(
                "unknown keyword '{}' (expected config, option, list or package)",
                visible(word)
            )
        };
        self.error(UciErrorKind::InvalidCommand, message)
    }

    /// Steps over the keyword and the NUL strtok put after it.
    fn skip_keyword(&mut self, kw: &'static str) -> Result<(), UciError> {
        let add = self.cstr(self.pos).len() + 1;
        if self.pos + add > self.filled {
            let message = match kw {
                "package" => "'package' takes a name".to_owned(),
                "config" => "'config' takes a type and an optional name".to_owned(),
                kw => format!("'{kw}' takes a name and a value"),
            };
            return Err(self.error(UciErrorKind::WithoutName(kw), message));
        }
        self.pos += add;
        Ok(())
    }

    /// `package NAME`: checked and ignored, as `uci_load` does (it reads one package, named
    /// after the file).
    fn parse_package(&mut self) -> Result<(), UciError> {
        self.skip_keyword("package")?;
        self.next_arg(true, Arg::Package)?;
        self.assert_eol(Stmt::Package)
    }

    fn parse_config(&mut self) -> Result<(), UciError> {
        self.skip_keyword("config")?;
        let ofs_type = self.next_arg(true, Arg::Type)?;
        if !validate(self.cstr(ofs_type), false, false) {
            let message = format!(
                "invalid section type '{}' (printable ASCII without spaces)",
                visible(self.cstr(ofs_type))
            );
            return Err(self.error(UciErrorKind::InvalidType, message));
        }
        let ofs_name = self.next_arg(false, Arg::SectionName)?;
        self.assert_eol(Stmt::Config)?;
        let kind = String::from_utf8(self.cstr(ofs_type).to_vec()).expect("validated ASCII");
        let name = String::from_utf8(self.cstr(ofs_name).to_vec()).expect("validated ASCII");
        let line = self.stmt_line;
        let sections = &mut self.package.sections;
        if name.is_empty() {
            // uci_add_section names it from the section count and a hash of the type.
            self.n_section += 1;
            let name = format!("cfg{:02x}{:04x}", self.n_section, djbhash(&kind) & 0xffff);
            sections.push(UciSection {
                kind,
                name,
                anonymous: true,
                line,
                options: Vec::new(),
            });
            self.current = Some(sections.len() - 1);
        } else if let Some(i) = sections.iter().position(|s| s.name == name) {
            let first = &sections[i];
            if first.kind != kind {
                let message = format!(
                    "section '{name}' is a '{}' (line {}); uci rejects the whole file when a section of the same name has another type ('{kind}')",
                    first.kind, first.line
                );
                return Err(self.error(UciErrorKind::TypeConflict, message));
            }
            self.current = Some(i);
        } else {
            self.n_section += 1;
            sections.push(UciSection {
                kind,
                name,
                anonymous: false,
                line,
                options: Vec::new(),
            });
            self.current = Some(sections.len() - 1);
        }
        Ok(())
    }

    fn parse_option(&mut self, list: bool) -> Result<(), UciError> {
        let kw = if list { "list" } else { "option" };
        let Some(current) = self.current else {
            return Err(self.error(
                UciErrorKind::OptionBeforeSection,
                format!("'{kw}' before any 'config' line"),
            ));
        };
        self.skip_keyword(kw)?;
        let ofs_name = self.next_arg(true, Arg::OptionName(kw))?;
        let name = String::from_utf8(self.cstr(ofs_name).to_vec()).expect("validated ASCII");
        let with_option = |mut e: UciError| {
            e.option = Some(name.clone());
            e
        };
        let ofs_value = self.next_arg(false, Arg::Value).map_err(with_option)?;
        self.assert_eol(Stmt::Option(&name))?;
        let item = Item {
            value: self.cstr(ofs_value).to_vec(),
            line: self.stmt_line,
        };
        let options = &mut self.package.sections[current].options;
        let found = options.iter_mut().find(|o| o.name == name);
        match (found, list) {
            // uci_set with an empty value and no completed lookup: nothing happens.
            (_, false) if item.value.is_empty() => {}
            (Some(o), false) => o.value = Value::Single(item),
            (Some(o), true) => match &mut o.value {
                Value::List(items) => items.push(item),
                Value::Single(old) => o.value = Value::List(vec![old.clone(), item]),
            },
            (None, false) => options.push(UciOption {
                name,
                value: Value::Single(item),
            }),
            (None, true) => options.push(UciOption {
                name,
                value: Value::List(vec![item]),
            }),
        }
        Ok(())
    }
}

/// libuci's `djbhash` of a section type (printable ASCII, so C's signed `char` does not
/// matter).
fn djbhash(s: &str) -> u32 {
    s.bytes().fold(5381u32, |h, b| {
        h.wrapping_mul(33).wrapping_add(u32::from(b))
    }) & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(text: &str) -> Document {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &[u8]) -> UciError {
        match parse(text) {
            Ok(d) => panic!("{:?} parsed: {d:?}", String::from_utf8_lossy(text)),
            Err(e) => e,
        }
    }

    /// (name, value, line, list) of the first section.
    fn entries(d: &Document, i: usize) -> Vec<(&str, &str, usize, bool)> {
        d.sections[i]
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str(), e.line, e.list))
            .collect()
    }

    #[test]
    fn parses_sections_options_and_lists() {
        let d = doc("package provisioner\n\
             \n\
             # a comment\n\
             config network 'network'\n\
             \toption interface 'br-provision'   # trailing comment\n\
             \toption wan wan\n\
             config allow\n\
             \tlist port '443'\n\
             \tlist port \"8883\"\n");
        assert_eq!(d.sections.len(), 2);
        let net = &d.sections[0];
        assert_eq!(
            (net.kind.as_str(), net.name.as_deref(), net.line),
            ("network", Some("network"), 4)
        );
        assert_eq!(
            entries(&d, 0),
            [
                ("interface", "br-provision", 5, false),
                ("wan", "wan", 6, false)
            ]
        );
        assert_eq!(d.sections[1].name, None);
        assert_eq!(
            entries(&d, 1),
            [("port", "443", 8, true), ("port", "8883", 9, true)]
        );
    }

    #[test]
    fn quoting_rules() {
        let d = doc(concat!(
            "config x\n",
            " option a 'it'\\''s'\n",
            " option b \"say \\\"hi\\\" \\n\"\n",
            " option c 'a'\"b\"c\n",
            " option e 'multi\nline'\n",
            " option f a\\ b\\#c\n",
            " option g '#not a comment' # but this is\n",
            " option h \"\\\\\"\n",
        ));
        let v: Vec<_> = entries(&d, 0).iter().map(|e| (e.1, e.2)).collect();
        assert_eq!(
            v,
            [
                ("it's", 2),
                ("say \"hi\" n", 3),
                ("abc", 4),
                ("multi\nline", 5),
                ("a b#c", 7),
                ("#not a comment", 8),
                ("\\", 9)
            ]
        );
    }

    /// libuci starts a comment at any unquoted `#`, also inside a word.
    #[test]
    fn hash_starts_a_comment_anywhere_unquoted() {
        let d = doc("config allow\n list port 443#https\n list port '80'#x\n option a b#c d\n");
        assert_eq!(
            entries(&d, 0),
            [
                ("port", "443", 2, true),
                ("port", "80", 3, true),
                ("a", "b", 4, false)
            ]
        );
    }

    /// libuci's merge rules: the file means what `uci show` shows.
    #[test]
    fn later_statements_replace_or_append_as_in_libuci() {
        let d = doc(concat!(
            "config allow 'a'\n",
            " option port '443'\n",
            " option port '8883'\n", // replaces
            " list domain 'x'\n",
            " list domain 'y'\n",
            " option domain 'z'\n", // replaces the list
            " option proto tcp\n",
            " list proto udp\n",  // appends: [tcp, udp]
            " option proto ''\n", // changes nothing
            " option gone\n",     // creates nothing
        ));
        assert_eq!(
            entries(&d, 0),
            [
                ("port", "8883", 3, false),
                ("domain", "z", 6, false),
                ("proto", "tcp", 7, true),
                ("proto", "udp", 8, true),
            ]
        );
    }

    #[test]
    fn sections_of_one_name_merge_and_keep_their_lines() {
        let d = doc(concat!(
            "config allow 'a'\n",
            " list port 1\n",
            " option proto tcp\n",
            "config allow 'b'\n",
            " list port 2\n",
            "config allow 'a'\n",
            " list port 3\n",
            " option proto udp\n",
            " option extra x\n",
        ));
        assert_eq!(d.sections.len(), 2);
        assert_eq!(d.sections[0].line, 1);
        assert_eq!(
            entries(&d, 0),
            [
                ("port", "1", 2, true),
                ("port", "3", 7, true),
                ("proto", "udp", 8, false),
                ("extra", "x", 9, false)
            ]
        );
        let e = err(b"config allow 'a'\nconfig network 'a'\n");
        assert_eq!((e.kind, e.line), (UciErrorKind::TypeConflict, 2), "{e}");
        assert!(e.message.contains("line 1"), "{e}");
    }

    /// libuci names anonymous sections `cfg` + section count + hash of the type, and a
    /// later `config TYPE NAME` with that name reopens them. (Names as libuci gave them.)
    #[test]
    fn anonymous_sections_have_libucis_names() {
        let p = load(b"config a\nconfig allow 'x'\nconfig allow\n").unwrap();
        let names: Vec<_> = p
            .sections
            .iter()
            .map(|s| (s.name.as_str(), s.anonymous))
            .collect();
        assert_eq!(
            names,
            [("cfg01b606", true), ("x", false), ("cfg035c24", true)]
        );
        let p = load(b"config a\n option x 1\nconfig a cfg01b606\n option y 2\n").unwrap();
        assert_eq!(p.sections.len(), 1);
        assert!(p.sections[0].anonymous);
        assert_eq!(p.sections[0].options.len(), 2);
    }

    #[test]
    fn continuation_lines() {
        // Inside a word (and inside double quotes) backslash-newline joins the lines.
        let d = doc("config x\n option a 'v'\\\nw\n option b \"p\\\nq\"\n option c 'w'\n");
        assert_eq!(
            entries(&d, 0),
            [
                ("a", "vw", 2, false),
                ("b", "pq", 4, false),
                ("c", "w", 6, false)
            ]
        );
        // Between words it ends the word: the next line's word is one too many.
        let e = err(b"config x\n option a \\\n   'v'\n");
        assert_eq!((e.kind, e.line), (UciErrorKind::TooManyArguments, 3), "{e}");
        assert_eq!(e.option.as_deref(), Some("a"));
        // A backslash at the very end of the file is dropped.
        assert_eq!(
            entries(&doc("config x\n option a b\\"), 0),
            [("a", "b", 2, false)]
        );
    }

    #[test]
    fn crlf_files() {
        let d =
            doc("config x 'n'\r\n\toption a 'b'\r\n\toption c 'd\r\ne'\r\n\toption f g\\\r\nh\r\n");
        assert_eq!(
            entries(&d, 0),
            [
                ("a", "b", 2, false),
                ("c", "d\r\ne", 3, false),
                ("f", "gh", 5, false)
            ]
        );
    }

    /// `;` separates commands, except after an unquoted word, where libuci drops the rest.
    #[test]
    fn semicolons_as_libuci_sees_them() {
        let d = doc("config x\n list p 1; list p 2\n list p '3'; list p 4\n");
        assert_eq!(
            entries(&d, 0),
            [
                ("p", "1", 2, true),
                ("p", "3", 3, true),
                ("p", "4", 3, true)
            ]
        );
        assert_eq!(err(b"config x 'y';\n").kind, UciErrorKind::InvalidCommand);
    }

    #[test]
    fn abbreviated_keywords_and_package() {
        let d = doc("p provisioner\nc network\n o interface a\n l protect b\npackage other\n");
        assert_eq!(
            entries(&d, 0),
            [("interface", "a", 3, false), ("protect", "b", 4, true)]
        );
    }

    #[test]
    fn comments_may_hold_any_bytes_values_must_be_utf8() {
        let d = parse(b"# caf\xe9\nconfig x # \xff\xfe\n option a b # \x01\n").unwrap();
        assert_eq!(entries(&d, 0), [("a", "b", 3, false)]);
        let e = err(b"config x\n option a 'caf\xe9'\n");
        assert_eq!(
            (e.kind, e.line, e.option.as_deref()),
            (UciErrorKind::NotUtf8, 2, Some("a"))
        );
        assert!(e.message.contains("'caf\\xe9'"), "{e}");
        // load keeps the bytes; a later value replacing it is fine.
        let p = load(b"config x\n option a '\xff'\n").unwrap();
        assert_eq!(
            p.sections[0].options[0].value,
            Value::Single(Item {
                value: vec![0xff],
                line: 2
            })
        );
        assert_eq!(
            entries(&doc("config x\n option a '\u{e9}'\n"), 0),
            [("a", "\u{e9}", 2, false)]
        );
        assert!(parse(b"config x\n option a '\xff'\n option a ok\n").is_ok());
    }

    #[test]
    fn errors_name_the_line_and_escape_invisible_characters() {
        use UciErrorKind::*;
        let cases: &[(&[u8], usize, UciErrorKind, &str)] = &[
            (
                b"option a 'b'\n",
                1,
                OptionBeforeSection,
                "before any 'config'",
            ),
            (
                b"config x\n option 'a-b' c\n",
                2,
                InvalidName,
                "invalid option name 'a-b'",
            ),
            (
                b"config x\n option a 'b' 'c'\n",
                2,
                TooManyArguments,
                "takes one value",
            ),
            (
                b"config x\n\n option a 'b\n\n",
                3,
                UnterminatedSingle,
                "unterminated ' quote",
            ),
            (
                b"config x\n option a \"b\n",
                2,
                UnterminatedDouble,
                "unterminated \" quote",
            ),
            (b"config x y z\n", 1, TooManyArguments, "'z' is extra"),
            (
                b"config x 'a b'\n",
                1,
                InvalidName,
                "invalid section name 'a b'",
            ),
            (
                b"config x a-b\n",
                1,
                InvalidName,
                "invalid section name 'a-b'",
            ),
            (
                b"config 'a b'\n",
                1,
                InvalidType,
                "invalid section type 'a b'",
            ),
            (
                b"config x\n\n\nfoo bar\n",
                4,
                InvalidCommand,
                "unknown keyword 'foo'",
            ),
            (
                b"config x\n option\n",
                2,
                InvalidCommand,
                "'option' needs its arguments",
            ),
            (
                b"config x\noption",
                2,
                WithoutName("option"),
                "takes a name and a value",
            ),
            (b"config \n", 1, InsufficientArguments, "takes a type"),
            (
                b"package a.b\n",
                1,
                InvalidName,
                "invalid package name 'a.b'",
            ),
            (
                b"\xef\xbb\xbfconfig x\n",
                1,
                InvalidCommand,
                "byte-order mark (\\u{feff})",
            ),
            (b"config x y\x01\n", 1, InvalidName, "'y\\u{1}'"),
            (
                b"config x\n option a\x7fb c\n",
                2,
                InvalidName,
                "'a\\u{7f}b'",
            ),
            (b"config x\n option a b\0\n", 2, NulByte, "NUL byte"),
        ];
        for &(text, line, kind, needle) in cases {
            let e = err(text);
            let shown = String::from_utf8_lossy(text);
            assert_eq!((e.kind, e.line), (kind, line), "{shown:?}: {e}");
            assert!(e.message.contains(needle), "{shown:?}: {e}");
            assert!(
                !e.to_string().contains(['\u{feff}', '\u{1}', '\u{b}']),
                "{e}"
            );
        }
        // libuci counts only lines ended by a newline.
        let e = err(b"config x\nconfig a b c");
        assert_eq!((e.line, e.uci_line), (2, 1));
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(parse(b"").unwrap(), Document::default());
        assert_eq!(parse(b"\n\n# x\n   \n\x0c\n").unwrap(), Document::default());
    }

    #[test]
    fn visible_escapes_only_the_invisible() {
        assert_eq!(visible("a 'b' \\ é".as_bytes()), "a 'b' \\ é");
        assert_eq!(
            visible(b"\xef\xbb\xbfx\x01\t\n\xff"),
            "\\u{feff}x\\u{1}\\t\\n\\xff"
        );
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

    /// Text built from UCI's own pieces, to reach deep into the lexer.
    fn uci_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"config "[..]),
            Just(&b"option "[..]),
            Just(&b"list "[..]),
            Just(&b"package "[..]),
            Just(&b"c "[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\\\n"[..]),
            Just(&b"\\"[..]),
            Just(&b"'"[..]),
            Just(&b"\""[..]),
            Just(&b"#"[..]),
            Just(&b";"[..]),
            Just(&b" "[..]),
            Just(&b"\t"[..]),
            Just(&b"\x0b"[..]),
            Just(&b"x"[..]),
            Just(&b"ab_1"[..]),
            Just(&b"\xff"[..]),
            Just(&b"\0"[..]),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any bytes: an error or a document, never a panic.
        #[test]
        fn never_panics(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_uci_like_text(text in uci_soup()) {
            let _ = parse(&text);
        }

        /// What `render` writes (values with quotes, #, ;, backslashes, newlines, any
        /// character but NUL) reads back the same, apart from line numbers. Generated in the
        /// form libuci keeps: section names and option names unique, no empty single
        /// value (`option x ''` means nothing to libuci).
        #[test]
        fn round_trips(
            sections in proptest::collection::vec(
                ("[a-z_]{1,8}", proptest::option::of("[a-zA-Z0-9_]{1,8}"),
                 proptest::collection::vec(("[a-z0-9_]{1,8}", "[^\0]{1,20}",
                     proptest::collection::vec("[^\0]{0,10}", 0..3), any::<bool>()), 0..5)),
                0..4)
        ) {
            let mut doc = Document::default();
            let mut section_names = std::collections::HashSet::new();
            for (kind, name, entries) in &sections {
                let name = name.as_deref().filter(|n| section_names.insert(n.to_string()));
                let mut s = document::Section::new(kind, name, 0);
                let mut option_names = std::collections::HashSet::new();
                for (n, v, items, list) in entries {
                    if !option_names.insert(n) {
                        continue;
                    }
                    if *list {
                        for v in std::iter::once(v).chain(items) {
                            s.push(n, v, 0, true);
                        }
                    } else {
                        s.push(n, v, 0, false);
                    }
                }
                doc.sections.push(s);
            }
            let mut back = parse(render(&doc).as_bytes()).unwrap();
            for s in &mut back.sections {
                s.line = 0;
                for e in &mut s.entries { e.line = 0; }
            }
            prop_assert_eq!(back, doc);
        }
    }
}
