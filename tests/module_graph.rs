//! The crate's modules depend one way: the check `cargo modules dependencies --acyclic` makes, done here with
//! `syn` so that it runs with the tests (CI needs no extra tool). Every `crate::name` in a module's code (its
//! `use`s, paths in types and expressions, its submodules' code) is an edge from the module to `name`;
//! `#[cfg(test)]` items are left out, as they are from the firmware. The graph must have no cycle, and the layers
//! the design card asks for must hold: the stages never reach up into `config` or `pipeline`, and the shared
//! vocabulary (`vocab`) and the frame/model basics import no other module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

type Graph = BTreeMap<String, BTreeMap<String, String>>; // module -> (module it uses -> first file that does)

/// Modules that wire or compose the stages, and the commands built on them: only these may use `config`,
/// `pipeline` and the other commands.
const TOP: [&str; 6] = ["config", "pipeline", "doctor", "eval", "adapt", "main"];
/// Modules that import no other module of the crate.
const LEAVES: [&str; 4] = ["vocab", "frame", "model", "notify"];

struct Uses<'a> {
    own: &'a str,
    found: BTreeSet<String>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl Uses<'_> {
    fn add(&mut self, name: String) {
        if name != self.own && name != "self" && name != "super" {
            self.found.insert(name);
        }
    }
    fn use_tree(&mut self, t: &syn::UseTree, at_crate: bool) {
        match t {
            syn::UseTree::Path(p) if !at_crate && p.ident == "crate" => self.use_tree(&p.tree, true),
            syn::UseTree::Path(p) if at_crate => self.add(p.ident.to_string()),
            syn::UseTree::Name(n) if at_crate => self.add(n.ident.to_string()),
            syn::UseTree::Rename(r) if at_crate => self.add(r.ident.to_string()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|i| self.use_tree(i, at_crate)),
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(m) => &m.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&u.tree, false);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let mut segs = p.segments.iter();
        if let (Some(first), Some(second)) = (segs.next(), segs.next()) {
            if first.ident == "crate" {
                self.add(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (`format!`, `matches!`, ...) are tokens, not syntax: read them as text.
        let text = m.tokens.to_string();
        for (i, _) in text.match_indices("crate ::") {
            let rest = text[i + "crate ::".len()..].trim_start();
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                self.add(name);
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// `src/a/b.rs` and `src/a/mod.rs` belong to module `a`; `src/lib.rs` to none (it only declares them).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib").then_some(name)
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

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut g = Graph::new();
    for f in files {
        let Some(module) = top_module(src, &f) else { continue };
        let text = std::fs::read_to_string(&f).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut v = Uses { own: &module, found: BTreeSet::new() };
        v.visit_file(&ast);
        let edges = g.entry(module.clone()).or_default();
        for to in v.found {
            edges.entry(to).or_insert_with(|| f.display().to_string());
        }
    }
    g
}

/// Every cycle found by a depth-first walk, each as the modules along it (first == last).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    fn walk(u: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        state.insert(u.to_string(), 1);
        stack.push(u.to_string());
        for v in g.get(u).map(|e| e.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            match state.get(&v) {
                Some(1) => {
                    let at = stack.iter().position(|s| *s == v).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(v);
                    out.push(c);
                }
                Some(_) => {}
                None => walk(&v, g, state, stack, out),
            }
        }
        stack.pop();
        state.insert(u.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut out = Vec::new();
    for m in g.keys() {
        if !state.contains_key(m) {
            walk(m, g, &mut state, &mut Vec::new(), &mut out);
        }
    }
    out
}

fn show(g: &Graph) -> String {
    g.iter().map(|(m, e)| format!("  {m} -> {}\n", e.keys().cloned().collect::<Vec<_>>().join(", "))).collect()
}

#[test]
fn modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    println!("module dependencies (crate::name uses outside #[cfg(test)]):\n{}", show(&g));
    let stages = ["source", "detect", "privacy", "expression", "uplink", "display", "board", "save", "track", "pixels"];
    for stage in stages {
        assert!(g.contains_key(stage), "module {stage} not found under src/: the check would be vacuous");
    }
    let found = cycles(&g);
    let why: Vec<String> = found
        .iter()
        .map(|c| {
            let step = |w: &[String]| format!("{} -> {} ({})", w[0], w[1], g[&w[0]][&w[1]]);
            c.windows(2).map(step).collect::<Vec<_>>().join("; ")
        })
        .collect();
    assert!(found.is_empty(), "module cycles:\n{}", why.join("\n"));
    for (m, edges) in &g {
        if TOP.contains(&m.as_str()) {
            continue;
        }
        for up in ["config", "pipeline", "doctor", "eval", "adapt"] {
            if let Some(file) = edges.get(up) {
                panic!("{m} uses {up} ({file}): a stage gets its own section of the config and reaches into no command");
            }
        }
    }
    for leaf in LEAVES {
        let e = g.get(leaf).unwrap_or_else(|| panic!("module {leaf} not found"));
        let uses: Vec<&String> = e.keys().collect();
        assert!(e.is_empty(), "{leaf} must import no other module of the crate, but uses {uses:?}");
    }
}

/// The check can fail: a cycle through a `use` group, a type path, a macro and a submodule file is found, and
/// `#[cfg(test)]` code is not counted.
#[test]
fn the_check_finds_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c; pub mod d;").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{frame::X, b::{self, Y}};\n").unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub mod inner;\n").unwrap();
    std::fs::write(src.join("b/inner.rs"), "fn f() -> crate::c::T { todo!() }\n").unwrap();
    std::fs::write(src.join("c.rs"), "fn g() { let _ = format!(\"{}\", crate::a::N); }\n").unwrap();
    std::fs::write(src.join("d.rs"), "#[cfg(test)]\nmod tests { use crate::a::Z; }\n").unwrap();
    let g = graph(src);
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into(), "a".into()]], "{}", show(&g));
    assert!(g["a"].contains_key("frame"));
    assert!(g["d"].is_empty(), "cfg(test) code was counted: {}", show(&g));
}
