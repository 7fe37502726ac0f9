//! Benchmark of the web dashboard (`convoy ui`) in headless Chromium, on a hub that knows
//! 10,000 clusters (declared in Git, assigned, no agents: synthetic registrations):
//! - the fleet page's first complete render (navigation start → the first page of rows,
//!   environment cards and state counts drawn), measured in the page;
//! - applying a filter (choosing an environment: the request, the answer and the redraw);
//! - bytes transferred for the first load (document, script, style, icon, API answers; gzip
//!   on the wire), from the browser's resource timing; goal under 300 KiB;
//! - event → visible: a hub event until the page shows it in its activity list, median and
//!   p99 over 100 events (hub and browser share this machine's clock).
//!
//! Peer, in the same run: `convoy clusters -o json`, the CLI's listing of the same 10,000.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench_ui`

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::browser::{Browser, dashboard};
use convoy_e2e::fleet_repo::generated_fleet;
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, workspace_binary};
use convoy_shared::identity::{Identity, Role};

const CLUSTERS: usize = 10_000;
const EVENTS: usize = 100;

/// Resolves with `performance.now()` (ms since navigation start) once the body carries
/// `data-ready="fleet"` and no fetch is in flight.
const READY: &str = r#"
const done = arguments[arguments.length - 1];
const ready = () => document.body && document.body.dataset.ready === 'fleet' && document.body.dataset.busy !== '1';
if (ready()) { done(performance.now()); return; }
const seen = new MutationObserver(() => { if (ready()) { seen.disconnect(); done(performance.now()); } });
seen.observe(document.documentElement, {attributes: true, subtree: true, childList: true});
"#;

/// Chooses environment `prod` in the filter and resolves with the milliseconds until the table
/// shows only prod's clusters and no fetch is in flight.
const FILTER: &str = r#"
const done = arguments[arguments.length - 1];
const select = document.querySelector('#filter-env');
const t0 = performance.now();
const shown = () => {
  const rows = [...document.querySelectorAll('#cluster-table tbody tr[data-cluster]')];
  return document.body.dataset.busy !== '1' && rows.length > 0
    && rows.every(r => r.textContent.includes('prod'));
};
const seen = new MutationObserver(() => { if (shown()) { seen.disconnect(); done(performance.now() - t0); } });
seen.observe(document.documentElement, {attributes: true, subtree: true, childList: true, characterData: true});
select.value = 'prod';
select.dispatchEvent(new Event('change', {bubbles: true}));
"#;

/// What the first load moved over the wire, from resource timing (the event stream, still
/// open, is not counted).
const BYTES: &str = r#"
const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
return entries.map(e => ({name: e.name, transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}));
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let repo = generated_fleet(dir.path(), CLUSTERS, 2);
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    eventually("the hub to know every cluster", || async { (hub.hub.cluster_infos().len() == CLUSTERS).then_some(()) })
        .await;
    let (cert, key) = ca.certs.leaf_paths(&Identity::User { name: "admin".into(), role: Role::Admin });
    let ca_cert = ca.certs.ca_cert();
    let args: Vec<&OsStr> = vec![
        "--hub".as_ref(),
        hub.address.as_ref(),
        "--ca".as_ref(),
        ca_cert.as_os_str(),
        "--cert".as_ref(),
        cert.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ];
    let (_ui, url) = dashboard(&args);

    // Peer: the CLI's listing of the same fleet.
    let t0 = Instant::now();
    let out =
        std::process::Command::new(workspace_binary("convoy")).args(&args).args(["clusters", "-o", "json"]).output()?;
    let cli = t0.elapsed();
    anyhow::ensure!(out.status.success(), "convoy clusters: {}", String::from_utf8_lossy(&out.stderr));

    let Some(browser) = Browser::start(1280, 900).await else { anyhow::bail!("no browser to measure with") };
    let mut first = Vec::new();
    let mut filter = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..5 {
        browser.client.goto("about:blank").await?;
        browser.client.goto(&format!("{url}/")).await?;
        let ready = browser.client.execute_async(READY, vec![]).await?;
        first.push(Duration::from_secs_f64(ready.as_f64().unwrap_or_default() / 1000.0));
        let rows = browser
            .client
            .execute("return document.querySelectorAll('#cluster-table tbody tr').length", vec![])
            .await?;
        anyhow::ensure!(rows.as_u64().unwrap_or(0) <= 500, "the page drew {rows} rows: it must page");
        if bytes.is_empty() {
            // The first, cold load: later ones revalidate the assets (304s, headers only).
            bytes = browser.client.execute(BYTES, vec![]).await?.as_array().cloned().unwrap_or_default();
        }
        let took = browser.client.execute_async(FILTER, vec![]).await?;
        filter.push(Duration::from_secs_f64(took.as_f64().unwrap_or_default() / 1000.0));
    }
    let sum = |key: &str| bytes.iter().map(|e| e[key].as_f64().unwrap_or(0.0)).sum::<f64>() / 1024.0;
    let (transfer, encoded, decoded) = (sum("transfer"), sum("encoded"), sum("decoded"));

    // Event → visible: hub events while the fleet page is open, in two batches of 50 (the
    // activity list keeps the last 50).
    browser.client.goto(&format!("{url}/")).await?;
    browser.client.execute_async(READY, vec![]).await?;
    let mut latencies = Vec::new();
    for batch in 0..EVENTS / 50 {
        for i in 0..50 {
            hub.hub.event(&format!("c-{:05}", i), "bench", format!("batch {batch} event {i}"));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let marker = format!("batch {batch} event 49");
        browser
            .until(
                "the batch's last event shown",
                &format!("document.querySelector('#events')?.textContent.includes('{marker}')"),
            )
            .await;
        let items = browser
            .client
            .execute(
                "return [...document.querySelectorAll('#events li')].map(li => [li.textContent, Number(li.dataset.at), Number(li.dataset.renderedAt)])",
                vec![],
            )
            .await?;
        for item in items.as_array().into_iter().flatten() {
            let text = item[0].as_str().unwrap_or_default();
            if !text.contains(&format!("batch {batch} ")) {
                continue;
            }
            let (at, shown) = (item[1].as_f64().unwrap_or(0.0), item[2].as_f64().unwrap_or(0.0));
            latencies.push(Duration::from_secs_f64(((shown - at).max(0.0)) / 1000.0));
        }
    }
    browser.close().await;
    hub.stop().await;

    let (first_median, first_p99) = median_p99(&mut first);
    let (filter_median, _) = median_p99(&mut filter);
    let (event_median, event_p99) = median_p99(&mut latencies);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("bench_ui: convoy ui in headless Chromium, {CLUSTERS} clusters (load average {})", load.trim());
    println!(
        "  fleet page, first complete render: median {:.0} ms (max of 5 {:.0} ms); peer `convoy clusters -o json`: {:.0} ms ({:.2}x)",
        ms(first_median),
        ms(first_p99),
        ms(cli),
        first_median.as_secs_f64() / cli.as_secs_f64()
    );
    println!("  filter by environment → table redrawn: median {:.0} ms", ms(filter_median));
    println!(
        "  first (cold) load over the wire: {transfer:.1} KiB transferred ({encoded:.1} KiB bodies compressed, {decoded:.1} KiB uncompressed), {} requests; goal < 300 KiB: {}",
        bytes.len(),
        if transfer < 300.0 { "met" } else { "missed" }
    );
    println!(
        "  event → visible in the activity list ({} events): median {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        ms(event_median),
        ms(event_p99)
    );
    Ok(())
}
