//! The layout rules of ARCHITECTURE.md, checked on the sources: imports between the top-level
//! modules of each crate form no cycle, and rmi-core's leaves and edges stay leaves and edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it names (`crate::x`), per crate.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose `src/` is `src`. A module folder counts as one node,
/// with its `x.rs` beside it if it has one; `lib.rs`, `main.rs` and `bin/` are the crate's
/// root, not modules. A file's test module (`#[cfg(test)] mod …`, and what follows it) is left
/// out: tests may reach anywhere.
fn import_graph(src: &Path) -> Graph {
    let root = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let reexports = reexports(&root);
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).expect("read src/") {
        let path = entry.expect("dir entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main", "bin"].contains(&name.as_str()) {
            continue;
        }
        let mut uses = BTreeSet::new();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).expect("read source");
            // `crate::Item` re-exported from a module is an import of that module.
            uses.extend(
                crate_paths(&text)
                    .into_iter()
                    .map(|name| reexports.get(&name).cloned().unwrap_or(name)),
            );
        }
        uses.remove(&name);
        uses.remove("__private");
        // (`x.rs` and `x/` are one module: whichever comes first, the other adds to it.)
        graph.entry(name).or_default().extend(uses);
    }
    graph
}

/// Items the crate root re-exports (`pub use module::{Item, …};`), mapped to their module.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut rest = root;
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let end = rest.find(';').unwrap_or(rest.len());
        let statement = &rest[..end];
        rest = &rest[end..];
        let Some((module, items)) = statement.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            // `a::b::Item` and `Item as Alias` export their last name.
            let item = item.trim();
            let name = item.rsplit(" as ").next().unwrap_or(item);
            let name = name.rsplit("::").next().unwrap_or(name).trim();
            if !name.is_empty() && name != "self" && name != "*" {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).expect("read module folder") {
            files.extend(rust_files(&entry.expect("dir entry").path()));
        }
        files
    } else if path.extension().is_some_and(|e| e == "rs") {
        vec![path.to_owned()]
    } else {
        Vec::new()
    }
}

/// The first segment after every `crate::` in code (comments and test modules left out), with
/// `crate::{a, b::c}` groups expanded. A `#[cfg(test)]` on any other item (a helper, a
/// field) leaves the code after it in.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = text.lines().collect();
    let test_module = |at: usize| {
        lines[at].trim() == "#[cfg(test)]"
            && lines[at + 1..]
                .iter()
                .map(|line| line.trim())
                .find(|line| !line.is_empty() && !line.starts_with("#["))
                .is_some_and(|item| {
                    let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
                    item.starts_with("mod ")
                })
    };
    let end = (0..lines.len())
        .find(|&at| test_module(at))
        .unwrap_or(lines.len());
    let code: String = lines[..end]
        .iter()
        .filter(|line| !line.trim_start().starts_with("//"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `$crate::` and `some_crate::` are other crates.
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => return true,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty() && name != "self");
    found
}

/// A cycle in `graph`, as the path of modules around it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_cycle_between_top_level_modules_of_any_crate() {
    for krate in [".", "rmi-core", "rmi-macros", "rmi-naming", "rmi-cli"] {
        let graph = import_graph(&workspace().join(krate).join("src"));
        assert!(!graph.is_empty() || krate == "." || krate == "rmi-cli");
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{krate}: import cycle {} (see ARCHITECTURE.md)",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn core_leaves_import_nothing_above_them_and_its_edges_are_imported_by_nobody() {
    let graph = import_graph(&workspace().join("rmi-core/src"));
    for module in ["error", "uri", "protocol", "proxy", "daemon"] {
        assert!(graph.contains_key(module), "rmi-core has no {module}");
    }
    assert_eq!(graph["error"], BTreeSet::new(), "error is the bottom leaf");
    for leaf in ["uri", "protocol"] {
        let above: Vec<_> = graph[leaf].iter().filter(|m| *m != "error").collect();
        assert!(above.is_empty(), "{leaf} is a leaf but imports {above:?}");
    }
    for (module, uses) in &graph {
        for edge in ["proxy", "daemon"] {
            assert!(
                module == edge || !uses.contains(edge),
                "{module} imports {edge}, an edge nothing may import"
            );
        }
    }
}

#[test]
fn the_checker_sees_imports_groups_and_cycles() {
    let text = "use crate::error::Error;\nuse crate::{proxy::Proxy, protocol::{codec, frame}};\n\
                // crate::daemon in a comment\nlet x = $crate::foo; other_crate::bar;\n\
                #[cfg(test)]\nfn helper() {}\nfn after() { crate::uri::parse(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::transport;\n}";
    let found: Vec<_> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["error", "protocol", "proxy", "uri"]);
    // A module's file and its folder are one node: the imports of both count.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("m.rs"), "use crate::a;\nmod inner;").unwrap();
    std::fs::create_dir(src.path().join("m")).unwrap();
    std::fs::write(src.path().join("m/inner.rs"), "use crate::b;").unwrap();
    let graph = import_graph(src.path());
    assert_eq!(graph["m"], BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .iter()
        .map(|(m, u)| (m.to_string(), BTreeSet::from([u.to_string()])))
        .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let acyclic: Graph = [("a", "b"), ("b", "c")]
        .iter()
        .map(|(m, u)| (m.to_string(), BTreeSet::from([u.to_string()])))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
    let map = reexports(
        "pub use client::NameServerProxy;\npub use server::{\n    Api, ApiProxy as P,\n};",
    );
    assert_eq!(map["NameServerProxy"], "client");
    assert_eq!(map["P"], "server");
    assert_eq!(map["Api"], "server");
}
