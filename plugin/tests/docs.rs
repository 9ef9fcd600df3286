//! The repository's docs stay true to the code: every `docs/<page>.md#<heading>` a file cites
//! exists, every link between the pages resolves, every test docs/envoy-facts.md names exists,
//! and the README and docs/design.md list exactly the metrics the filter defines. Run by
//! `just lint` (`cargo test -p mixmode --test docs`).
#![cfg(test)] // helpers included: see clippy.toml

#[path = "../src/filter/metric_names.rs"]
mod metric_names;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown page's headings (outside code blocks).
fn anchors(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Source and text files of the repository (not build output, not fuzz corpora).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !name.starts_with('.')
                && !["target", "corpus", "artifacts", "results", "node_modules"]
                    .contains(&name.as_str())
            {
                files(&p, out);
            }
        } else if ["rs", "toml", "md", "yaml", "sh", "py"]
            .iter()
            .any(|x| name.ends_with(&format!(".{x}")))
            || name == "justfile"
        {
            out.push(p);
        }
    }
}

/// `(page, anchor)` of each `docs/<page>.md#<anchor>` (or without anchor) in `text`.
fn cited(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        rest = &rest[i + "docs/".len()..];
        let page: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
            .collect();
        let page = page.trim_end_matches('.');
        if !page.ends_with(".md") {
            continue;
        }
        let after = &rest[page.len()..];
        let anchor = after.strip_prefix('#').map(|a| {
            a.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        });
        out.push((page.to_string(), anchor));
    }
    out
}

#[test]
fn every_docs_reference_resolves() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.iter().any(|p| p.ends_with("plugin/src/lib.rs")),
        "the walk found no sources"
    );
    let mut broken = Vec::new();
    let mut seen = 0;
    for path in &all {
        let text = read(path);
        for (page, anchor) in cited(&text) {
            seen += 1;
            let target = root.join("docs").join(&page);
            if !target.is_file() {
                broken.push(format!("{}: docs/{page} does not exist", path.display()));
                continue;
            }
            if let Some(a) = anchor {
                if !anchors(&read(&target)).contains(&a) {
                    broken.push(format!(
                        "{}: docs/{page}#{a}: no such heading",
                        path.display()
                    ));
                }
            }
        }
    }
    // Links between the pages: `](page.md#anchor)`, `](#anchor)`, `](../README.md#anchor)`.
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        let path = entry.path();
        let text = read(&path);
        for link in text.split("](").skip(1) {
            let target = &link[..link.find(')').unwrap_or(0)];
            if target.starts_with("http") || target.is_empty() {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            seen += 1;
            let file = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            if !file.exists() {
                broken.push(format!("{}: link {target}: no such file", path.display()));
            } else if !anchor.is_empty() && !anchors(&read(&file)).contains(anchor) {
                broken.push(format!(
                    "{}: link {target}: no such heading",
                    path.display()
                ));
            }
        }
    }
    assert!(seen > 10, "found only {seen} references");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn tests_named_in_envoy_facts_exist() {
    let root = root();
    let facts = read(&root.join("docs/envoy-facts.md"));
    let mut sources = String::new();
    let mut all = Vec::new();
    files(&root, &mut all);
    for p in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        sources.push_str(&read(p));
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for row in facts.lines().filter(|l| l.starts_with('|')) {
        // Tables are `fact | the code | tests…`: the cells after the second name tests.
        let cells: Vec<&str> = row.split('|').collect();
        let columns = cells.len().saturating_sub(2);
        for cell in cells.iter().skip(3).take(columns.saturating_sub(2)) {
            for name in cell.split('`').skip(1).step_by(2) {
                let name = name.rsplit("::").next().unwrap_or(name);
                let is_test_name = name.len() > 12
                    && name.contains('_')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !is_test_name || name.starts_with("allow_") {
                    continue;
                }
                checked += 1;
                if !sources.contains(&format!("fn {name}")) {
                    missing.push(name.to_string());
                }
            }
        }
    }
    assert!(checked > 30, "checked only {checked} names");
    assert!(
        missing.is_empty(),
        "docs/envoy-facts.md names tests that do not exist: {missing:?}"
    );
}

/// The backticked names in the section of `page` under `heading`.
fn names_in_section(page: &str, heading: &str) -> BTreeSet<String> {
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    let section = &page[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|n| n.trim_start_matches("mixmode.").to_string())
        .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

#[test]
fn readme_and_design_list_the_metrics_the_filter_defines() {
    let root = root();
    let defined: BTreeSet<String> = metric_names::COUNTERS
        .iter()
        .chain(metric_names::GAUGES.iter())
        .map(|s| s.to_string())
        .collect();
    assert!(defined.contains("redispatch_ok"));
    let readme = read(&root.join("README.md"));
    assert!(
        readme.contains(&format!("`wasmcustom.{}<name>`", metric_names::PREFIX)),
        "README names the metrics' prefix"
    );
    for (page, heading) in [
        ("README.md", "## Metrics"),
        ("docs/design.md", "## Metrics"),
    ] {
        let listed = names_in_section(&read(&root.join(page)), heading);
        let missing: Vec<_> = defined.difference(&listed).collect();
        let unknown: Vec<_> = listed.difference(&defined).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{page} {heading}: missing {missing:?}, not defined by the filter {unknown:?}"
        );
    }
}

/// The per-version counters (docs/design.md#draining-by-demand): the names the core builds are the
/// ones the test kit and the docs use.
#[test]
fn per_version_counter_names_match_the_list() {
    use mixmode::core::demand::{counter_name, OTHER_COUNTER};
    assert_eq!(
        counter_name("2"),
        format!("{}2", metric_names::NEEDED_PREFIX)
    );
    assert_eq!(OTHER_COUNTER, metric_names::NEEDED_OTHER);
    let root = root();
    for page in ["README.md", "docs/design.md"] {
        let text = read(&root.join(page));
        for name in ["needed.<version>", metric_names::NEEDED_OTHER] {
            assert!(
                text.contains(&format!("{}{name}`", metric_names::PREFIX)),
                "{page} does not name the counter {}{name}",
                metric_names::PREFIX
            );
        }
    }
}
