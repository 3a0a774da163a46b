//! TOML into the shared [`Document`]: `[network]`-style tables are sections, `[allow.<name>]`
//! tables are named allow sections, arrays are lists. Spans become line numbers.

use toml::de::{DeTable, DeValue};

use super::document::{Document, Section};

/// Sections that hold named entries (`[allow.acme]`) rather than options.
const NAMED_SECTIONS: &[&str] = &["allow", "profile"];

/// `newlines`: where the text's line ends are, so that each key's line is a binary search
/// (counting from the start for each key was quadratic in the file's size).
fn line_of(newlines: &[usize], offset: usize) -> usize {
    newlines.partition_point(|&n| n < offset) + 1
}

pub fn parse(text: &str) -> Result<Document, (usize, String)> {
    let newlines: Vec<usize> = text.match_indices('\n').map(|(at, _)| at).collect();
    let lines = &newlines[..];
    let root = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(lines, s.start)).unwrap_or(0);
        (line, e.message().to_owned())
    })?;
    let mut doc = Document::default();
    let mut keys: Vec<_> = root.get_ref().iter().collect();
    // The map is sorted by key; keep the file's order so errors come in reading order.
    keys.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in keys {
        let kind = key.get_ref().as_ref();
        let line = line_of(lines, key.span().start);
        let DeValue::Table(table) = value.get_ref() else {
            return Err((line, format!("'{kind}' must be a table ([{kind}])")));
        };
        if NAMED_SECTIONS.contains(&kind) {
            let mut named: Vec<_> = table.iter().collect();
            named.sort_by_key(|(k, _)| k.span().start);
            for (name, inner) in named {
                let line = line_of(lines, name.span().start);
                let DeValue::Table(inner) = inner.get_ref() else {
                    return Err((
                        line,
                        format!(
                            "'{kind}.{}' must be a table ([{kind}.<name>])",
                            name.get_ref()
                        ),
                    ));
                };
                let mut section = Section::new(kind, Some(name.get_ref()), line);
                entries(lines, &mut section, inner)?;
                doc.sections.push(section);
            }
        } else {
            let mut section = Section::new(kind, None, line);
            entries(lines, &mut section, table)?;
            doc.sections.push(section);
        }
    }
    Ok(doc)
}

fn entries(
    lines: &[usize],
    section: &mut Section,
    table: &DeTable<'_>,
) -> Result<(), (usize, String)> {
    let mut items: Vec<_> = table.iter().collect();
    items.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in items {
        let name = key.get_ref().as_ref();
        let line = line_of(lines, key.span().start);
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items {
                    let v = scalar(item.get_ref()).ok_or_else(|| {
                        (
                            line,
                            format!("option '{name}': list items must be strings or numbers"),
                        )
                    })?;
                    section.push(name, &v, line_of(lines, item.span().start), true);
                }
            }
            other => {
                let v = scalar(other).ok_or_else(|| {
                    (
                        line,
                        format!("option '{name}': expected a string, number, boolean or list, found a {}", other.type_str()),
                    )
                })?;
                section.push(name, &v, line, false);
            }
        }
    }
    Ok(())
}

fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Boolean(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_arrays_and_lines() {
        let doc = parse(
            "# comment\n[network]\ninterface = \"prov0\"\nrouter = \"192.168.250.1\"\n\n[allow.acme]\nport = [443, \"8883\"]\nproto = \"tcp\"\n\n[limits]\nmax_clients = 8\nx = true\n",
        )
        .unwrap();
        let kinds: Vec<_> = doc
            .sections
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_deref(), s.line))
            .collect();
        assert_eq!(
            kinds,
            [
                ("network", None, 2),
                ("allow", Some("acme"), 6),
                ("limits", None, 10)
            ]
        );
        let acme: Vec<_> = doc.sections[1]
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str(), e.line, e.list))
            .collect();
        assert_eq!(
            acme,
            [
                ("port", "443", 7, true),
                ("port", "8883", 7, true),
                ("proto", "tcp", 8, false)
            ]
        );
        assert_eq!(doc.sections[2].entries[0].value, "8");
        assert_eq!(doc.sections[2].entries[1].value, "1");
    }

    #[test]
    fn errors_have_lines() {
        assert_eq!(parse("[network]\ninterface = \n").unwrap_err().0, 2);
        assert_eq!(parse("a = 1\n").unwrap_err().0, 1);
        assert!(
            parse("[allow]\nport = 1\n")
                .unwrap_err()
                .1
                .contains("allow.<name>")
        );
        let (line, msg) = parse("[network]\n\nx = 1.5\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.contains("float"), "{msg}");
        let (line, msg) = parse("[dns]\nupstream = [[1]]\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("list items"), "{msg}");
    }
}
