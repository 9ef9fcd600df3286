//! The registry's periodic jobs in the host: `core::jobs::Jobs` decides, this carries its
//! actions out. Run from `on_tick` of every VM (main thread and workers); each poll is a call
//! from the root context, whose answer comes back to the same VM.

use crate::core::jobs::{JobAction, Jobs, Level};
use crate::filter::abi::{self, buffer, level, map};
use crate::filter::metrics::Metrics;
use crate::filter::store::HostStore;

pub struct Poller {
    jobs: Jobs,
}

impl Poller {
    pub fn new(jobs: Jobs) -> Self {
        Poller { jobs }
    }

    pub fn tick_period_ms(&self) -> u64 {
        self.jobs.tick_period_ms()
    }

    pub fn on_tick(&mut self, metrics: &Metrics) {
        let actions = self.jobs.on_tick(&mut HostStore, abi::now_ms());
        self.carry_out(actions, metrics);
    }

    /// Handles a call's answer; false if the token was not one of ours.
    pub fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        metrics: &Metrics,
    ) -> bool {
        // Read nothing for a call that is not ours.
        if !self.jobs.owns(token) {
            return false;
        }
        // A reset call has no headers (docs/envoy-facts.md#response-phase-and-calls).
        let status = if num_headers == 0 {
            None
        } else {
            abi::get_header(map::CALL_RESPONSE_HEADERS, ":status")
                .and_then(|s| crate::core::signal::parse_status(&s))
        };
        let body = if status.is_some() && body_size > 0 {
            abi::get_buffer(buffer::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = abi::now_ms();
        match self
            .jobs
            .on_call_answer(&mut HostStore, token, status, &body, now)
        {
            Some(actions) => {
                self.carry_out(actions, metrics);
                true
            }
            None => false,
        }
    }

    fn carry_out(&mut self, actions: Vec<JobAction>, metrics: &Metrics) {
        for action in actions {
            match action {
                JobAction::Dispatch {
                    cluster,
                    headers,
                    body,
                    timeout_ms,
                    what,
                } => match abi::dispatch_http_call(&cluster, &headers, body.as_deref(), timeout_ms)
                {
                    Ok(token) => self.jobs.on_dispatched(token, what),
                    // Unknown cluster, bad headers: no callback will come. The actions of a
                    // refusal are logs and counts, never another call.
                    Err(status) => {
                        let why = format!("dispatch via cluster {cluster:?} refused: {status}");
                        let more = self.jobs.on_dispatch_refused(what, &why, &mut HostStore);
                        self.carry_out(more, metrics);
                    }
                },
                JobAction::Log { level, text } => abi::log(host_level(level), &text),
                JobAction::Count(c) => metrics.count(c),
                JobAction::SetRecords(n) => metrics.set_records(n),
            }
        }
    }
}

fn host_level(l: Level) -> u32 {
    match l {
        Level::Debug => level::DEBUG,
        Level::Info => level::INFO,
        Level::Warn => level::WARN,
    }
}
