//! Several plugins in one harness, as Envoy configures them: wasm filters in one chain (each
//! its own configuration, root id and vm_id), a singleton service, one shared-data store per
//! vm_id. Guests: `guests/chain/tag.wat` (marks what passes with its configuration) and
//! `guests/chain/ticker.wat` (a service writing shared data on tick), `guests/chain/queue.wat`
//! (registers, resolves and fills a shared queue).

mod common;
use common::*;
use host_harness::{Error, Harness, Plugin, RunningHarness};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const TAG: &str = include_str!("../guests/chain/tag.wat");
const TICKER: &str = include_str!("../guests/chain/ticker.wat");
const QUEUE: &str = include_str!("../guests/chain/queue.wat");

/// The tag filter with this configuration, in a VM of its own even under a shared `vm_id`
/// (its VM configuration differs): the guest keeps its tag in a global, which plugins sharing
/// a VM would share (see `plugins_of_one_vm_key_share_one_vm`).
fn tag(config: &str, vm_id: &str) -> Plugin {
    Plugin::wasm_bytes(TAG)
        .config(config)
        .vm_config(config)
        .name(config)
        .root_id(config)
        .vm_id(vm_id)
}

fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_filters_in_order_responses_in_reverse() {
    let up = upstream(|_| Reply::ok("from upstream")).await;
    // The first filter through the single-filter builder methods, the others with `filter`.
    let h = Harness::builder()
        .plugin_wasm_bytes(TAG)
        .plugin_config("one")
        .vm_id("v1")
        .filter(tag("two", "v2"))
        .filter(tag("three", "v3"))
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        let got = get(h.listener_addrs()[0], "/", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "from upstream");
        assert_eq!(got.all("x-order"), ["three", "two", "one"]);
    }
    for seen in up.requests() {
        assert_eq!(values(&seen.headers, "x-order"), ["one", "two", "three"]);
    }
    assert_eq!(up.requests().len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_of_different_vm_ids_are_apart() {
    let up = upstream(|_| Reply::ok("")).await;
    let h = Harness::builder()
        .filter(tag("a", "vm-a"))
        .filter(tag("b", "vm-b"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    // Each filter reads back what it wrote itself: b wrote last but only into its own store.
    assert_eq!(got.all("x-saw"), ["b", "a"]);
    assert_eq!(h.shared_data_in("vm-a", "last").unwrap().0, b"a");
    assert_eq!(h.shared_data_in("vm-b", "last").unwrap().0, b"b");
    assert_eq!(
        h.shared_data("last").unwrap().0,
        b"a",
        "the first filter's store"
    );
    assert_eq!(h.shared_data_keys_in("vm-c"), Vec::<String>::new());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_of_one_vm_id_share_one_store() {
    let up = upstream(|_| Reply::ok("")).await;
    let h = Harness::builder()
        .filter(tag("a", "shared"))
        .filter(tag("b", "shared"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    // b's write (after a's in the request) is what both read in the response.
    assert_eq!(got.all("x-saw"), ["b", "b"]);
    assert_eq!(h.shared_data_in("shared", "last").unwrap().0, b"b");
    h.shutdown().await;
}

/// Envoy runs plugins of one `vm_id`, code and VM configuration in one VM per thread, each its
/// own root context: the guest's globals are common, so the second `on_configure` overwrote
/// the tag the first one kept (Envoy: `plugins::envoy_runs_plugins_of_one_vm_id_code_and_vm_configuration_in_one_vm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_of_one_vm_key_share_one_vm() {
    let up = upstream(|_| Reply::ok("")).await;
    let same = |config: &str| {
        Plugin::wasm_bytes(TAG)
            .config(config)
            .name(config)
            .root_id(config)
            .vm_id("same")
    };
    let h = Harness::builder()
        .filter(same("a"))
        .filter(same("b"))
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.all("x-order"), ["b", "b"]);
    assert_eq!(up.requests()[0].header("x-order"), Some("b"));
    h.shutdown().await;
}

/// In a shared VM each plugin still has its own root context: an SDK filter keeping its
/// configuration there (the SDK's http_config example) sees its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_filters_sharing_a_vm_keep_their_own_root_contexts() {
    let up = upstream(|_| Reply::ok("")).await;
    let config = |c: &str| {
        Plugin::wasm(guest("http_config"))
            .config(c)
            .root_id(c)
            .vm_id("same")
    };
    let h = Harness::builder()
        .filter(config("first"))
        .filter(config("second"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.all("custom-header"), ["second", "first"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_stops_the_chain_and_goes_back_through_the_filters_before_it() {
    let up = upstream(|_| Reply::ok("never")).await;
    let h = Harness::builder()
        .filter(tag("first", "v"))
        .filter(tag("!stop", "v"))
        .filter(tag("never", "v"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.text(), "!stop");
    // Envoy's encoder chain: the replying filter, then the ones before it; the third filter
    // never saw the request, so it gets no response callback either.
    assert_eq!(got.all("x-order"), ["!stop", "first"]);
    assert!(up.requests().is_empty());
    h.shutdown().await;
}

/// A filter that pauses its request headers holds the rest of the chain: while the probe
/// waits for its side call, the filter after it has not run (its shared-data write is absent
/// when the side upstream answers); once the probe resumes, the request goes on through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_filter_holds_the_rest_of_the_chain() {
    let up = upstream(|_| Reply::ok("through")).await;
    let harness: Arc<OnceLock<Arc<RunningHarness>>> = Arc::new(OnceLock::new());
    let seen_while_paused = Arc::new(Mutex::new(Vec::new()));
    let side = {
        let (harness, seen) = (harness.clone(), seen_while_paused.clone());
        upstream(move |_| {
            let last = harness
                .get()
                .and_then(|h| h.shared_data_in("v", "last"))
                .map(|(v, _)| v);
            seen.lock().unwrap().push(last);
            Reply::ok("side")
        })
        .await
    };
    let h = Arc::new(
        Harness::builder()
            .filter(Plugin::wasm(guest("probe")).vm_id("p"))
            .filter(tag("after", "v"))
            .cluster("side", side.addr)
            .listener("127.0.0.1:0", up.addr)
            .start()
            .await
            .unwrap(),
    );
    let _ = harness.set(h.clone());
    let got = send(
        h.listener_addrs()[0],
        "POST",
        "/p",
        &[("x-probe", "pause-headers")],
        b"abc",
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "through");
    assert_eq!(*seen_while_paused.lock().unwrap(), [None]);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("x-order"), Some("after"));
    assert_eq!(seen.body, b"abc");
    assert_eq!(h.shared_data_in("v", "last").unwrap().0, b"after");
}

/// A local reply from the response phase goes straight to the client: the filters before the
/// one that sent it (their encoders still to run) see nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_the_response_phase_skips_the_filters_still_to_run() {
    let up = upstream(|_| Reply::ok("from upstream")).await;
    let h = Harness::builder()
        .filter(tag("first", "v"))
        .filter(tag("?late", "v"))
        .filter(tag("last", "v"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 418);
    assert_eq!(got.text(), "?late");
    assert_eq!(got.all("x-order"), Vec::<&str>::new());
    assert_eq!(up.requests().len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_shares_the_store_of_its_vm_id_with_the_filters() {
    let up = upstream(|_| Reply::ok("")).await;
    let h = Harness::builder()
        .service(
            Plugin::wasm_bytes(TICKER)
                .config("from the service")
                .name("ticker")
                .vm_id("shared"),
        )
        .filter(tag("same", "shared"))
        .filter(tag("other", "elsewhere"))
        .workers(2)
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.shared_data_in("shared", "tick").is_none() {
        assert!(Instant::now() < deadline, "the service never ticked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 200);
    // Only the filter of the service's vm_id sees what the service wrote.
    assert_eq!(got.all("x-tick"), ["from the service"]);
    assert!(h.shared_data_in("elsewhere", "tick").is_none());
    // One VM on the main thread ticks (the canary does not live on); no HTTP stream reached it.
    let ticks: Vec<_> = h
        .log_lines()
        .into_iter()
        .filter(|l| l.plugin == "ticker" && l.message == "ticked")
        .collect();
    assert!(!ticks.is_empty());
    assert!(ticks.iter().all(|l| l.instance == "main"), "{ticks:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_of_services_only_forwards_unfiltered() {
    let up = upstream(|_| Reply::ok("plain")).await;
    let h = Harness::builder()
        .service(Plugin::wasm_bytes(TICKER).config("x"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = send(h.listener_addrs()[0], "POST", "/p", &[], b"body")
        .await
        .unwrap();
    assert_eq!(got.text(), "plain");
    assert_eq!(up.requests()[0].body, b"body");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_a_module_is_an_error() {
    let err = Harness::builder()
        .filter(Plugin::default().name("nameless"))
        .listener_without_upstream("127.0.0.1:0")
        .start()
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("plugin nameless has no module"),
        "{err}"
    );
}

/// Queues are registered under the registrant's vm_id: a plugin of another vm_id does not find
/// it in its own, one of the same vm_id (in a VM of its own) does and fills it, and the
/// registrant is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_found_in_their_vm_id_only() {
    let up = upstream(|_| Reply::ok("")).await;
    let queue = |config: &str, vm_id: &str| {
        Plugin::wasm_bytes(QUEUE)
            .config(config)
            .vm_config(config)
            .name(config)
            .vm_id(vm_id)
    };
    let h = Harness::builder()
        .filter(queue("ra", "a"))
        .filter(queue("ub", "b"))
        .filter(queue("ua", "a"))
        .listener("127.0.0.1:0", up.addr)
        .start()
        .await
        .unwrap();
    let got = get(h.listener_addrs()[0], "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        values(&up.requests()[0].headers, "x-resolve"),
        ["0", "1", "0"]
    );
    // Both items reach the registrant (whichever of its VMs registered last).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dequeued: Vec<_> = h
            .log_lines()
            .into_iter()
            .filter(|l| l.message == "dequeued")
            .map(|l| l.plugin)
            .collect();
        if dequeued.len() == 2 {
            assert_eq!(dequeued, ["ra", "ra"]);
            break;
        }
        assert!(Instant::now() < deadline, "dequeued: {dequeued:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.shutdown().await;
}

/// A refusal names the plugin of the chain that refused, with its log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_filter_of_a_chain_is_named() {
    let err = Harness::builder()
        .filter(tag("fine", "v"))
        .filter(Plugin::wasm(guest("probe")).config("refuse").name("picky"))
        .listener_without_upstream("127.0.0.1:0")
        .start()
        .await
        .err()
        .unwrap();
    match &err {
        Error::Refused {
            callback, plugin, ..
        } => {
            assert_eq!(*callback, "proxy_on_configure");
            assert_eq!(plugin, "picky");
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .starts_with("the plugin \"picky\" refused to start"),
        "{err}"
    );
    assert!(err
        .logs()
        .iter()
        .any(|l| l.plugin == "picky" && l.message == "bad configuration: refuse"));
}
