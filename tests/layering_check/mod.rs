//! The checker behind `tests/layering.rs`, over any `src/` directory.
//!
//! It reads the source as text (see `parse`): comments and literals
//! stripped, then `use` trees (nested braces, `self`, `as`, globs) and the
//! paths in code (`crate::`, `super::`, `self::`, a child module's or an
//! imported name's `x::y`). Each name is resolved to the file that
//! *defines* it, following `use` and `pub use` through `mod.rs` facades, so
//! importing an item through its parent's re-export is an import of the
//! child that defines it. A re-export is not an import of its own unless
//! the file uses the name too. Inline modules (`mod tests { use super::*;
//! }`) are part of their file. Code in test modules counts: it is compiled
//! too.

mod parse;
mod tests;
mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;

use parse::{child, split_scopes, strip, tokenize, ModPath, Scope};
pub use time::time_reads;

/// What [`check`] found.
#[derive(Debug)]
pub struct Report {
    pub files: usize,
    /// Distinct (file, imported file) pairs.
    pub imports: usize,
    /// One line per import that goes up, or out of, the layers.
    pub upward: Vec<String>,
    /// Strongly connected components of more than one file.
    pub cycles: Vec<Cycle>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{} files, {} imports between files, {} upward, {} cycles{}",
            self.files,
            self.imports,
            self.upward.len(),
            self.cycles.len(),
            self.cycles
                .iter()
                .map(|c| format!("\n{c}"))
                .collect::<String>()
        )
    }
}

#[derive(Debug)]
pub struct Cycle {
    pub files: Vec<String>,
    /// One import for each file in the cycle that imports another of them.
    pub imports: Vec<String>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "import cycle between {}:", self.files.join(", "))?;
        for i in &self.imports {
            write!(f, "\n  {i}")?;
        }
        Ok(())
    }
}

/// The layering to check: top-level module names.
pub struct Rules {
    /// Modules every module may use, which use no other.
    pub foundation: &'static [&'static str],
    /// The layers above the foundation, bottom first; a module may import
    /// from the layers below its own only.
    pub layers: &'static [&'static [&'static str]],
    /// Files outside the layering (paths under `src/`).
    pub exempt: &'static [&'static str],
}

impl Rules {
    /// The layer of a top-level module: 0 for the foundation, `None` for a
    /// module the layering does not know.
    fn rank(&self, top: &str) -> Option<usize> {
        if self.foundation.contains(&top) {
            return Some(0);
        }
        self.layers
            .iter()
            .position(|l| l.contains(&top))
            .map(|r| r + 1)
    }

    /// Why import `i` breaks the layering, if it does.
    fn violation(&self, krate: &Crate, i: &Import) -> Option<String> {
        let (a, b) = (
            krate.files[i.from].top.as_ref()?,
            krate.files[i.to].top.as_ref()?,
        );
        if a == b {
            return None;
        }
        let (ra, rb) = (self.rank(a)?, self.rank(b)?);
        if ra == 0 {
            Some(format!(
                "{a} is a foundation module and may not depend on {b}"
            ))
        } else if rb >= ra {
            Some(format!("{a} may not depend on {b}"))
        } else {
            None
        }
    }
}

/// Checks the source tree at `src` (its `lib.rs` is the crate root).
pub fn check(src: &Path, rules: &Rules) -> io::Result<Report> {
    let krate = Crate::read(src, rules)?;
    let imports = krate.imports();
    let mut upward = Vec::new();
    for top in krate.top_modules() {
        if rules.rank(&top).is_none() {
            upward.push(format!(
                "module `{top}` has no layer: add it to FOUNDATION or LAYERS in tests/layering.rs"
            ));
        }
    }
    let mut pairs: BTreeMap<(usize, usize), &Import> = BTreeMap::new();
    for i in &imports {
        pairs.entry((i.from, i.to)).or_insert(i);
        if let Some(why) = rules.violation(&krate, i) {
            let line = format!("{}: {why}", krate.describe(i));
            if !upward.contains(&line) {
                upward.push(line);
            }
        }
    }
    let cycles = strongly_connected(krate.files.len(), pairs.keys().copied())
        .into_iter()
        .map(|scc| Cycle {
            files: scc.iter().map(|&f| krate.files[f].name.clone()).collect(),
            imports: pairs
                .iter()
                .filter(|((a, b), _)| scc.contains(a) && scc.contains(b))
                .map(|(_, i)| krate.describe(i))
                .collect(),
        })
        .collect();
    Ok(Report {
        files: krate.files.len(),
        imports: pairs.len(),
        upward,
        cycles,
    })
}

struct File {
    /// As shown in messages: `src/query/table.rs`.
    name: String,
    /// The top-level module the file belongs to; `None` for exempt files.
    top: Option<String>,
}

/// `from` imports `path` (absolute, without `crate`), defined in `to`.
struct Import {
    from: usize,
    to: usize,
    path: String,
}

struct Crate {
    files: Vec<File>,
    scopes: BTreeMap<ModPath, Scope>,
}

