//! The layering of README.md, checked against the source tree, so that a change cannot quietly
//! break it: a module imports only from layers drawn below its own, no two modules that share
//! a parent depend on each other (directly or around a cycle), and `core` stays pure.
//!
//! Test code (`tests.rs` files, `#[cfg(test)]` items) is left out: tests may reach anywhere.
//! The reading is textual (comments and strings removed, `use` trees and `crate::`/`super::`
//! paths followed), which is what a reviewer would check by eye.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module of the crate: its path from the crate root, and its own source (nested inline
/// modules and test code cut out).
struct Module {
    path: Vec<String>,
    file: PathBuf,
    source: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `source` with comments, string and char literals blanked (same length, lines kept).
fn strip(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") || rest.starts_with(b"br\"")
        {
            let start = i + rest.iter().position(|&c| c == b'"').unwrap_or(0);
            let hashes = b[i..start].iter().filter(|&&c| c == b'#').count();
            let mut end = Vec::from(&b"\""[..]);
            end.extend(std::iter::repeat_n(b'#', hashes));
            out.extend(std::iter::repeat_n(b' ', start + 1 - i));
            i = start + 1;
            while i < b.len() && !b[i..].starts_with(&end) {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.extend(std::iter::repeat_n(b' ', end.len().min(b.len() - i)));
            i += end.len();
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' && is_char_literal(rest) {
            let len = char_literal_len(rest);
            out.extend(std::iter::repeat_n(b' ', len));
            i += len;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out.truncate(b.len());
    String::from_utf8_lossy(&out).into_owned()
}

fn is_char_literal(rest: &[u8]) -> bool {
    char_literal_len(rest) > 0
}

/// Length of a char literal at the start of `rest` (`'x'`, `'\n'`, `'\u{..}'`), else 0.
fn char_literal_len(rest: &[u8]) -> usize {
    if rest.len() >= 4 && rest[1] == b'\\' {
        return rest[2..]
            .iter()
            .position(|&c| c == b'\'')
            .map_or(0, |p| p + 3);
    }
    // One UTF-8 character between the quotes.
    let text = String::from_utf8_lossy(&rest[1..rest.len().min(6)]).into_owned();
    match text.chars().next() {
        Some(c) if c != '\'' => {
            let n = c.len_utf8();
            if rest.get(1 + n) == Some(&b'\'') {
                n + 2
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// The index just past the block whose `{` is at `open`.
fn block_end(s: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The index just past the item starting at `at`: through its `;` or its `{...}` block.
fn item_end(s: &str, at: usize) -> usize {
    let semi = s[at..].find(';').map(|p| at + p);
    let brace = s[at..].find('{').map(|p| at + p);
    match (semi, brace) {
        (Some(semi), Some(brace)) if semi < brace => semi + 1,
        (_, Some(brace)) => block_end(s, brace),
        (Some(semi), None) => semi + 1,
        (None, None) => s.len(),
    }
}

/// Where the attributes after `at` end (whitespace and `#[...]` skipped).
fn skip_attributes(s: &str, mut at: usize) -> usize {
    loop {
        let trimmed = s[at..].trim_start();
        at = s.len() - trimmed.len();
        if trimmed.starts_with("#[") {
            let mut depth = 0;
            for (i, c) in trimmed.char_indices() {
                match c {
                    '[' => depth += 1,
                    ']' => {
                        depth -= 1;
                        if depth == 0 {
                            at += i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        } else {
            return at;
        }
    }
}

/// `s` without its `#[cfg(test)]` items (and the names of the `mod x;` files so cut).
fn cut_tests(s: &str) -> (String, BTreeSet<String>) {
    let mut out = s.to_string();
    let mut test_files = BTreeSet::new();
    while let Some(at) = out.find("#[cfg(test)]") {
        let item = skip_attributes(&out, at + "#[cfg(test)]".len());
        let end = item_end(&out, item);
        let text = out[item..end].to_string();
        if let Some(name) = declared_module(&text)
            && text.trim_end().ends_with(';')
        {
            test_files.insert(name);
        }
        out.replace_range(at..end, &" ".repeat(end - at));
    }
    (out, test_files)
}

/// The name of the module that `item` (`mod x;`, `pub(crate) mod x {`) declares, if it does.
fn declared_module(item: &str) -> Option<String> {
    let words: Vec<&str> = item
        .split(|c: char| c.is_whitespace() || c == ';' || c == '{')
        .filter(|w| !w.is_empty())
        .collect();
    let at = words.iter().position(|w| *w == "mod")?;
    let before_ok = words[..at].iter().all(|w| w.starts_with("pub"));
    (before_ok && at + 1 < words.len()).then(|| words[at + 1].to_string())
}

/// Reads the module at `file` (path `path`) and, recursively, the modules it declares.
fn read_module(file: &Path, path: Vec<String>, modules: &mut Vec<Module>) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (source, test_files) = cut_tests(&strip(&text));
    let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
        file.parent().expect("a parent").to_path_buf()
    } else {
        file.with_extension("")
    };
    split_inline(&source, file, &dir, path, &test_files, modules);
}

/// Records `source` as the module `path`, after taking out its inline modules (recorded as
/// its children) and following its `mod x;` declarations to their files.
fn split_inline(
    source: &str,
    file: &Path,
    dir: &Path,
    path: Vec<String>,
    test_files: &BTreeSet<String>,
    modules: &mut Vec<Module>,
) {
    let mut own = source.to_string();
    let mut search = 0;
    while let Some(found) = find_word(&own, "mod", search) {
        let line_start = own[..found]
            .rfind(['\n', ';', '}', '{'])
            .map_or(0, |p| p + 1);
        let end = item_end(&own, found);
        let item = own[line_start..end].to_string();
        let Some(name) = declared_module(&item) else {
            search = found + 3;
            continue;
        };
        let mut child = path.clone();
        child.push(name.clone());
        if item.trim_end().ends_with(';') {
            if !test_files.contains(&name) {
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(&name).join("mod.rs");
                let child_file = if flat.exists() { flat } else { nested };
                read_module(&child_file, child, modules);
            }
        } else {
            let open = own[found..].find('{').map(|p| found + p).expect("a block");
            let body = own[open + 1..end - 1].to_string();
            split_inline(&body, file, &dir.join(&name), child, test_files, modules);
        }
        own.replace_range(line_start..end, &" ".repeat(end - line_start));
        search = line_start;
    }
    modules.push(Module {
        path,
        file: file.to_path_buf(),
        source: own,
    });
}

/// The first `word` in `s` from `from` that stands alone (not inside an identifier).
fn find_word(s: &str, word: &str, from: usize) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut at = from;
    while let Some(p) = s[at..].find(word) {
        let i = at + p;
        let before = s[..i].chars().next_back().is_none_or(|c| !ident(c));
        let after = s[i + word.len()..].chars().next().is_none_or(|c| !ident(c));
        if before && after {
            return Some(i);
        }
        at = i + word.len();
    }
    None
}

/// Every path a `use` tree names: `a::{b, c::{d, e as f}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn use_paths(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let mut out = Vec::new();
    expand(&tree, "", &mut out);
    out
}

fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        let name = tree.split("as").next().unwrap_or(tree);
        out.push(format!("{prefix}{name}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &format!("{prefix}{head}"), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&inner[start..], &format!("{prefix}{head}"), out);
    }
}

/// Every `crate::`, `super::` or `self::` path the module names, made absolute.
fn references(module: &Module) -> Vec<Vec<String>> {
    let mut raw = Vec::new();
    let s = &module.source;
    let mut at = 0;
    while let Some(found) = find_word(s, "use", at) {
        let end = s[found..].find(';').map_or(s.len(), |p| found + p);
        // A path that starts with a name (not `crate`, `super`, `self`) is relative to this
        // module (uniform paths); other crates' paths then land on the module itself.
        for path in use_paths(&s[found + 3..end]) {
            let relative = !["crate", "super", "self"]
                .iter()
                .any(|k| path == *k || path.starts_with(&format!("{k}::")));
            raw.push(if relative {
                format!("self::{path}")
            } else {
                path
            });
        }
        at = end;
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for start in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(found) = find_word(s, &start[..start.len() - 2], at) {
            at = found + 1;
            if !s[found..].starts_with(start) {
                continue;
            }
            let len = s[found..].find(|c| !ident(c)).unwrap_or(s.len() - found);
            raw.push(s[found..found + len].trim_end_matches(':').to_string());
        }
    }
    raw.iter()
        .filter_map(|path| absolute(&module.path, path))
        .collect()
}

/// `path` as seen from module `from`, from the crate root; `None` for other crates.
fn absolute(from: &[String], path: &str) -> Option<Vec<String>> {
    let mut parts = path.split("::").filter(|p| !p.is_empty()).peekable();
    let mut base: Vec<String> = match parts.peek().copied() {
        Some("crate") => {
            parts.next();
            Vec::new()
        }
        Some("super") | Some("self") => from.to_vec(),
        _ => return None,
    };
    while let Some(part) = parts.peek().copied() {
        match part {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        parts.next();
    }
    base.extend(parts.map(str::to_string));
    Some(base)
}

/// All modules of the library, from `src/lib.rs`.
fn modules() -> Vec<Module> {
    let mut modules = Vec::new();
    read_module(&root().join("src/lib.rs"), Vec::new(), &mut modules);
    modules
}

/// Module-to-module dependencies: for each module, the known modules its paths land in.
fn dependencies(modules: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut deps = BTreeMap::new();
    for module in modules {
        let entry: &mut BTreeSet<Vec<String>> = deps.entry(module.path.clone()).or_default();
        for path in references(module) {
            // The longest known module the path starts with.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains(p))
                .unwrap_or_default();
            if target != module.path && !target.is_empty() {
                entry.insert(target);
            }
        }
    }
    deps
}

/// The layers drawn in README.md's `text` block after the `layers` marker, top first: each
/// line starts with the names of the top-level modules of one layer.
fn readme_layers(top_level: &BTreeSet<String>) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let marker = "<!-- layers: checked by tests/integration/layers.rs -->";
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?} before its layer picture"))
        .1;
    let block = after
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```text block after the layers marker")
        .0;
    block
        .lines()
        .map(|line| {
            line.split_whitespace()
                .take_while(|w| top_level.contains(*w))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|layer| !layer.is_empty())
        .collect()
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

#[test]
fn every_module_imports_only_from_layers_below_its_own() {
    let modules = modules();
    let top_level: BTreeSet<String> = modules
        .iter()
        .filter(|m| m.path.len() == 1)
        .map(|m| m.path[0].clone())
        .collect();
    let layers = readme_layers(&top_level);
    let mut rank = BTreeMap::new();
    for (i, layer) in layers.iter().rev().enumerate() {
        for module in layer {
            assert!(
                rank.insert(module.clone(), i).is_none(),
                "README.md draws {module} twice"
            );
        }
    }
    let undrawn: Vec<_> = top_level
        .iter()
        .filter(|m| !rank.contains_key(*m))
        .collect();
    assert!(
        undrawn.is_empty(),
        "README.md's layers leave out {undrawn:?}"
    );
    let mut wrong = Vec::new();
    for (from, targets) in dependencies(&modules) {
        let Some(from_top) = from.first() else {
            continue;
        };
        for to in targets {
            let to_top = &to[0];
            if to_top != from_top && rank[to_top] >= rank[from_top] {
                wrong.push(format!("{} uses {}", name(&from), name(&to)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point to a lower layer of README.md:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_two_sibling_modules_depend_on_each_other() {
    let modules = modules();
    let deps = dependencies(&modules);
    // Edges between the children of each parent: a child stands for its whole subtree.
    let mut sibling_edges: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    for (from, targets) in &deps {
        for to in targets {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                sibling_edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry(from[common].clone())
                    .or_default()
                    .insert(to[common].clone());
            }
        }
    }
    let mut cycles = Vec::new();
    for (parent, edges) in &sibling_edges {
        for (a, targets) in edges {
            for b in targets {
                if a < b && reaches(edges, b, a) {
                    cycles.push(format!("{} <-> {} (under {})", a, b, name(parent)));
                } else if a > b
                    && reaches(edges, b, a)
                    && !edges.get(b).is_some_and(|t| t.contains(a))
                {
                    cycles.push(format!(
                        "{} -> {} -> ... -> {} (under {})",
                        a,
                        b,
                        a,
                        name(parent)
                    ));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles:\n  {}",
        cycles.join("\n  ")
    );
}

/// Whether `to` can be reached from `from` along `edges`.
fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(at) = todo.pop() {
        if at == to {
            return true;
        }
        if seen.insert(at.clone())
            && let Some(next) = edges.get(&at)
        {
            todo.extend(next.iter().cloned());
        }
    }
    false
}

#[test]
fn core_reads_no_clock_and_does_no_io() {
    let forbidden = [
        "tokio",
        "ractor",
        "std::fs",
        "std::net",
        "std::env",
        "std::process",
        "SystemTime",
        "Instant",
    ];
    let mut found = Vec::new();
    for module in modules()
        .iter()
        .filter(|m| m.path.first().is_some_and(|p| p == "core"))
    {
        for word in forbidden {
            if find_word(&module.source, word, 0).is_some() {
                found.push(format!(
                    "{} ({}) uses {word}",
                    name(&module.path),
                    module.file.display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "core must stay pure:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_reader_finds_what_it_must() {
    // Guards the checks above against a reader that silently sees nothing.
    let modules = modules();
    let deps = dependencies(&modules);
    let path = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    assert!(
        modules.iter().any(|m| m.path == path("node::names")),
        "inline modules"
    );
    assert!(
        !modules
            .iter()
            .any(|m| m.path.last().is_some_and(|p| p == "tests"))
    );
    assert!(
        deps[&path("node")].contains(&path("core::store")),
        "use trees"
    );
    assert!(
        deps[&path("node::shared")].contains(&path("node::names")),
        "super:: paths"
    );
    assert!(
        deps[&path("node")].contains(&path("node::peers")),
        "relative use paths"
    );
    assert_eq!(
        use_paths("super::{a::{B, c as d}, e}"),
        ["super::a::B", "super::a::c", "super::e"]
    );
}
