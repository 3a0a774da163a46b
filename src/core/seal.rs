//! A checksum line sealing the state files kept in the run directory: a torn or damaged
//! file is told from a whole one, so it is reported and ignored rather than half-read.

/// FNV-1a, 64 bits: enough to tell a torn or damaged file from a whole one.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Appends the checksum of `body` (which ends with a newline) as its last line.
pub fn seal(body: &mut String) {
    use std::fmt::Write;
    let sum = fnv(body.as_bytes());
    let _ = writeln!(body, "sum {sum:016x}");
}

/// The body of a file [`seal`] wrote, whole; `None` for anything else (torn, damaged,
/// unsealed).
pub fn unseal(text: &str) -> Option<&str> {
    let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
    let (body, last) = text.split_at(body_end);
    let sum = u64::from_str_radix(last.strip_suffix('\n')?.strip_prefix("sum ")?, 16).ok()?;
    (sum == fnv(body.as_bytes())).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_text_reads_back_and_every_cut_or_flip_is_caught() {
        let mut s = String::from("first 1\nsecond 2\n");
        seal(&mut s);
        assert_eq!(unseal(&s), Some("first 1\nsecond 2\n"));
        for cut in 0..s.len() {
            assert_eq!(unseal(&s[..cut]), None, "cut at {cut}");
        }
        let bytes = s.as_bytes();
        for at in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[at] ^= 0x01;
            if let Ok(t) = std::str::from_utf8(&b) {
                assert_eq!(unseal(t), None, "bit flipped at {at}");
            }
        }
        assert_eq!(unseal("first 1\n"), None, "unsealed");
    }
}
