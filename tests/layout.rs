//! The module graph as data: every `crate::…`, `super::…` and `self::…` path in `src/` is an
//! edge from the module it is written in to the module it names. Two graphs must have no
//! cycle: the crate's top-level modules, and inside each folder module, its children (sibling
//! files). Test code (`mod tests` blocks, `tests.rs`, `*_tests.rs`) is left out: tests may
//! reach anywhere. On a cycle the test names each edge with the file and line that makes it.
//!
//! `target/module-graph.txt` gets the top-level graph, one `from -> to` line per edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// An import: from a module to another, and where it is written.
struct Edge {
    from: Module,
    to: Module,
    at: String,
}

/// Every `.rs` file under `src/` but the binary's, with its module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let Some(file) = parts.pop() else { continue };
            let Some(stem) = file.strip_suffix(".rs") else {
                continue;
            };
            if parts.is_empty() && stem == "main" {
                continue;
            }
            if stem == "tests" || stem.ends_with("_tests") {
                continue;
            }
            if stem != "mod" && !(parts.is_empty() && stem == "lib") {
                parts.push(stem.to_string());
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The file's code without comments and without its test module.
fn code(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let all: Vec<&str> = text.lines().collect();
    for (i, line) in all.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            let next = all[i + 1..].iter().find(|l| !l.trim().is_empty());
            if next.is_some_and(|l| l.trim_start().starts_with("mod ") && l.contains('{')) {
                break;
            }
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        lines.push((i + 1, code.to_string()));
    }
    lines
}

/// The paths a line names, each as its leading keyword and its segments:
/// `use crate::{a::B, c}` gives `crate a B` and `crate c`.
fn paths(line: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    for keyword in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(found) = line[from..].find(keyword) {
            let start = from + found;
            from = start + keyword.len();
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let rest = &line[from..];
            let Some(rest) = rest.strip_prefix("::") else {
                continue;
            };
            for tail in expand(rest) {
                out.push((keyword.to_string(), tail));
            }
        }
    }
    out
}

/// `a::b::C` -> [[a, b, C]]; `{a::B, c}` -> [[a, B], [c]]; `super::x` inside -> kept as
/// segments (`super` is resolved by the caller).
fn expand(rest: &str) -> Vec<Vec<String>> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
        return items
            .iter()
            .flat_map(|item| expand(item.trim()))
            .filter(|p| !p.is_empty())
            .collect();
    }
    let mut segments = Vec::new();
    let mut rest = rest;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with('{') => {
                return expand(next)
                    .into_iter()
                    .map(|tail| segments.iter().cloned().chain(tail).collect())
                    .collect();
            }
            Some(next) => rest = next,
            None => break,
        }
    }
    vec![segments]
}

/// The module a path leads to: the longest prefix of it that is a module file.
fn resolve(
    here: &Module,
    keyword: &str,
    segments: &[String],
    known: &BTreeSet<Module>,
) -> Option<Module> {
    let mut path: Module = match keyword {
        "crate" => Vec::new(),
        "self" => here.clone(),
        _ => here[..here.len().checked_sub(1)?].to_vec(),
    };
    let mut segments = segments;
    while let Some(("super", rest)) = segments.split_first().map(|(s, r)| (s.as_str(), r)) {
        path.pop();
        segments = rest;
    }
    let mut best = known.contains(&path).then(|| path.clone());
    for segment in segments {
        path.push(segment.clone());
        if known.contains(&path) {
            best = Some(path.clone());
        }
    }
    best
}

fn edges(src: &Path) -> Vec<Edge> {
    let modules = modules(src);
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut out = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let here = match file.file_name().and_then(|n| n.to_str()) {
            // In a folder's mod.rs, `super` is the folder's parent.
            Some("mod.rs") | Some("lib.rs") => {
                let mut m = module.clone();
                m.push(String::new());
                m
            }
            _ => module.clone(),
        };
        for (number, line) in code(&text) {
            for (keyword, segments) in paths(&line) {
                let Some(to) = resolve(&here, &keyword, &segments, &known) else {
                    continue;
                };
                if &to != module {
                    out.push(Edge {
                        from: module.clone(),
                        to,
                        at: format!("{}:{number}", file.display()),
                    });
                }
            }
        }
    }
    out
}

/// A cycle in `graph`, as the nodes along it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut found = path[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(_) => {}
                None => {
                    if let Some(found) = visit(next, graph, state, path) {
                        return Some(found);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            if let Some(found) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(found);
            }
        }
    }
    None
}

