//! No import cycles among the hub's modules: every `crate::` path in
//! `src/` (in `use` lines and in code) is an edge from the file's module to
//! the module the path names (its longest prefix that is a module), and the
//! graph those edges make must have no cycle. A module's own children and
//! ancestors are not counted (declaring `mod x` or naming an item of the
//! parent is how a folder is built, not a layer crossing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `src/lib.rs` -> "".
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code without `//` comments (doc comments name paths in prose).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path after `crate::`, with `crate::{a, b::c}` groups expanded one
/// level.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(path_prefix(item.trim()));
            }
        } else {
            out.push(path_prefix(rest));
        }
    }
    out
}

/// The leading `a::b::c` of `s`.
fn path_prefix(s: &str) -> String {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':').to_string()
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn related(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

#[test]
fn the_hubs_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for p in crate_paths(&code(&text)) {
            if let Some(to) = resolve(&p, &modules) {
                if to != from && !related(&from, &to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    // The check must see the layering it is about.
    for (from, to) in [
        ("edge::session", "ingest"),
        ("rounds::coordinator", "cluster::router"),
        ("app", "rounds::coordinator"),
    ] {
        assert!(
            edges.get(from).is_some_and(|t| t.contains(to)),
            "expected an edge {from} -> {to}; edges: {edges:#?}"
        );
    }
    if let Some(cycle) = find_cycle(&modules, &edges) {
        panic!(
            "import cycle among the hub's modules: {}",
            cycle.join(" -> ")
        );
    }
}

type Edges = BTreeMap<String, BTreeSet<String>>;

/// A cycle of `edges`, by depth-first search for a back edge.
fn find_cycle(modules: &BTreeSet<String>, edges: &Edges) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        m: &'a str,
        edges: &'a Edges,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        mark.insert(m, Mark::Open);
        stack.push(m);
        for to in edges.get(m).into_iter().flatten() {
            match mark.get(to.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = stack.iter().position(|s| *s == to).unwrap();
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(to.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(to, edges, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(m, Mark::Done);
        None
    }
    let mut mark: BTreeMap<&str, Mark> = modules.iter().map(|m| (m.as_str(), Mark::New)).collect();
    for m in modules {
        if mark[m.as_str()] == Mark::New {
            if let Some(cycle) = visit(m, edges, &mut mark, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let modules: BTreeSet<String> = ["a", "b", "a::c"].iter().map(|s| s.to_string()).collect();
    let paths = crate_paths(&code(
        "use crate::{b::X, a::c::Y}; // crate::z\nfn f() { crate::a::c::g() }",
    ));
    assert_eq!(paths, ["b::X", "a::c::Y", "a::c::g"]);
    assert_eq!(resolve("a::c::Y", &modules).as_deref(), Some("a::c"));
    assert_eq!(resolve("b::X", &modules).as_deref(), Some("b"));
    assert!(related("a", "a::c") && !related("a", "b"));
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let mut edges: Edges = BTreeMap::new();
    edges.insert("a".into(), set(&["b"]));
    edges.insert("b".into(), set(&["a::c"]));
    assert_eq!(find_cycle(&modules, &edges), None);
    edges.insert("a::c".into(), set(&["a"]));
    assert_eq!(
        find_cycle(&modules, &edges),
        Some(vec!["a".to_string(), "b".into(), "a::c".into(), "a".into()])
    );
}
