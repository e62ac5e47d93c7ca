//! The module graph: arrows point one way. Every `crate::` and `super::`
//! path in a source file (imports, paths in code and in doc links) is an
//! arrow to the module it names; a cycle among the modules of a layer fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of `src/` by its path, with its source.
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
                    .unwrap();
                let mut module: Module = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut out,
    );
    out
}

/// The module a path starting with `crate`, `super` or `self` names, seen
/// from `from`: the longest prefix that is a module.
fn resolve(modules: &BTreeMap<Module, String>, from: &Module, path: &[&str]) -> Option<Module> {
    let (mut base, mut rest) = match *path.first()? {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => (from.clone(), path),
        _ => return None,
    };
    while rest.first() == Some(&"super") {
        base.pop();
        rest = &rest[1..];
    }
    (0..=rest.len()).rev().find_map(|n| {
        let mut candidate = base.clone();
        candidate.extend(rest[..n].iter().map(|s| s.to_string()));
        modules.contains_key(&candidate).then_some(candidate)
    })
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules `source` (of module `from`) points to.
fn arrows(modules: &BTreeMap<Module, String>, from: &Module, source: &str) -> BTreeSet<Module> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| source_at(&bytes, i, p) && (i == 0 || !is_ident(bytes[i - 1])));
        let Some(_) = starts else {
            i += 1;
            continue;
        };
        // The path, then an optional `{a, b::c}` group.
        let mut j = i;
        while j < bytes.len() && (is_ident(bytes[j]) || bytes[j] == ':') {
            j += 1;
        }
        let path: String = bytes[i..j].iter().collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        if j < bytes.len() && bytes[j] == '{' {
            let end = bytes[j..]
                .iter()
                .position(|c| *c == '}')
                .map_or(bytes.len(), |e| j + e);
            let group: String = bytes[j + 1..end].iter().collect();
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or_default();
                let first = first.split_whitespace().next().unwrap_or_default();
                if !first.is_empty() && first != "self" {
                    let mut full = segments.clone();
                    full.push(first);
                    out.extend(resolve(modules, from, &full));
                }
            }
        }
        out.extend(resolve(modules, from, &segments));
        i = j.max(i + 1);
    }
    out.remove(from);
    out
}

fn source_at(chars: &[char], at: usize, text: &str) -> bool {
    text.chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// The cycles among `modules` under `layer` (empty for the whole crate).
fn cycles(modules: &BTreeMap<Module, String>, layer: &[&str]) -> Vec<Vec<String>> {
    let inside = |m: &Module| m.len() >= layer.len() && m.iter().zip(layer).all(|(a, b)| a == b);
    let graph: BTreeMap<Module, BTreeSet<Module>> = modules
        .iter()
        .filter(|(m, _)| inside(m))
        .map(|(m, src)| {
            (
                m.clone(),
                arrows(modules, m, src).into_iter().filter(inside).collect(),
            )
        })
        .collect();
    // Tarjan's strongly connected components.
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.insert(v, s.low[v].min(lw));
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                s.low.insert(v, s.low[v].min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_crate_has_no_import_cycle() {
    assert_eq!(cycles(&modules(), &[]), Vec::<Vec<String>>::new());
}

/// The modules under the services: the database and its write discipline,
/// the event bus, settings, metrics, limits, telemetry and the pieces they
/// are made of.
const CORE: &[&str] = &[
    "batch",
    "cache",
    "config",
    "db",
    "digest",
    "entity",
    "error",
    "events",
    "limits",
    "metrics",
    "sealing",
    "telemetry",
    "validate",
];

#[test]
fn nothing_below_the_services_points_up() {
    let modules = modules();
    let mut up = Vec::new();
    for (module, source) in &modules {
        if !module.first().is_some_and(|m| CORE.contains(&m.as_str())) {
            continue;
        }
        for target in arrows(&modules, module, source) {
            if target.first().is_some_and(|t| !CORE.contains(&t.as_str())) {
                up.push(format!("{} -> {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert_eq!(up, Vec::<String>::new());
}

#[test]
fn the_cycle_finder_sees_imports_groups_paths_and_doc_links() {
    let module = |path: &str, source: &str| {
        (
            path.split("::").map(String::from).collect::<Module>(),
            source.to_string(),
        )
    };
    let found = |sources: &[(&str, &str)]| {
        let map: BTreeMap<Module, String> = sources.iter().map(|(p, s)| module(p, s)).collect();
        cycles(&map, &["x"])
    };
    let a = ("x", "pub mod a; pub mod b;");
    assert_eq!(
        found(&[
            a,
            ("x::a", "use super::{b, c};"),
            ("x::b", "fn f() { crate::x::a::g() }")
        ]),
        vec![vec!["x::a".to_string(), "x::b".to_string()]]
    );
    assert_eq!(
        found(&[
            a,
            ("x::a", "/// See [`super::b::T`]."),
            ("x::b", "use super::a::Thing;")
        ])
        .len(),
        1
    );
    assert!(
        found(&[
            a,
            ("x::a", "use super::b::T;"),
            ("x::b", "use crate::y::Z;")
        ])
        .is_empty()
    );
}