/// The graphs to check: the top level (key ""), and each folder's children (key: the folder).
fn graphs(edges: &[Edge]) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for e in edges {
        // The deepest folder both modules are inside, and the child of it each is in.
        let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        let (Some(a), Some(b)) = (e.from.get(common), e.to.get(common)) else {
            continue; // one is inside the other: a folder and its own children
        };
        let folder = e.from[..common].join("::");
        out.entry(folder)
            .or_default()
            .push((a.clone(), b.clone(), e.at.clone()));
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let edges = edges(&root.join("src"));
    assert!(edges.len() > 100, "only {} imports found", edges.len());
    let graphs = graphs(&edges);

    let mut listing = String::new();
    for (from, to, _) in graphs.get("").into_iter().flatten() {
        let line = format!("{from} -> {to}\n");
        if !listing.contains(&line) {
            listing.push_str(&line);
        }
    }
    let _ = std::fs::write(root.join("target/module-graph.txt"), listing);

    let mut failures = Vec::new();
    for (folder, list) in &graphs {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to, _) in list {
            graph.entry(from.clone()).or_default().insert(to.clone());
        }
        if let Some(found) = cycle(&graph) {
            let steps: Vec<String> = found
                .windows(2)
                .map(|pair| {
                    let at = list
                        .iter()
                        .find(|(f, t, _)| f == &pair[0] && t == &pair[1])
                        .map_or("?", |(_, _, at)| at.as_str());
                    format!("{} -> {} ({at})", pair[0], pair[1])
                })
                .collect();
            let place = if folder.is_empty() {
                "the crate".to_string()
            } else {
                folder.clone()
            };
            failures.push(format!("in {place}: {}", steps.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "import cycles:\n{}",
        failures.join("\n")
    );
}

#[test]
fn paths_are_read_as_rust_writes_them() {
    let names = |line: &str| -> Vec<String> {
        paths(line)
            .into_iter()
            .map(|(k, s)| format!("{k} {}", s.join(" ")))
            .collect()
    };
    assert_eq!(
        names("use crate::{a::B, c::{D, e::F}};"),
        ["crate a B", "crate c D", "crate c e F"]
    );
    assert_eq!(names("let x = super::super::y::z();"), ["super super y z"]);
    assert_eq!(names("use self::inner::Thing;"), ["self inner Thing"]);
    assert!(names("let my_crate::x = 1;").is_empty());
    assert_eq!(
        code("a(); // crate::x\n// crate::y\n"),
        [(1, "a(); ".to_string())]
    );
    let known: BTreeSet<Module> = [vec![], vec!["a".into()], vec!["a".into(), "b".into()]]
        .into_iter()
        .collect();
    let here = vec!["a".to_string(), "c".to_string()];
    assert_eq!(
        resolve(&here, "super", &["b".into(), "X".into()], &known),
        Some(vec!["a".to_string(), "b".to_string()])
    );
}

/// The modules of lib.rs's Layout, in its order: each numbered item's modules, and then those
/// "underneath everything".
fn layout() -> (Vec<Vec<String>>, Vec<String>) {
    let lib = include_str!("../src/lib.rs");
    let start = lib.find("//! # Layout").expect("a Layout section");
    let mut items: Vec<Vec<String>> = Vec::new();
    let mut underneath = Vec::new();
    let mut in_underneath = false;
    for line in lib[start..].lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!").trim_start();
        let starts_item = text
            .split_once(". ")
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty());
        if text.starts_with("Underneath") {
            in_underneath = true;
        } else if starts_item {
            items.push(Vec::new());
        }
        let mut rest = text;
        while let Some(open) = rest.find("[`") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("`]") else { break };
            let name = &after[..close];
            rest = &after[close + 2..];
            if name.contains("::") || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            match (in_underneath, items.last_mut()) {
                (true, _) => underneath.push(name.to_string()),
                (false, Some(item)) if !item.contains(&name.to_string()) => {
                    item.push(name.to_string())
                }
                _ => {}
            }
        }
    }
    (items, underneath)
}

#[test]
fn the_layout_in_lib_rs_names_every_module_and_imports_go_up_it() {
    let (items, underneath) = layout();
    let lib = include_str!("../src/lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = items.iter().flatten().chain(&underneath).cloned().collect();
    assert_eq!(listed, declared, "lib.rs's Layout against its `pub mod`s");

    let place = |m: &str| items.iter().position(|item| item.iter().any(|n| n == m));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wrong = Vec::new();
    for e in edges(&root.join("src")) {
        let (Some(from), Some(to)) = (e.from.first(), e.to.first()) else {
            continue;
        };
        if from == to {
            continue;
        }
        let down = match (place(from), place(to)) {
            (Some(a), Some(b)) => b > a,
            // What is underneath everything uses nothing of the pipeline.
            (None, Some(_)) => true,
            _ => false,
        };
        if down {
            wrong.push(format!("{from} -> {to} ({})", e.at));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports down the Layout of lib.rs:\n{}",
        wrong.join("\n")
    );
}
