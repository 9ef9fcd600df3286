//! The comparison table, as printed.

use crate::run::SetupResult;

pub fn render(results: &[SetupResult]) -> String {
    let header = [
        "setup",
        "drain",
        "transfers",
        "completed",
        "lost",
        "lost %",
        "409s seen",
        "re-sent",
        "rescued",
        "rescues per rescued session",
        "extra upstream rq",
        "p50 step ms",
        "p99 step ms",
        "lost by reason",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let reasons = if r.failures.is_empty() {
                "-".to_string()
            } else {
                r.failures
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                r.setup.clone(),
                r.drain.clone(),
                (r.completed + r.failed).to_string(),
                r.completed.to_string(),
                r.failed.to_string(),
                format!("{:.1}%", r.failure_rate * 100.0),
                r.mismatches.to_string(),
                r.resends.to_string(),
                r.rescued_steps.to_string(),
                if r.rescued_sessions == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", r.rescued_steps as f64 / r.rescued_sessions as f64)
                },
                r.extra_upstream.to_string(),
                format!("{:.2}", r.p50_step_ms),
                format!("{:.2}", r.p99_step_ms),
                reasons,
            ]
        })
        .collect();
    let mut out = grid(&header, rows, &[0, 1]);
    out.push(String::new());
    out.push(
        "409s seen: version errors the servers answered (Envoy's upstream_rq_409, pool and peers). \
         re-sent: Envoy retries, or mixmode re-dispatch attempts.\nrescued: steps a peer answered after \
         mixmode re-dispatched them; per rescued session: over the transfers that needed any. extra upstream rq: app requests the servers got beyond the users' steps."
            .to_string(),
    );
    out.join("\n")
}

/// Per run, per wave: the servers, how long they drained and why they left.
pub fn render_drains(results: &[SetupResult]) -> String {
    let header = [
        "setup",
        "drain",
        "wave",
        "servers",
        "drained s",
        "why they left",
    ];
    let rows = results
        .iter()
        .flat_map(|r| {
            r.waves.iter().enumerate().map(move |(i, w)| {
                vec![
                    r.setup.clone(),
                    r.drain.clone(),
                    format!("{}/{}", i + 1, r.waves.len()),
                    w.names.clone(),
                    format!("{:.2}", w.drained_s),
                    w.why.clone(),
                ]
            })
        })
        .collect();
    grid(&header, rows, &[0, 1, 3]).join("\n")
}

/// Per run, the step latencies by kind: a rescued step is two upstream requests, a `cookie`
/// step was hinted (mixmode+affinity); "in slowest 1%" says which kinds make the run's p99.
pub fn render_step_kinds(results: &[SetupResult]) -> String {
    let header = [
        "setup",
        "drain",
        "steps of kind",
        "steps",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "in slowest 1%",
    ];
    let rows = results
        .iter()
        .flat_map(|r| {
            r.step_kinds.iter().map(move |(kind, k)| {
                vec![
                    r.setup.clone(),
                    r.drain.clone(),
                    kind.clone(),
                    k.steps.to_string(),
                    format!("{:.2}", k.p50_ms),
                    format!("{:.2}", k.p90_ms),
                    format!("{:.2}", k.p99_ms),
                    k.in_top_1pct.to_string(),
                ]
            })
        })
        .collect();
    grid(&header, rows, &[0, 1, 2]).join("\n")
}

/// Columns padded to their widest cell; the `left` columns and the last left-aligned (names
/// and reasons), numbers right-aligned.
fn grid(header: &[&str], rows: Vec<Vec<String>>, left: &[usize]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if left.contains(&i) || i == last {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|s| s.to_string()).collect())];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-|-"),
    );
    for row in rows {
        out.push(line(row));
    }
    out
}
