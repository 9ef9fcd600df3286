//! The demo's short mode, end to end on the real Envoy: mixmode completes every transfer of the
//! rolling deploy while round robin loses some (the workload really mixes versions).

use std::process::Command;

#[test]
fn quick_demo_mixmode_completes_every_transfer_round_robin_does_not() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "demo --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    // The walkthrough shows one rescue before the numbers.
    assert!(stdout.contains("HTTP 409"), "{stdout}");
    assert!(stdout.contains("x-mixmode: redispatched"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let setup = |key: &str| {
        summary
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["setup"] == key)
            .unwrap_or_else(|| panic!("no {key} in {summary}"))
            .clone()
    };
    let mixmode = setup("mixmode");
    let round_robin = setup("round-robin");
    assert!(mixmode["completed"].as_u64().unwrap() > 50, "{mixmode}");
    assert_eq!(
        mixmode["failed"], 0,
        "mixmode lost transfers: {}",
        mixmode["failures"]
    );
    assert!(
        mixmode["rescued_steps"].as_u64().unwrap() > 0,
        "nothing was rescued"
    );
    // Drained by demand: the last wave's v1 server left once v1 was quiet; the earlier waves
    // while other v1 servers still served.
    assert!(
        mixmode["drain"].as_str().unwrap().starts_with("demand"),
        "{mixmode}"
    );
    let waves = mixmode["waves"].as_array().unwrap();
    let last = waves.last().unwrap()["why"].as_str().unwrap();
    assert!(last.starts_with("v1 not needed for"), "{last}");
    let first = waves.first().unwrap()["why"].as_str().unwrap();
    assert!(first.contains("still served by"), "{first}");
    assert_eq!(round_robin["drain"], "fixed 0.75 s");
    assert!(
        round_robin["failed"].as_u64().unwrap() > 0,
        "round robin lost nothing: the deploy never mixed versions"
    );
    let svg = std::fs::read_to_string(out.path().join("failures.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("wave 1"), "chart");
}
