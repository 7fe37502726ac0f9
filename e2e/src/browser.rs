//! A real browser for the dashboard's tests and benchmark: Debian's Chromium, headless, driven
//! over WebDriver by its chromedriver (the `fantoccini` client). `e2e/peers.sh` installs both
//! and sets `CONVOY_CHROMIUM` and `CONVOY_CHROMEDRIVER`; with those set a missing browser fails
//! the run instead of skipping it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Process, workspace_binary};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Starts `convoy ARGS… ui --listen 127.0.0.1:0` (ARGS choose the hub and the certificate);
/// returns the process and the dashboard's address, `http://127.0.0.1:PORT`.
pub fn dashboard(args: &[&std::ffi::OsStr]) -> (Process, String) {
    let mut command = Command::new(workspace_binary("convoy"));
    command.args(args).args(["ui", "--listen", "127.0.0.1:0"]);
    let process = Process::spawn(command);
    let line = process.wait_for_line("Convoy dashboard at ");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").trim_end_matches('/');
    (process, url.to_string())
}

/// A headless Chromium session; the driver process ends when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn program(env: &str, default: &str) -> (PathBuf, bool) {
    match std::env::var(env) {
        Ok(path) => (PathBuf::from(path), true),
        Err(_) => (PathBuf::from(default), false),
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`×`height`. `None` (after
    /// saying why) when they are not installed and the test script did not ask for them.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let (chromium, required_a) = program("CONVOY_CHROMIUM", "/usr/bin/chromium");
        let (driver, required_b) = program("CONVOY_CHROMEDRIVER", "/usr/bin/chromedriver");
        if !chromium.exists() || !driver.exists() {
            let why = format!(
                "no browser: {} or {} is missing (`apt-get install chromium chromium-driver`; e2e/test.sh does)",
                chromium.display(),
                driver.display()
            );
            assert!(!(required_a || required_b), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut caps = Capabilities::new();
        // The hub's dashboard serves the certificate of each test's own CA.
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = String::new();
        for _ in 0..150 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => return Some(Browser { client, driver: child, _profile: profile }),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromedriver on {url} gave no session: {last}");
    }

    /// Waits (up to a minute) until `css` matches an element, and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = self.client.wait().at_most(Duration::from_secs(60)).for_element(Locator::Css(css)).await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no element '{css}' on {}: {e}", self.url().await),
        }
    }

    /// The text of the element `css` names (waiting for it as [`Browser::find`] does). A live
    /// page may replace the element between finding and reading it: then the one that replaced it
    /// is read.
    pub async fn text(&self, css: &str) -> String {
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("cannot read '{css}' on {}: {e}", self.url().await),
            }
        }
    }

    /// Waits until `script` (a JavaScript expression) is true in the page.
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.client.execute(&format!("return !!({script});"), vec![]).await;
            if matches!(value, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self.client.execute("return document.body ? document.body.innerText : ''", vec![]).await;
                let text: String = text.ok().and_then(|t| t.as_str().map(str::to_string)).unwrap_or_default();
                panic!("{what}: `{script}` not true on {:?}, which reads: {:.600}", self.url().await, text);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default()
    }

    /// Ends the session (Chromium quits) and the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Saves a PNG of the window to `dir/NAME.png`.
    pub async fn screenshot(&self, dir: &std::path::Path, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(dir).expect("the screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("writing a screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
