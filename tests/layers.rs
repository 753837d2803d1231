//! The crate's modules stand in layers: `src/lib.rs` declares them lowest
//! first, and a module imports only from modules declared before it. A
//! reader can then follow the crate bottom-up, and no two modules import
//! each other. This test reads the sources and holds the code to that order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The modules `src/lib.rs` declares, in order.
fn declared(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            line.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_owned)
        })
        .collect()
}

/// The names `src/lib.rs` re-exports at the root, each to the module it
/// comes from: `pub use receiver::{config, layer};`, `pub use event::Event;`.
fn reexports(lib: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for line in lib.lines() {
        let Some(path) = line
            .trim()
            .strip_prefix("pub use ")
            .and_then(|rest| rest.strip_suffix(';'))
        else {
            continue;
        };
        let (module, rest) = path.split_once("::").expect("a path");
        let rest = rest.trim_start_matches('{').trim_end_matches('}');
        for name in rest.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or_default();
            if !name.is_empty() {
                names.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    names
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every `crate::<name>` in code (comments and doc comments skipped), with
/// its line number.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue; // `$crate::`, `some_crate::`
            }
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`: each item's first segment.
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let name = item.trim().split("::").next().unwrap_or_default();
                    if !name.is_empty() {
                        found.push((number + 1, name.to_owned()));
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((number + 1, name));
        }
    }
    found
}

#[test]
fn no_module_imports_one_declared_after_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = declared(&lib);
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let rank = |module: &str| order.iter().position(|m| m == module);
    let reexported = reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_string_lossy();
        let module = top.trim_end_matches(".rs");
        // The binary is a user of the library; lib.rs is the map itself.
        let Some(own) = rank(module) else { continue };
        let source = std::fs::read_to_string(&file).unwrap();
        for (line, name) in crate_paths(&source) {
            let target = reexported.get(&name).map_or(name.as_str(), String::as_str);
            let Some(theirs) = rank(target) else {
                continue; // a macro or an item of lib.rs's own
            };
            if theirs > own {
                wrong.push(format!(
                    "{}:{line}: `{module}` imports `{target}`, declared after it in lib.rs",
                    relative.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    let paths = crate_paths(
        "use crate::queue::RedisQueue;\n/// [`x`](crate::serve)\nlet a = $crate::event::X; // crate::serve\nuse crate::{Outcome, serve::Server};\n",
    );
    assert_eq!(
        paths,
        vec![
            (1, "queue".to_owned()),
            (4, "Outcome".to_owned()),
            (4, "serve".to_owned())
        ]
    );
    let lib = "mod a;\npub mod b;\n#[cfg(x)]\npub mod c;\npub use b::{One, two::Three};\n";
    assert_eq!(declared(lib), ["a", "b", "c"]);
    let names = reexports(lib);
    assert_eq!(names["One"], "b");
    assert_eq!(names["Three"], "b");
}
