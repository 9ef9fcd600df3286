//! The reference patent's money-transfer app. Version 1 has three steps (recipient; amount and
//! source; confirm), version 2 (and later) four (recipient; date; amount and source; confirm).
//! A session carries the fields entered so far; the steps differ, so a session of one version
//! cannot be continued by the other.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use super::session::SessionData;
use crate::client::Req;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Recipient,
    Date,
    Amount,
    Confirm,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Recipient => "recipient",
            Step::Date => "date",
            Step::Amount => "amount",
            Step::Confirm => "confirm",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        [Step::Recipient, Step::Date, Step::Amount, Step::Confirm]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The form fields the user enters at this step.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Step::Recipient => &["recipient"],
            Step::Date => &["date"],
            Step::Amount => &["amount", "source"],
            Step::Confirm => &[],
        }
    }
}

/// The steps of a version, in order.
pub fn steps(version: &str) -> &'static [Step] {
    if version == "1" {
        &[Step::Recipient, Step::Amount, Step::Confirm]
    } else {
        &[Step::Recipient, Step::Date, Step::Amount, Step::Confirm]
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fields saved; `next` is the step the client goes to.
    Saved { next: Step },
    /// The transfer is done; the session is finished.
    Completed { receipt: SessionData },
}

/// Applies one step of `version` to a session. Errors carry an HTTP status and a reason.
pub fn apply(
    version: &str,
    step: Step,
    data: &mut SessionData,
    input: &Map<String, Value>,
) -> Result<Outcome, (u16, String)> {
    let order = steps(version);
    let pos = order.iter().position(|s| *s == step).ok_or_else(|| {
        (
            404,
            format!("version {version} has no step {}", step.name()),
        )
    })?;
    for earlier in &order[..pos] {
        for field in earlier.fields() {
            if !data.contains_key(*field) {
                return Err((400, format!("step {} needs {field} first", step.name())));
            }
        }
    }
    for field in step.fields() {
        match input.get(*field).and_then(Value::as_str) {
            Some(v) if !v.is_empty() => {
                data.insert((*field).to_string(), v.to_string());
            }
            _ => return Err((400, format!("missing field {field}"))),
        }
    }
    match order.get(pos + 1) {
        Some(next) => Ok(Outcome::Saved { next: *next }),
        None => Ok(Outcome::Completed {
            receipt: data.clone(),
        }),
    }
}

/// One step as a client saw it.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub step: String,
    pub status: u16,
    /// The `x-served-by` of the answer: which server produced it.
    pub served_by: Option<String>,
    /// The `x-mixmode` header, if the proxy rescued or gave up.
    pub mixmode: Option<String>,
}

/// A whole transfer as a client runs it: start at the first step, follow `next` until the
/// receipt. Stops at the first non-200 answer.
#[derive(Debug, Clone)]
pub struct TransferRun {
    pub steps: Vec<StepResult>,
    pub completed: bool,
}

/// Runs one transfer against `base_url` (e.g. Envoy's public listener), filling every field.
pub async fn run_transfer(base_url: &str, recipient: &str) -> Result<TransferRun> {
    run_transfer_with(base_url, recipient, Duration::ZERO).await
}

/// Like [`run_transfer`], with a think time between steps (a user reading each page).
pub async fn run_transfer_with(
    base_url: &str,
    recipient: &str,
    think: Duration,
) -> Result<TransferRun> {
    let mut run = TransferRun {
        steps: Vec::new(),
        completed: false,
    };
    let mut cookie: Option<String> = None;
    let mut step = Step::Recipient;
    for _ in 0..8 {
        let input = match step {
            Step::Recipient => json!({ "recipient": recipient }),
            Step::Date => json!({ "date": "2026-12-01" }),
            Step::Amount => json!({ "amount": "42.00", "source": "checking" }),
            Step::Confirm => json!({}),
        };
        let mut req = Req::post(
            format!("{base_url}/transfer/{}", step.name()),
            serde_json::to_vec(&input)?,
        )
        .header("content-type", "application/json");
        if let Some(c) = &cookie {
            req = req.header("cookie", format!("session={c}"));
        }
        let resp = req.send().await?;
        run.steps.push(StepResult {
            step: step.name().to_string(),
            status: resp.status,
            served_by: resp.header("x-served-by"),
            mixmode: resp.header("x-mixmode"),
        });
        if resp.status != 200 {
            return Ok(run);
        }
        let body = resp.json()?;
        if cookie.is_none() {
            cookie = Some(
                body.get("session")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("first step answered without a session: {body}"))?
                    .to_string(),
            );
        }
        if body.get("receipt").is_some() {
            run.completed = true;
            return Ok(run);
        }
        let next = body.get("next").and_then(Value::as_str).unwrap_or("");
        step = Step::from_name(next).ok_or_else(|| anyhow!("unknown next step {next:?}"))?;
        if !think.is_zero() {
            tokio::time::sleep(think).await;
        }
    }
    bail!("transfer did not finish in 8 steps: {:?}", run.steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn version_2_asks_for_a_date_version_1_does_not() {
        let mut d = SessionData::new();
        let r = apply(
            "1",
            Step::Recipient,
            &mut d,
            &input(json!({"recipient": "bob"})),
        );
        assert_eq!(r, Ok(Outcome::Saved { next: Step::Amount }));
        let mut d2 = SessionData::new();
        let r = apply(
            "2",
            Step::Recipient,
            &mut d2,
            &input(json!({"recipient": "bob"})),
        );
        assert_eq!(r, Ok(Outcome::Saved { next: Step::Date }));
        assert_eq!(
            apply("1", Step::Date, &mut d, &input(json!({"date": "x"})))
                .unwrap_err()
                .0,
            404
        );
        // Confirm before the amount: refused.
        assert_eq!(
            apply("1", Step::Confirm, &mut d, &Map::new())
                .unwrap_err()
                .0,
            400
        );
        let r = apply(
            "1",
            Step::Amount,
            &mut d,
            &input(json!({"amount": "1", "source": "s"})),
        );
        assert_eq!(
            r,
            Ok(Outcome::Saved {
                next: Step::Confirm
            })
        );
        assert!(matches!(
            apply("1", Step::Confirm, &mut d, &Map::new()),
            Ok(Outcome::Completed { .. })
        ));
    }
}
