//! Both API servers of a conformance test: a kubesim cluster of its own and the real control
//! plane the whole test binary shares, each reached over HTTP with its kubeconfig's client, and
//! the normalization that leaves only what must be equal.

use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt as _;
use http::{Method, Request, header};
use kubesim::SimFleet;
use kubesim::realkube::{RealCluster, binaries};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The real control plane shared by the tests of this binary: started by the first test that
/// asks, stopped when the last one holding it ends. Its programs are started from a thread of
/// its own, because they die with the thread that started them (`--pdeathsig`), and a test's
/// runtime threads end with the test.
struct SharedReal {
    config: kube::Config,
    /// Tells the keeper thread to stop the control plane; sent on drop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The keeper thread, joined on drop so the programs are gone and their files removed
    /// before the test process can exit.
    keeper: Option<std::thread::JoinHandle<()>>,
}

/// The running shared control plane, if any test still holds it.
static REAL: tokio::sync::Mutex<Weak<SharedReal>> = tokio::sync::Mutex::const_new(Weak::new());

impl SharedReal {
    /// The shared control plane, started if no test holds it; `None` when it is not built and
    /// not required ([`binaries::find`] says why).
    async fn get() -> Option<Arc<SharedReal>> {
        let mut slot = REAL.lock().await;
        if let Some(real) = slot.upgrade() {
            return Some(real);
        }
        let bins = binaries::find()?;
        let started = std::time::Instant::now();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let keeper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let cluster = match RealCluster::start("conformance", &bins).await {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(cluster.config().await);
                // Either a stop or every test gone: the control plane stops with `cluster`.
                let _ = stopped.await;
            });
        });
        let config = ready_rx
            .await
            .expect("the keeper thread answers")
            .unwrap_or_else(|e| panic!("the real control plane did not start: {e}"));
        eprintln!("the shared kube-apiserver started in {:?}", started.elapsed());
        let real = Arc::new(SharedReal { config, stop: Some(stop), keeper: Some(keeper) });
        *slot = Arc::downgrade(&real);
        Some(real)
    }
}

impl Drop for SharedReal {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// One HTTP answer: the status code and the body (JSON, or a string when it is not JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// The body.
    pub body: Value,
}

/// What kubesim and kube-apiserver each answered to the same request.
#[derive(Debug, Clone)]
pub struct Answers<T> {
    /// kubesim's.
    pub sim: T,
    /// kube-apiserver's.
    pub real: T,
}

impl<T: serde::Serialize + PartialEq> Answers<T> {
    /// Asserts both answers are equal, printing both as JSON when not.
    #[track_caller]
    pub fn assert_same(&self, what: &str) {
        let show = |t: &T| serde_json::to_string_pretty(t).expect("JSON");
        assert!(
            self.sim == self.real,
            "{what}: kubesim and kube-apiserver differ\nkubesim: {}\nkube-apiserver: {}",
            show(&self.sim),
            show(&self.real)
        );
    }
}

impl<T> Answers<T> {
    /// Both answers mapped through `f`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Answers<U> {
        Answers { sim: f(&self.sim), real: f(&self.real) }
    }
}

impl Answers<Reply> {
    /// Both bodies after [`normalized`], with their codes, asserted equal.
    #[track_caller]
    pub fn assert_same_normalized(&self, what: &str) {
        self.map(|r| Reply { code: r.code, body: normalized(&r.body) }).assert_same(what);
    }
}

/// A test namespace on a kubesim cluster and on the shared real control plane.
pub struct Servers {
    /// The namespace every object of the test lives in, on both servers.
    pub ns: String,
    sim: kube::Client,
    real: kube::Client,
    _fleet: SimFleet,
    _real: Arc<SharedReal>,
}

impl Servers {
    /// Starts kubesim, joins the shared control plane and creates namespace `ns` on both; `None`
    /// (after printing why) when the control plane is not built and not required.
    pub async fn start(ns: &str) -> Option<Servers> {
        let real = SharedReal::get().await?;
        let fleet = SimFleet::start(&["sim"]).await.expect("kubesim starts");
        // Without retries, so a 504 is seen as sent rather than retried for minutes.
        let raw = |mut config: kube::Config| {
            config.default_retry = false;
            kube::Client::try_from(config).expect("a client")
        };
        let sim = raw(fleet.clusters()[0].config().await.expect("a kubesim client config"));
        let real_client = raw(real.config.clone());
        let servers = Servers { ns: ns.into(), sim, real: real_client, _fleet: fleet, _real: real };
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let created = servers.post("/api/v1/namespaces", &namespace).await;
        assert_eq!(created.map(|r| r.code).real, 201, "creating namespace {ns} on kube-apiserver: {created:?}");
        created.map(|r| r.code).assert_same("creating the test namespace");
        Some(servers)
    }

    /// `/api/v1/namespaces/NS/PLURAL` or `/apis/GROUP/VERSION/namespaces/NS/PLURAL` in the test
    /// namespace, e.g. `path("apps/v1", "deployments")`.
    pub fn path(&self, api_version: &str, plural: &str) -> String {
        let prefix = if api_version.contains('/') { "apis" } else { "api" };
        format!("/{prefix}/{api_version}/namespaces/{}/{plural}", self.ns)
    }

