//! Where `src/` reads the time itself: every call that asks the operating
//! system for the time (`Instant::now`, `SystemTime::now`, `Utc::now`,
//! `Local::now`, and `.elapsed()`, which reads it too) outside the files
//! allowed to. Comments and literals do not count.

use std::fs;
use std::io;
use std::path::Path;

use super::list_rs;
use super::parse::strip;

/// Calls that read the system's clock, written without spaces.
const READS: &[&str] = &[
    "Instant::now(",
    "SystemTime::now(",
    "Utc::now(",
    "Local::now(",
    ".elapsed(",
];

/// `file:line: call` for every time read in `src` outside `allowed`
/// (paths relative to `src`).
pub fn time_reads(src: &Path, allowed: &[&str]) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    list_rs(src, Path::new(""), &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for rel in files {
        let name = rel.to_string_lossy().replace('\\', "/");
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let code = strip(&fs::read_to_string(src.join(&rel))?);
        for (n, line) in code.lines().enumerate() {
            let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            for call in READS.iter().filter(|c| squeezed.contains(*c)) {
                found.push(format!("src/{name}:{}: {call}..)", n + 1));
            }
        }
    }
    Ok(found)
}
