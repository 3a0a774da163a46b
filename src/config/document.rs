//! The format-neutral shape both config syntaxes parse into: typed sections holding named
//! options, every one with the line it came from. The schema is checked once, on this shape,
//! so UCI and TOML cannot drift apart and every error can name file, line and option.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// `config <kind> '<name>'` in UCI, the table name in TOML (`[network]`, `[allow.acme]`).
    pub kind: String,
    /// UCI sections may be anonymous; TOML `[allow.<name>]` always names them.
    pub name: Option<String>,
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// One `option` or one element of a `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub line: usize,
    /// Came from a `list` line (UCI) or an array (TOML).
    pub list: bool,
}

impl Section {
    pub fn new(kind: &str, name: Option<&str>, line: usize) -> Self {
        Section {
            kind: kind.to_owned(),
            name: name.map(str::to_owned),
            line,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &str, value: &str, line: usize, list: bool) {
        self.entries.push(Entry {
            name: name.to_owned(),
            value: value.to_owned(),
            line,
            list,
        });
    }

    /// How errors refer to the section: `allow 'acme'`, or `network` when it has no name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} '{}'", self.kind, n),
            None => self.kind.clone(),
        }
    }
}
