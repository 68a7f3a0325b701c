//! The library's modules form layers, read off the `use` lines of
//! `src/`: every module imports only modules of lower layers, so the import
//! graph has no cycle and a reader follows a push down the request path
//! without climbing back. ARCHITECTURE.md ("Layers") draws the same table.
//!
//! A node is a top-level module (`src/store/` is one node, `store`), except
//! inside the sans-IO `protocol`, whose files are nodes of their own
//! (`protocol::wire`, `protocol::message`, …; `protocol` is its `mod.rs`),
//! checked for cycles among themselves. `lib.rs` is the façade: it
//! re-exports and is no node; `crate::display_chain`, defined there, is at
//! the bottom, and importing a re-export (`crate::Handler`) fails the test,
//! since it would hide the module the item comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may import any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["crate"],
    &["clock", "lease", "protocol"],
    &["reply"],
    &["config"],
    &["store"],
    &["metrics"],
    &["api"],
    &["handler"],
    &["outbox"],
    &["rules", "router", "worker"],
    &["forward"],
    &["console"],
    &["listener", "tls"],
    &["server"],
    &["simulate", "mock_wechat"],
];

fn layer_of(node: &str) -> usize {
    assert!(
        !node.starts_with("the re-export"),
        "{node} is imported: import the item from its module"
    );
    let top = node.split("::").next().unwrap_or(node);
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| {
            panic!("module {top} is in no layer: add it to LAYERS and ARCHITECTURE.md")
        })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `protocol/envelope.rs` → `[protocol, envelope]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The graph node of a module path (see the module docs).
fn node(path: &[String], modules: &BTreeSet<Vec<String>>) -> String {
    match path {
        [] => "crate".to_owned(),
        // An item of lib.rs: only `display_chain` is defined there; anything
        // else is a re-export, which would hide the module it comes from.
        [top] if !modules.contains(&vec![top.clone()]) => {
            if top == "display_chain" {
                "crate".to_owned()
            } else {
                format!("the re-export crate::{top}, not its module,")
            }
        }
        [p, sub, ..] if p == "protocol" && modules.contains(&vec![p.clone(), sub.clone()]) => {
            format!("protocol::{sub}")
        }
        [top, ..] => top.clone(),
    }
}

/// Source without comments, so that doc links are no imports.
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path named after `crate::` or `super::`, braces expanded.
fn paths_after(source: &str, prefix: &str) -> Vec<Vec<String>> {
    fn expand(text: &str, base: &[String], out: &mut Vec<Vec<String>>) {
        // `text` starts right after `prefix::`.
        let mut path = base.to_vec();
        let mut rest = text;
        loop {
            if let Some(inner) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 1 => {
                            expand(inner[start..i].trim_start(), &path, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        expand(inner[start..i].trim_start(), &path, out);
                        return;
                    }
                }
                return;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            path.push(rest[..end].to_owned());
            match rest[end..].strip_prefix("::") {
                Some(next) => rest = next,
                None => break,
            }
        }
        out.push(path);
    }
    let mut out = Vec::new();
    for (i, _) in source.match_indices(prefix) {
        let before = source[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand(&source[i + prefix.len()..], &[], &mut out);
    }
    out
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_path(&src, file);
        if me.is_empty() {
            continue; // lib.rs: the façade
        }
        let from = node(&me, &modules);
        let source = strip_comments(&std::fs::read_to_string(file).unwrap());
        let mut targets = paths_after(&source, "crate::");
        // `super::` from a file names its parent module.
        let parent = &me[..me.len() - 1];
        for p in paths_after(&source, "super::") {
            targets.push(parent.iter().cloned().chain(p).collect());
        }
        let edges = graph.entry(from.clone()).or_default();
        for target in targets {
            let to = node(&target, &modules);
            if to != from {
                edges.insert(to);
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_lower_layers() {
    let graph = import_graph();
    assert!(graph.contains_key("server") && graph.contains_key("protocol::envelope"));
    let mut upward = Vec::new();
    for (from, tos) in &graph {
        for to in tos {
            let (a, b) = (layer_of(from), layer_of(to));
            let protocol_internal = from.starts_with("protocol") && to.starts_with("protocol");
            if !protocol_internal && b >= a {
                upward.push(format!("{from} (layer {a}) imports {to} (layer {b})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that climb:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_import_graph_has_no_cycle() {
    let graph = import_graph();
    // Depth-first search; a grey node met again closes a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(node, &graph, &mut state, &mut stack) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_graph_reader_sees_grouped_and_nested_imports() {
    let paths = paths_after(
        "use crate::{a::{B, c::D}, e};\nlet x = crate::f::g();\nnotcrate::h",
        "crate::",
    );
    let names: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, ["a::B", "a::c::D", "e", "f::g"]);
}
