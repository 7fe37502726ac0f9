//! The fault and attack matrix (SECURITY.md's table): each test is one fault Convoy must survive
//! (`fault_…`) or one attack it must refuse (`attack_…`), on real processes and real sockets.
//! Rows the other scenario files already prove are listed in `e2e/matrix.tsv` with their own
//! test names; `e2e/test.sh` prints one summary line from it.

use std::net::SocketAddr;
use std::time::Duration;

use convoy_e2e::harness::{HubProcess, RunningAgent, TestCa, eventually, wait_connected};
use convoy_shared::identity::{Identity, Role};
use convoy_shared::proto::ListClustersRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The first bytes of a TLS ClientHello whose record header promises 512 bytes: a server that
/// waits for the rest waits forever.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// A TCP connection to `hub` from the loopback address `source`, sending `first` and then stalling.
async fn stalled_connection(hub: SocketAddr, source: [u8; 4], first: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind a loopback source address");
    let mut stream = socket.connect(hub).await.expect("the hub accepts TCP connections");
    stream.write_all(first).await.expect("send the first bytes");
    stream
}

/// Whether the hub closed `stream` (EOF or reset) rather than still waiting on it.
async fn closed_by_hub(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // An alert or bytes of a ServerHello would mean the handshake went on; never here.
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_half_open_handshakes_by_the_thousand_leave_the_hub_serving() {
    let ca = TestCa::new();
    // A long handshake timeout: what keeps the hub serving here is shedding, not the clock.
    let limits =
        ["--handshake-timeout-seconds", "300", "--max-handshakes", "512", "--max-handshakes-per-source", "128"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &limits);
    let address: SocketAddr = hub.address.parse().expect("the hub's address");

    // 1,000 stalled connections: 500 that send nothing from 127.0.0.1 (the address the real
    // clients use too), and 500 partial ClientHellos from four other addresses.
    let mut stalled = Vec::new();
    for i in 0..1000u32 {
        let (source, first): ([u8; 4], &[u8]) = if i % 2 == 0 {
            ([127, 0, 0, 1], &[])
        } else {
            ([127, 0, 0, 2 + (i / 2 % 4) as u8], &PARTIAL_CLIENT_HELLO)
        };
        stalled.push(stalled_connection(address, source, first).await);
    }
    eventually("the hub to shed the oldest stalled handshakes", || async {
        (hub.log_lines("handshake shed").len() >= 1000 - 512).then_some(())
    })
    .await;

    // The hub still answers: the CLI lists clusters and a real agent connects and stays.
    let mut viewer = ca.cli(&hub.address, Role::Viewer).await;
    viewer.list_clusters(ListClustersRequest {}).await.expect("the fleet API answers under the flood");
    let cert = ca.issue(Identity::Cluster("eu-1".into()));
    let agent = RunningAgent::start(ca.agent_config(&hub.address, Some(&cert), "eu-1"));
    wait_connected(&ca, &hub.address, "eu-1").await;

    // The oldest were shed, the newest still wait: a flood cannot push out the client that
    // arrives after it.
    let mut closed = Vec::new();
    for stream in &mut stalled {
        closed.push(closed_by_hub(stream).await);
    }
    assert!(closed[0] && closed[1], "the oldest stalled handshakes of each kind were shed");
    assert!(!closed[998] && !closed[999], "the newest stalled handshakes still wait for their timeout");
    let per_source = hub.log_lines("too many handshakes in progress from this address").len();
    let overall = hub.log_lines("reason=\"too many handshakes in progress\"").len();
    assert!(per_source >= 500 - 128, "127.0.0.1's oldest made way for its newest: {per_source}");
    assert!(overall > 0, "over 512 in all, the oldest overall made way");
    agent.stop().await;
}
