//! The layering is checked, not hoped for (ARCHITECTURE.md principle 13).
//!
//! Reads `src/` and fails when
//! 1. a module below the assembly layer (`main.rs`, `cli/`, `daemon.rs`, `config/`) refers to
//!    `crate::config`: `config` builds each module's own settings types and hands them down;
//!    nothing below it reads the configuration;
//! 2. a module refers to one in a higher layer ([`LAYERS`]: assembly → services → core →
//!    leaves), or a top-level module is in no layer;
//! 3. the top-level modules' references (`use crate::X`, `crate::X::…`) form a cycle;
//! 4. a module re-exports another top-level module's item (`pub use crate::X::…`): each type
//!    has one home and one name, and callers import it from there (a module's facade over its
//!    own submodules, `pub use self::…`, is fine).
//!
//! Test code (`tests.rs` files and everything after a `#[cfg(test)]` line) and comments are
//! not counted: fixtures may load a configuration.
//!
//! There is no exception list: a new edge that breaks a rule is a design question, answered by
//! moving a type to the module that owns it (usually down), not by allowing the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom (ARCHITECTURE.md). A module may refer to modules of its own layer
/// or below, never above; `top_level_modules_form_no_cycle` keeps each layer acyclic. A new
/// top-level module must be placed here (`every_module_has_a_layer`).
const LAYERS: &[(&str, &[&str])] = &[
    ("assembly", &["main", "cli", "daemon", "config"]),
    (
        "services",
        &[
            "server",
            "relay",
            "upstream",
            "sim",
            "doctor",
            "spool",
            "dmarc_report",
            "http",
        ],
    ),
    ("core", &["smtp", "message", "dkim", "dns"]),
    (
        "leaves",
        &[
            "allow_list",
            "budget",
            "domain_name",
            "regular_file",
            "health",
            "metrics",
            "secret",
            "ses_password",
            "tls",
            "users",
        ],
    ),
];

/// The assembly layer: may import anything.
const ASSEMBLY: &[&str] = LAYERS[0].1;

/// Depth of a module's layer (0 = assembly), if it has one.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
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

/// The top-level module a file belongs to: `src/a.rs` and `src/a/**` are `a`; `lib.rs` is the
/// crate root (`None`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The code of a file without comments and test code.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match t.find("//") {
            Some(at) if !t[..at].contains('"') => &t[..at],
            _ => t,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// The top-level modules a line refers to: `crate::x` and each name in `crate::{x, y::z}`.
fn referenced(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

/// Every (from, to) edge with a sample location.
fn edges() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = BTreeMap::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line_no, line) in code_lines(&text) {
            for to in referenced(&line) {
                if to != from {
                    out.entry((from.clone(), to)).or_insert_with(|| {
                        format!("{}:{line_no}", file.strip_prefix(&src).unwrap().display())
                    });
                }
            }
        }
    }
    out
}

/// The other top-level module a line re-exports from (`pub use crate::X…`, any `pub(…)`), if
/// it is not the file's own module.
fn foreign_reexport(from: &str, line: &str) -> Option<String> {
    let rest = line.strip_prefix("pub")?;
    let rest = match rest.strip_prefix('(') {
        Some(vis) => &vis[vis.find(')')? + 1..],
        None => rest,
    };
    let rest = rest.trim_start().strip_prefix("use ")?.trim_start();
    if !rest.starts_with("crate::") {
        return None;
    }
    referenced(rest).into_iter().find(|to| to != from)
}

#[test]
fn each_type_has_one_home() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut offenders = Vec::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line_no, line) in code_lines(&text) {
            if let Some(to) = foreign_reexport(&from, &line) {
                offenders.push(format!(
                    "src/{}:{line_no}: {from} re-exports from {to}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "a type has one home and one name; import it from its module instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn nothing_below_the_assembly_layer_imports_config() {
    let offenders: Vec<String> = edges()
        .into_iter()
        .filter(|((from, to), _)| to == "config" && !ASSEMBLY.contains(&from.as_str()))
        .map(|((from, _), at)| format!("{from} imports crate::config (src/{at})"))
        .collect();
    assert!(
        offenders.is_empty(),
        "config builds each module's settings and hands them down; these modules read it \
         instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let all = edges();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in all.keys() {
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    // Depth-first search; a back edge closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle);
            return;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    let described: Vec<String> = cycles
        .iter()
        .map(|c| {
            let hops: Vec<String> = c
                .windows(2)
                .map(|w| {
                    format!(
                        "{} -> {} (src/{})",
                        w[0],
                        w[1],
                        all[&(w[0].clone(), w[1].clone())]
                    )
                })
                .collect();
            hops.join(", ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "module cycles (imports must point down):\n{}",
        described.join("\n")
    );
}

#[test]
fn imports_point_down_the_layers() {
    let offenders: Vec<String> = edges()
        .into_iter()
        .filter_map(|((from, to), at)| {
            let (f, t) = (layer_of(&from)?, layer_of(&to)?);
            (t < f).then(|| {
                format!(
                    "{from} ({}) imports {to} ({}) at src/{at}",
                    LAYERS[f].0, LAYERS[t].0
                )
            })
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "imports must point down (assembly → services → core → leaves):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut unplaced: BTreeSet<String> = BTreeSet::new();
    for file in &files {
        if let Some(m) = module_of(&src, file)
            && layer_of(&m).is_none()
        {
            unplaced.insert(m);
        }
    }
    assert!(
        unplaced.is_empty(),
        "place these modules in LAYERS: {unplaced:?}"
    );
}

#[test]
fn the_checker_sees_references() {
    assert_eq!(referenced("use crate::config::Snapshot;"), ["config"]);
    assert_eq!(
        referenced("use crate::{dkim::Algorithm, smtp, self};"),
        ["dkim", "smtp"]
    );
    assert_eq!(
        referenced("let x = crate::allow_list::is_loopback(ip) && crate::users::f();"),
        ["allow_list", "users"]
    );
    assert_eq!(
        foreign_reexport("config", "pub use crate::secret::{Secret, SecretEq};").as_deref(),
        Some("secret")
    );
    assert_eq!(
        foreign_reexport("doctor", "pub(crate) use crate::dns::lookup::Lookup;").as_deref(),
        Some("dns")
    );
    assert_eq!(
        foreign_reexport("dns", "pub use crate::dns::view::DnsView;"),
        None
    );
    assert_eq!(
        foreign_reexport("sim", "pub use self::dkim::DkimVerdict;"),
        None
    );
    assert_eq!(
        foreign_reexport("config", "use crate::secret::Secret;"),
        None
    );
    let lines = code_lines("// crate::config\nuse crate::a;\n#[cfg(test)]\nuse crate::b;\n");
    assert_eq!(lines.len(), 1);
    assert_eq!(referenced(&lines[0].1), ["a"]);
}
