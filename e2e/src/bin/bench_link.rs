//! Benchmark of the agent link: connect time (TCP + mutual TLS 1.3 + Hello until the hub's
//! answer) on loopback, next to a bare TLS handshake with the same certificates as its peer; and
//! the hub's memory per idle agent stream with 1,000 agents connected from this one process.
//!
//! Run: `cargo build --release -p convoy-hub -p convoy-e2e && target/release/bench_link`

use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_agent::link::LinkState;
use convoy_e2e::bench::{median_p99, ms, rss_kib};
use convoy_e2e::harness::{HubProcess, RunningAgent, TestCa, eventually};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::ListClustersRequest;
use convoy_shared::tls::HubAddress;

const CONNECT_SAMPLES: usize = 300;
const IDLE_STREAMS: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let ca = TestCa::new();
    let hub = HubProcess::start_logging(&ca.certs.0, "127.0.0.1:0", "warn,convoy_hub=info");
    let address = hub.address.clone();

    // Connect time: a fresh agent each time, until the hub has answered its Hello.
    let cert = ca.issue(Identity::Cluster("bench".into()));
    let mut link_times = Vec::with_capacity(CONNECT_SAMPLES);
    for _ in 0..CONNECT_SAMPLES {
        let started = Instant::now();
        let agent = RunningAgent::start(ca.agent_config(&address, Some(&cert), "bench"));
        let mut state = agent.handle.state.clone();
        state.wait_for(|s| *s == LinkState::Connected).await?;
        link_times.push(started.elapsed());
        agent.stop().await;
    }

    // Peer: the bare TCP + TLS 1.3 handshake with the same client certificate, no gRPC.
    let tls = ca.client_tls(Some(&cert));
    let hub_address = HubAddress::parse(&address, None)?;
    let mut tls_times = Vec::with_capacity(CONNECT_SAMPLES);
    for _ in 0..CONNECT_SAMPLES {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(&address).await?;
        let stream =
            tokio_rustls::TlsConnector::from(Arc::clone(&tls)).connect(hub_address.server_name.clone(), tcp).await?;
        tls_times.push(started.elapsed());
        drop(stream);
    }

    let link = median_p99(&mut link_times);
    let bare = median_p99(&mut tls_times);
    println!(
        "connect (TCP + mTLS 1.3 + Hello → hub answer), {CONNECT_SAMPLES} samples: median {:.3} ms, p99 {:.3} ms",
        ms(link.0),
        ms(link.1)
    );
    println!(
        "peer: bare TCP + TLS 1.3 handshake, {CONNECT_SAMPLES} samples: median {:.3} ms, p99 {:.3} ms",
        ms(bare.0),
        ms(bare.1)
    );
    println!("ratio (link / bare handshake), median: {:.2}", ms(link.0) / ms(bare.0));

    // Memory per idle stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(hub.process.pid());
    let certs: Vec<_> = (0..IDLE_STREAMS).map(|i| ca.issue(Identity::Cluster(format!("idle-{i}")))).collect();
    let started = Instant::now();
    let agents: Vec<_> = certs
        .iter()
        .enumerate()
        .map(|(i, cert)| {
            let mut config = ca.agent_config(&address, Some(cert), &format!("idle-{i}"));
            config.heartbeat = Duration::from_secs(60);
            RunningAgent::start(config)
        })
        .collect();
    let cli = ca.cli(&address, Role::Viewer).await;
    eventually("1,000 agents connected", || {
        let mut cli = cli.clone();
        async move {
            let clusters = cli.list_clusters(ListClustersRequest {}).await.ok()?.into_inner().clusters;
            (clusters.iter().filter(|c| c.connected && c.name.starts_with("idle-")).count() == IDLE_STREAMS)
                .then_some(())
        }
    })
    .await;
    let connect_all = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(hub.process.pid());
    let per = (after.saturating_sub(before)) as f64 / IDLE_STREAMS as f64;
    println!("{IDLE_STREAMS} idle agent streams connected in {:.2} s", connect_all.as_secs_f64());
    println!("hub RSS: {before} KiB before, {after} KiB with {IDLE_STREAMS} streams → {per:.1} KiB per connection");
    for agent in agents {
        agent.stop().await;
    }
    Ok(())
}