impl Crate {
    fn read(src: &Path, rules: &Rules) -> io::Result<Self> {
        let shown = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rel = Vec::new();
        list_rs(src, Path::new(""), &mut rel)?;
        rel.sort();
        let mut krate = Crate {
            files: Vec::new(),
            scopes: BTreeMap::new(),
        };
        for r in rel {
            let r = r.to_string_lossy().replace('\\', "/");
            // `main.rs` and `bin/` are other crates: they use this one by name.
            if r == "main.rs" || r.starts_with("bin/") {
                continue;
            }
            let mut path: ModPath = r
                .trim_end_matches(".rs")
                .split('/')
                .map(String::from)
                .collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            if r == "lib.rs" {
                path.clear();
            }
            let top = (!rules.exempt.contains(&r.as_str())).then(|| path[0].clone());
            let file = krate.files.len();
            krate.files.push(File {
                name: format!("{shown}/{r}"),
                top,
            });
            let code = fs::read_to_string(src.join(&r))?;
            split_scopes(&tokenize(&strip(&code)), path, file, &mut krate.scopes);
        }
        Ok(krate)
    }

    fn top_modules(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|f| f.top.clone()).collect()
    }

    /// Every import of one file by another.
    fn imports(&self) -> Vec<Import> {
        let mut out = Vec::new();
        for (path, scope) in &self.scopes {
            let uses = scope.uses.iter().filter(|u| {
                // A re-export is the facade's business, unless it uses the name.
                !u.public || u.name.as_ref().is_some_and(|n| scope.idents.contains(n))
            });
            let wanted = uses
                .filter_map(|u| self.absolute(path, &u.path, 0))
                .chain(scope.paths.iter().filter_map(|p| self.absolute(path, p, 0)));
            for abs in wanted {
                if let Some(to) = self.resolve(&abs, 0) {
                    if to != scope.file {
                        out.push(Import {
                            from: scope.file,
                            to,
                            path: abs.join("::"),
                        });
                    }
                }
            }
        }
        out
    }

    /// `segs` as written in module `at`, made absolute; `None` for a path
    /// into another crate.
    fn absolute(&self, at: &[String], segs: &[String], depth: usize) -> Option<ModPath> {
        let first = segs.first()?;
        let mut base: ModPath = at.to_vec();
        let mut rest = segs;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &segs[1..];
            }
            "super" | "self" => {
                while let Some(s) = rest.first().filter(|s| *s == "super" || *s == "self") {
                    if s == "super" {
                        base.pop()?;
                    }
                    rest = &rest[1..];
                }
            }
            _ if self.scopes.contains_key(&child(at, first)) => {}
            _ => {
                // A name this module imports: `use a::b; b::c` is `a::b::c`.
                let scope = self.scopes.get(at)?;
                let u = scope.uses.iter().find(|u| u.name.as_ref() == Some(first))?;
                if depth > 8 {
                    return None;
                }
                let mut abs = self.absolute(at, &u.path, depth + 1)?;
                abs.extend_from_slice(&segs[1..]);
                return Some(abs);
            }
        }
        base.extend_from_slice(rest);
        Some(base)
    }

    /// The file that defines what absolute path `segs` names; `None` when
    /// it leads out of the crate.
    fn resolve(&self, segs: &[String], depth: usize) -> Option<usize> {
        let mut cur: ModPath = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            if self.scopes.contains_key(&child(&cur, s)) {
                cur.push(s.clone());
                continue;
            }
            let scope = self.scopes.get(&cur)?;
            if s == "*" || scope.defines.contains(s) {
                return Some(scope.file);
            }
            return match self.find(&cur, s, depth) {
                Some(Found::Crate(abs)) => {
                    let mut abs = abs;
                    abs.extend_from_slice(&segs[k + 1..]);
                    self.resolve(&abs, depth + 1)
                }
                Some(Found::Outside) => None,
                // Made by a macro, or a method: the module's own file.
                None => Some(scope.file),
            };
        }
        self.scopes.get(&cur).map(|s| s.file)
    }

    /// Where the `use` declarations of module `at` take `name` from.
    fn find(&self, at: &[String], name: &str, depth: usize) -> Option<Found> {
        if depth > 16 {
            return None;
        }
        let scope = self.scopes.get(at)?;
        if let Some(u) = scope.uses.iter().find(|u| u.name.as_deref() == Some(name)) {
            return Some(match self.absolute(at, &u.path, depth) {
                Some(abs) => Found::Crate(abs),
                None => Found::Outside,
            });
        }
        for u in scope.uses.iter().filter(|u| u.name.is_none()) {
            let Some(module) = self.absolute(at, &u.path, depth) else {
                continue;
            };
            let Some(there) = self.scopes.get(&module) else {
                continue;
            };
            if self.scopes.contains_key(&child(&module, name)) || there.defines.contains(name) {
                return Some(Found::Crate(child(&module, name)));
            }
            if let Some(Found::Crate(abs)) = self.find(&module, name, depth + 1) {
                return Some(Found::Crate(abs));
            }
        }
        None
    }

    fn describe(&self, i: &Import) -> String {
        format!(
            "{} imports {} (defined in {})",
            self.files[i.from].name, i.path, self.files[i.to].name
        )
    }
}

enum Found {
    /// An absolute path in this crate, to resolve further.
    Crate(ModPath),
    /// Another crate's (`std`, `arrow`, ...).
    Outside,
}

fn list_rs(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let r = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_rs(root, &r, out)?;
        } else if r.extension().is_some_and(|e| e == "rs") {
            out.push(r);
        }
    }
    Ok(())
}

/// Tarjan's algorithm: the strongly connected components of more than one
/// node, each sorted, in order of their first node.
fn strongly_connected(n: usize, edges: impl Iterator<Item = (usize, usize)>) -> Vec<Vec<usize>> {
    struct Tarjan {
        out: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for w in self.out[v].clone() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort_unstable();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        out: vec![Vec::new(); n],
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        next: 0,
        found: Vec::new(),
    };
    for (a, b) in edges {
        t.out[a].push(b);
    }
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.found.sort();
    t.found
}