    /// Sends the same request to both servers.
    pub async fn send(&self, method: Method, uri: &str, content_type: &str, body: Option<&Value>) -> Answers<Reply> {
        let (sim, real) = tokio::join!(
            send(&self.sim, &method, uri, content_type, body),
            send(&self.real, &method, uri, content_type, body)
        );
        Answers { sim, real }
    }

    /// GET.
    pub async fn get(&self, uri: &str) -> Answers<Reply> {
        self.send(Method::GET, uri, "", None).await
    }

    /// GET of a URI that names values each server chose (a continue token).
    pub async fn get_each(&self, uris: &Answers<String>) -> Answers<Reply> {
        let (sim, real) = tokio::join!(
            send(&self.sim, &Method::GET, &uris.sim, "", None),
            send(&self.real, &Method::GET, &uris.real, "", None)
        );
        Answers { sim, real }
    }

    /// PUT of bodies that carry values each server chose (a resourceVersion).
    pub async fn put_each(&self, uri: &str, bodies: &Answers<Value>) -> Answers<Reply> {
        let json = "application/json";
        let (sim, real) = tokio::join!(
            send(&self.sim, &Method::PUT, uri, json, Some(&bodies.sim)),
            send(&self.real, &Method::PUT, uri, json, Some(&bodies.real))
        );
        Answers { sim, real }
    }

    /// POST a JSON body (a create).
    pub async fn post(&self, uri: &str, body: &Value) -> Answers<Reply> {
        self.send(Method::POST, uri, "application/json", Some(body)).await
    }

    /// PUT a JSON body (an update).
    pub async fn put(&self, uri: &str, body: &Value) -> Answers<Reply> {
        self.send(Method::PUT, uri, "application/json", Some(body)).await
    }

    /// Server-side applies `object` to `collection` as `manager` (`extra` query parameters such
    /// as `&force=true` appended).
    pub async fn apply(&self, collection: &str, object: &Value, manager: &str, extra: &str) -> Answers<Reply> {
        let name = object["metadata"]["name"].as_str().expect("a named object");
        let uri = format!("{collection}/{name}?fieldManager={manager}{extra}");
        self.send(Method::PATCH, &uri, "application/apply-patch+yaml", Some(object)).await
    }

    /// DELETE.
    pub async fn delete(&self, uri: &str) -> Answers<Reply> {
        self.send(Method::DELETE, uri, "", None).await
    }

    /// Starts the same watch request (a collection URI with `watch=true`) on both servers.
    pub async fn watch(&self, uri: &str) -> Answers<Watch> {
        self.watch_each(&Answers { sim: uri.into(), real: uri.into() }).await
    }

    /// Starts a watch whose URI names a value each server chose (a resourceVersion).
    pub async fn watch_each(&self, uris: &Answers<String>) -> Answers<Watch> {
        let (sim, real) = tokio::join!(Watch::start(&self.sim, &uris.sim), Watch::start(&self.real, &uris.real));
        Answers { sim, real }
    }
}

async fn send(client: &kube::Client, method: &Method, uri: &str, content_type: &str, body: Option<&Value>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON")).unwrap_or_default();
    let request = request.body(kube::client::Body::from(bytes)).expect("a valid request");
    let response = client.send(request).await.unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
    let code = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { code, body }
}

/// A watch stream being read into a list of events, by a task that ends when it is dropped.
pub struct Watch {
    /// The HTTP status of the watch request.
    pub code: u16,
    events: Arc<Mutex<Vec<Value>>>,
    /// Whether the server ended the stream.
    ended: Arc<Mutex<bool>>,
    reader: JoinHandle<()>,
}

impl Watch {
    async fn start(client: &kube::Client, uri: &str) -> Watch {
        let request = Request::get(uri).body(kube::client::Body::empty()).expect("a valid request");
        let response = client.send(request).await.unwrap_or_else(|e| panic!("watch {uri}: {e}"));
        let code = response.status().as_u16();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(false));
        let mut chunks = axum::body::Body::new(response.into_body()).into_data_stream();
        let (sink, done) = (events.clone(), ended.clone());
        let reader = tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(Ok(chunk)) = chunks.next().await {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                        sink.lock().expect("not poisoned").push(event);
                    }
                }
            }
            *done.lock().expect("not poisoned") = true;
        });
        Watch { code, events, ended, reader }
    }

    /// The events read so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// Whether the server has ended the stream.
    pub fn ended(&self) -> bool {
        *self.ended.lock().expect("not poisoned")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// `value` with what legitimately differs between two servers replaced by placeholders: uids,
/// resourceVersions, timestamps (creation, managedFields, conditions), continue tokens and
/// allocated ClusterIPs.
pub fn normalized(value: &Value) -> Value {
    let mut value = value.clone();
    scrub(&mut value);
    value
}

/// Annotations the real server's controllers write whenever they get to the object (kubesim
/// runs no deployment controller: README, known differences).
const CONTROLLER_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/revision"];

fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(annotations)) = map.get_mut("annotations") {
                annotations.retain(|k, _| !CONTROLLER_ANNOTATIONS.contains(&k.as_str()));
            }
            for (key, v) in map.iter_mut() {
                let server_chosen = matches!(
                    key.as_str(),
                    "uid"
                        | "resourceVersion"
                        | "creationTimestamp"
                        | "time"
                        | "lastTransitionTime"
                        | "continue"
                        | "clusterIP"
                        | "clusterIPs"
                );
                if server_chosen && !v.is_null() {
                    *v = json!(format!("<{key}>"));
                } else {
                    scrub(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}
