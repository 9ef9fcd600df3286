//! Every scenario runs on both hosts. A scenario is a `pub async fn name<H: Host>()` in
//! tests/src/scenarios/; it runs where a test file instantiates it for a host, through
//! `all_scenarios!(Host)` or a `scenario_tests!(Host: module::name, …)` list. A scenario left out
//! of those lists would silently never run: this test reads the sources and fails then.
//!
//! A scenario that can only run on Envoy says so in its doc comment, with the reason:
//! `/// Envoy only: <why the harness cannot show it>`.
#![cfg(test)] // helpers included: see clippy.toml

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const HOSTS: [&str; 2] = ["EnvoyHost", "HarnessHost"];
const ENVOY_ONLY: &str = "Envoy only:";

/// `module::name` of a scenario.
type Scenario = String;

#[derive(Debug, Default)]
struct Declared {
    /// Each scenario, with its `Envoy only:` reason if it states one.
    scenarios: BTreeMap<Scenario, Option<String>>,
}

/// The scenarios a module's source declares.
fn declared_in(module: &str, src: &str, out: &mut Declared) {
    let mut doc: Vec<&str> = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim());
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub async fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let generic: String = rest[name.len()..]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if generic.starts_with("<H:Host>") {
                let reason = doc
                    .iter()
                    .find_map(|d| d.strip_prefix(ENVOY_ONLY))
                    .map(|r| r.trim().to_string());
                out.scenarios.insert(format!("{module}::{name}"), reason);
            }
        }
        doc.clear();
    }
}

/// The `module::name` entries of each macro invocation in a test file's code (comments
/// skipped), by host; `all_scenarios!(Host)` stands for `all`, the list in its definition.
fn runs_in(src: &str, all: &[Scenario], runs: &mut BTreeMap<String, Vec<Scenario>>) {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    loop {
        let next = ["scenario_tests!(", "all_scenarios!("]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min();
        let Some((i, mac)) = next else { break };
        let open = i + mac.len();
        let close = open + rest[open..].find(')').unwrap();
        let body = &rest[open..close];
        rest = &rest[close..];
        let (host, list) = body.split_once(':').unwrap_or((body, ""));
        let entry = runs.entry(host.trim().to_string()).or_default();
        if mac.starts_with("all_scenarios") {
            entry.extend(all.iter().cloned());
        } else {
            entry.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| s.contains("::"))
                    .map(str::to_string),
            );
        }
    }
}

/// The list inside `macro_rules! all_scenarios`.
fn all_scenarios_list(mod_rs: &str) -> Vec<Scenario> {
    let def = &mod_rs[mod_rs.find("macro_rules! all_scenarios").unwrap()..];
    let head = "scenario_tests!($host:";
    let open = def.find(head).unwrap() + head.len();
    let close = open + def[open..].find(')').unwrap();
    def[open..close]
        .split(',')
        .map(str::trim)
        .filter(|s| s.contains("::"))
        .map(str::to_string)
        .collect()
}

/// What is wrong: scenarios not run on a host (without a stated reason), run twice on one host,
/// or listed but not declared.
fn problems(declared: &Declared, runs: &BTreeMap<String, Vec<Scenario>>) -> Vec<String> {
    let mut out = Vec::new();
    for (scenario, reason) in &declared.scenarios {
        for host in HOSTS {
            let n = runs
                .get(host)
                .map_or(0, |l| l.iter().filter(|s| *s == scenario).count());
            match (n, host, reason) {
                (0, "HarnessHost", Some(r)) if !r.is_empty() => {}
                (0, "HarnessHost", Some(_)) => {
                    out.push(format!("{scenario}: `{ENVOY_ONLY}` without a reason"))
                }
                (0, _, _) => out.push(format!("{scenario} never runs on {host}")),
                (1, _, _) => {}
                (n, _, _) => out.push(format!("{scenario} runs {n} times on {host}")),
            }
        }
        if reason.is_some()
            && runs
                .get("HarnessHost")
                .is_some_and(|l| l.contains(scenario))
        {
            out.push(format!(
                "{scenario} says `{ENVOY_ONLY}` but runs on the harness"
            ));
        }
    }
    let declared_names: BTreeSet<&Scenario> = declared.scenarios.keys().collect();
    for (host, list) in runs {
        for s in list {
            if !declared_names.contains(s) {
                out.push(format!("{host} runs {s}, which is not a scenario"));
            }
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_scenario_runs_on_both_hosts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenarios_dir = root.join("src/scenarios");
    let mut declared = Declared::default();
    let mut files: Vec<_> = std::fs::read_dir(&scenarios_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for path in &files {
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        declared_in(&module, &read(path), &mut declared);
    }
    let all = all_scenarios_list(&read(&scenarios_dir.join("mod.rs")));

    let mut runs = BTreeMap::new();
    let mut test_files: Vec<_> = std::fs::read_dir(root.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    test_files.sort();
    for path in test_files
        .iter()
        .filter(|p| !p.ends_with("scenario_lists.rs"))
    {
        runs_in(&read(path), &all, &mut runs);
    }

    // The scan found what is there (a broken parser would find nothing and pass).
    assert!(
        declared
            .scenarios
            .contains_key("rescue::rescue_post_body_byte_for_byte"),
        "{declared:?}"
    );
    assert!(declared.scenarios.len() >= 40, "{declared:?}");
    let problems = problems(&declared, &runs);
    assert!(
        problems.is_empty(),
        "scenarios not run on both hosts (list them in all_scenarios! in \
         tests/src/scenarios/mod.rs, or in both hosts' scenario_tests! lists):\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_scenario_left_out_is_found() {
    let mut declared = Declared::default();
    declared_in(
        "m",
        "/// Runs.\npub async fn listed<H: Host>() {}\n\
         pub async fn forgotten<H: Host>() {}\n\
         /// Envoy only: the harness has no process to restart.\n\
         #[allow(unused)]\npub async fn restart<H: Host>() {}\n\
         /// Envoy only:\npub async fn no_reason<H: Host>() {}\n\
         pub async fn helper(x: u32) {}\n",
        &mut declared,
    );
    assert_eq!(declared.scenarios.len(), 4, "{declared:?}");
    let all = vec!["m::listed".to_string()];
    let mut runs = BTreeMap::new();
    runs_in(
        "mixmode_tests::all_scenarios!(EnvoyHost);\n\
         mixmode_tests::all_scenarios!(HarnessHost);\n\
         mixmode_tests::scenario_tests!(EnvoyHost:\n    m::restart,\n    m::no_reason,\n    m::gone,\n);",
        &all,
        &mut runs,
    );
    let p = problems(&declared, &runs);
    assert_eq!(
        p,
        vec![
            "m::forgotten never runs on EnvoyHost",
            "m::forgotten never runs on HarnessHost",
            "m::no_reason: `Envoy only:` without a reason",
            "EnvoyHost runs m::gone, which is not a scenario",
        ],
    );
}
