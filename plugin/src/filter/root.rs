//! The root context: configuration, metrics, the per-VM registry cache.

use crate::core::budget::Budget;
use crate::core::config::Config;
use crate::core::jobs::Jobs;
use crate::core::lookup::LookupCache;
use crate::core::registry::{self, Scope};
use crate::filter::abi;
use crate::filter::http::MixHttp;
use crate::filter::metrics::Metrics;
use crate::filter::needs;
use crate::filter::poller::Poller;
use crate::filter::shared::Shared;
use crate::filter::store::HostStore;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    /// One per VM (a VM is one thread): every root context of the VM charges the same bytes.
    static BUDGET: Rc<Budget> = Rc::new(Budget::default());
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
    poller: Option<Poller>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let (Some(shared), Some(p)) = (&self.shared, &mut self.poller) {
            p.on_http_call_response(token_id, num_headers, body_size, &shared.metrics);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = abi::get_buffer(abi::buffer::PLUGIN_CONFIGURATION, 0, size).unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                abi::log(
                    abi::level::ERROR,
                    &format!("mixmode: invalid configuration: {e}"),
                );
                return false;
            }
        };
        for w in config.warnings() {
            abi::log(abi::level::WARN, &format!("mixmode: {w}"));
        }
        let config = Rc::new(config);
        let metrics = Metrics::define();
        let scope = Scope::of(&config);
        if let Ok(n) = registry::count(&mut HostStore, &scope) {
            metrics.set_records(n);
        }
        abi::log(
            abi::level::INFO,
            &format!(
                "mixmode: configured for app {:?} in pool {:?}, peers via cluster {:?}",
                config.app, config.pool, config.redispatch.cluster
            ),
        );
        // Every VM ticks (the canary never does); the lease picks one per job and interval.
        match crate::core::lease::next_vm_id(&mut HostStore) {
            Ok(id) => {
                let poller = Poller::new(Jobs::new(id, Rc::clone(&config)));
                let period = poller.tick_period_ms();
                if !abi::set_tick_period_ms(u32::try_from(period).unwrap_or(1000)) {
                    abi::log(abi::level::WARN, "mixmode: could not set the tick period");
                }
                self.poller = Some(poller);
            }
            Err(e) => abi::log(
                abi::level::WARN,
                &format!("mixmode: no VM id, this VM runs no registry jobs: {e:?}"),
            ),
        }
        self.shared = Some(Rc::new(Shared {
            config,
            scope,
            metrics,
            cache: RefCell::new(LookupCache::default()),
            needs: RefCell::default(),
            budget: BUDGET.with(Rc::clone),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let (Some(shared), Some(p)) = (&self.shared, &mut self.poller) {
            needs::flush(shared, abi::now_ms());
            p.on_tick(&shared.metrics);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on None: an unconfigured plugin gets a context that does nothing.
        Some(Box::new(MixHttp::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
