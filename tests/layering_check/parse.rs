//! Rust source as the layering checker needs it: comments and literals
//! stripped, tokens, one [`Scope`] per module (a file's, or an inline
//! `mod x { ... }`'s) with the items it defines, its `use` leaves and the
//! paths in its code.
//!
//! A leaf: the checker in `mod.rs` uses it, and it uses nothing of the
//! checker.

use std::collections::{BTreeMap, BTreeSet};

/// A module's path from the crate root (`["query", "rollup"]`).
pub type ModPath = Vec<String>;

/// One module, a file's or an inline `mod x { ... }`, and what it says.
#[derive(Default)]
pub struct Scope {
    pub file: usize,
    /// Names of the items it defines.
    pub defines: BTreeSet<String>,
    pub uses: Vec<Use>,
    /// Paths of two or more segments in its code, outside `use`.
    pub paths: Vec<Vec<String>>,
    /// Every identifier in its code, outside `use`.
    pub idents: BTreeSet<String>,
}

/// One leaf of a `use` tree: `path` bound as `name` (`None` for a glob).
#[derive(Debug, PartialEq)]
pub struct Use {
    pub path: Vec<String>,
    pub name: Option<String>,
    pub public: bool,
}

/// The path of module `name` inside `at`.
pub fn child(at: &[String], name: &str) -> ModPath {
    let mut p = at.to_vec();
    p.push(name.to_string());
    p
}

/// `code` without comments and string and character literals (each
/// becomes a space), so that paths in them are not taken for imports.
pub fn strip(code: &str) -> String {
    let b: Vec<char> = code.chars().collect();
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < b.len() {
        let (c, next) = (b[i], at(i + 1));
        let after_ident = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
        if c == '/' && next == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        // Raw strings: r"..", r#".."#, br"..".
        let raw_start = match (c, next) {
            ('r', _) if !after_ident => Some(i + 1),
            ('b', 'r') if !after_ident => Some(i + 2),
            _ => None,
        };
        if let Some(mut j) = raw_start {
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) == '"' {
                j += 1;
                while j < b.len() && !(b[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#')) {
                    j += 1;
                }
                i = j + 1 + hashes;
                out.push(' ');
                continue;
            }
        }
        if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push(' ');
            continue;
        }
        if c == '\'' {
            // '\n', '\'', '\u{..}'; a lifetime ('a) has no closing quote.
            if next == '\\' {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push(' ');
                continue;
            }
            if at(i + 2) == '\'' {
                i += 3;
                out.push(' ');
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

pub fn is(t: Option<&Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(w)) if w == word)
}

pub fn tokenize(code: &str) -> Vec<Tok> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_end = |mut j: usize| {
        while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c.is_alphabetic() || c == '_' {
            let j = word_end(i);
            out.push(Tok::Ident(b[i..j].iter().collect()));
            i = j;
        } else if c.is_ascii_digit() {
            i = word_end(i);
        } else if c == '\'' {
            // A lifetime or label: `'static` is not the keyword.
            i = word_end(i + 1);
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(Tok::Sep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// Files `toks` into the scope of module `path` and, for each inline
/// `mod x { ... }`, a scope of its own.
pub fn split_scopes(toks: &[Tok], path: ModPath, file: usize, out: &mut BTreeMap<ModPath, Scope>) {
    let mut own = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if let (true, Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
            (is(toks.get(i), "mod"), toks.get(i + 1), toks.get(i + 2))
        {
            let end = closing(toks, i + 2);
            split_scopes(&toks[i + 3..end], child(&path, name), file, out);
            i = end + 1;
            continue;
        }
        own.push(toks[i].clone());
        i += 1;
    }
    out.insert(path, scope(&own, file));
}

/// Index of the `}` that closes the `{` at `open` (or the end).
fn closing(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

fn scope(toks: &[Tok], file: usize) -> Scope {
    const ITEMS: &[&str] = &[
        "fn", "struct", "enum", "trait", "type", "const", "static", "union", "mod",
    ];
    let mut s = Scope {
        file,
        ..Scope::default()
    };
    let mut code = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if is(toks.get(i), "use") {
            let end = (i..toks.len())
                .find(|&k| toks[k] == Tok::Punct(';'))
                .unwrap_or(toks.len());
            let public = is(code.last(), "pub")
                || code.last() == Some(&Tok::Punct(')')) && is(code.iter().rev().nth(3), "pub");
            let mut k = i + 1;
            use_tree(&toks[..end], &mut k, Vec::new(), public, &mut s.uses);
            i = end + 1;
            continue;
        }
        code.push(toks[i].clone());
        i += 1;
    }
    // Items are the module's at brace depth 0; deeper, they are a body's.
    let mut depth = 0usize;
    for (k, t) in code.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        let Tok::Ident(w) = t else { continue };
        s.idents.insert(w.clone());
        let mut next = code.get(k + 1);
        if w == "static" && is(next, "mut") {
            next = code.get(k + 2);
        }
        if let (0, true, Some(Tok::Ident(name))) = (depth, ITEMS.contains(&w.as_str()), next) {
            if !ITEMS.contains(&name.as_str()) {
                s.defines.insert(name.clone());
            }
        }
        if w == "macro_rules" && depth == 0 {
            if let Some(Tok::Ident(name)) = code.get(k + 2) {
                s.defines.insert(name.clone());
            }
        }
        // The start of a path `a::b...`: not preceded by `::`.
        if k > 0 && code[k - 1] == Tok::Sep || code.get(k + 1) != Some(&Tok::Sep) {
            continue;
        }
        let mut path = vec![w.clone()];
        let mut j = k + 1;
        while let (Some(Tok::Sep), Some(Tok::Ident(seg))) = (code.get(j), code.get(j + 1)) {
            path.push(seg.clone());
            j += 2;
        }
        if path.len() > 1 {
            s.paths.push(path);
        }
    }
    s
}

/// Parses the `use` tree at `toks[*i..]` below `prefix` into its leaves.
pub fn use_tree(
    toks: &[Tok],
    i: &mut usize,
    prefix: Vec<String>,
    public: bool,
    out: &mut Vec<Use>,
) {
    let mut path = prefix;
    if toks.get(*i) == Some(&Tok::Sep) {
        // `::name`: another crate's.
        if path.is_empty() {
            path.push("::".into());
        }
        *i += 1;
    }
    loop {
        match toks.get(*i) {
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(Use {
                    path,
                    name: None,
                    public,
                });
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while *i < toks.len() && toks[*i] != Tok::Punct('}') {
                    use_tree(toks, i, path.clone(), public, out);
                    if toks.get(*i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some(Tok::Ident(seg)) => {
                path.push(seg.clone());
                *i += 1;
                if toks.get(*i) == Some(&Tok::Sep) {
                    *i += 1;
                    continue;
                }
                if path.last().is_some_and(|l| l == "self") {
                    path.pop();
                }
                let mut name = path.last().cloned();
                if is(toks.get(*i), "as") {
                    name = match toks.get(*i + 1) {
                        Some(Tok::Ident(alias)) => Some(alias.clone()),
                        _ => Some("_".into()),
                    };
                    *i += 2;
                }
                out.push(Use { path, name, public });
                return;
            }
            _ => {
                // Not a tree we understand: skip the token.
                *i += 1;
                return;
            }
        }
    }
}
