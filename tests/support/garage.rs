//! A Garage cluster for tests of off-host copies: real S3-compatible distributed storage, three
//! nodes (by default) on loopback, each in its own zone, with replication factor 3, so one node
//! can die while a write still reaches a quorum of two. Ports are picked free per cluster, so
//! tests run in parallel; data lives in a temporary directory removed on drop (kept with
//! `LIFEBOAT_KEEP_GARAGE=1`).
//!
//! Synchronous (plain processes): usable from `#[test]`s and `#[tokio::test]`s alike. Include it
//! with `#[path = ".../tests/support/garage.rs"] mod garage;`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The garage binary: `$LIFEBOAT_GARAGE`, else `garage` on `PATH`, else `~/.cargo/bin/garage`
/// (where `scripts/setup-test-env` installs it). None found: a failure when `CI` is set (a test
/// that needs Garage must not pass by skipping), else a loud notice and `None`.
pub fn garage_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LIFEBOAT_GARAGE").map(PathBuf::from),
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("garage")).find(|p| p.is_file())),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and no garage binary was found: run scripts/setup-test-env (it builds garage 2.5.0)");
    }
    eprintln!("\n=== SKIPPING a Garage test: no garage binary (scripts/setup-test-env builds it) ===\n");
    None
}

/// What a test needs to reach the cluster's bucket.
#[derive(Debug, Clone)]
pub struct S3Access {
    /// Node 0's S3 API, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

struct Node {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    child: Option<Child>,
}

pub struct GarageCluster {
    binary: PathBuf,
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    /// `id@addr` of each node, to connect them again after the whole cluster was down.
    ids: Vec<String>,
    access: S3Access,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl GarageCluster {
    /// Starts `nodes` servers, connects them, applies a layout (one zone per node, 1 GB each)
    /// with replication factor `replication`, waits until the cluster is healthy, and creates a
    /// key and a bucket it may read, write and own. Panics with the nodes' logs on failure.
    pub fn start(nodes: usize, replication: usize) -> GarageCluster {
        let binary = garage_binary().expect("garage_binary() said there is none: check it first");
        let dir = tempfile::Builder::new().prefix("lifeboat-garage-").tempdir().expect("a temporary directory");
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(16);
        let mut cluster_nodes = Vec::new();
        for i in 0..nodes {
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(root.join("meta")).unwrap();
            std::fs::create_dir_all(root.join("data")).unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "lmdb"
replication_factor = {replication}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{admin_token}"
"#,
                    root = root.display()
                ),
            )
            .unwrap();
            cluster_nodes.push(Node { config, log: root.join("garage.log"), s3_port: s3, child: None });
        }
        let bucket = "lifeboat-test".to_string();
        let access = S3Access {
            endpoint: format!("http://127.0.0.1:{}", cluster_nodes[0].s3_port),
            region: "garage".into(),
            bucket: bucket.clone(),
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
        };
        let mut cluster = GarageCluster { binary, dir: Some(dir), nodes: cluster_nodes, ids: Vec::new(), access };
        for i in 0..nodes {
            cluster.spawn(i);
        }
        for i in 0..nodes {
            cluster.wait_answering(i);
        }

        let mut ids = Vec::new();
        for i in 0..nodes {
            let id = cluster.garage_on(i, &["node", "id", "-q"]).trim().to_string();
            ids.push(id);
        }
        cluster.ids = ids.clone();
        cluster.connect_all();
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            cluster.garage(&["layout", "assign", "-z", &format!("dc{i}"), "-c", "1G", short]);
        }
        cluster.garage(&["layout", "apply", "--version", "1"]);
        cluster.wait_healthy(nodes);

        let (key_id, secret) = (cluster.access.key_id.clone(), cluster.access.secret.clone());
        cluster.garage(&["key", "import", "--yes", "-n", "lifeboat-test", &key_id, &secret]);
        cluster.create_bucket(&bucket);
        cluster
    }

    pub fn access(&self) -> &S3Access {
        &self.access
    }

    /// Node `node`'s S3 API.
    pub fn s3_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].s3_port)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        node.child = Some(child);
    }

    /// Polls until node `i` answers the CLI (its RPC is up), for at most 30 s.
    fn wait_answering(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_garage_on(i, &["status"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage node {i} did not answer within 30 s; its log:\n{}", self.log_tail(i));
    }

    /// Polls until the cluster reports every storage node up and every partition at quorum.
    fn wait_healthy(&self, nodes: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(health) = self.try_garage_on(0, &["json-api", "GetClusterHealth"]) {
                let up = health.contains("\"status\": \"healthy\"") || health.contains("\"status\":\"healthy\"");
                let all = health.contains(&format!("\"storageNodesUp\": {nodes}"))
                    || health.contains(&format!("\"storageNodesUp\":{nodes}"));
                if up && all {
                    return;
                }
                last = health;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the garage cluster did not become healthy within 60 s; last health: {last}\nnode 0's log:\n{}",
            self.log_tail(0)
        );
    }

    /// SIGKILLs node `node` and waits for it to exit.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `node` again on its data and waits until the cluster is healthy.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        self.wait_answering(node);
        self.wait_healthy(self.nodes.len());
    }

    /// Node 0 connects to every other node (peers also find each other, but only after a while
    /// when all of them restarted at once).
    fn connect_all(&self) {
        for id in &self.ids[1..] {
            self.garage(&["node", "connect", id]);
        }
    }

    /// The whole cluster down.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// The whole cluster back, healthy.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i);
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_answering(i);
        }
        self.connect_all();
        self.wait_healthy(self.nodes.len());
    }

    /// Another bucket, which the test key may read, write and own.
    pub fn create_bucket(&self, name: &str) {
        self.garage(&["bucket", "create", name]);
        self.garage(&["bucket", "allow", "--read", "--write", "--owner", name, "--key", &self.access.key_id]);
    }

    /// Multipart uploads not completed nor aborted in `bucket` (the admin API's bucket info).
    pub fn list_multipart_uploads(&self, bucket: &str) -> usize {
        let info = self.garage(&["json-api", "GetBucketInfo", &format!(r#"{{"globalAlias":"{bucket}"}}"#)]);
        let value: serde_json::Value =
            serde_json::from_str(&info).unwrap_or_else(|e| panic!("GetBucketInfo is not JSON ({e}): {info}"));
        value["unfinishedMultipartUploads"]
            .as_u64()
            .unwrap_or_else(|| panic!("GetBucketInfo has no unfinishedMultipartUploads: {info}")) as usize
    }

    /// Runs the garage CLI against node 0 and returns its stdout; panics with its stderr.
    pub fn garage(&self, args: &[&str]) -> String {
        self.garage_on(0, args)
    }

    fn garage_on(&self, node: usize, args: &[&str]) -> String {
        self.try_garage_on(node, args).unwrap_or_else(|e| panic!("{e}\nnode {node}'s log:\n{}", self.log_tail(node)))
    }

    fn try_garage_on(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[node].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("garage {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn log_tail(&self, node: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[node].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Where the cluster keeps its data.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory lives as long as the cluster").path()
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        self.stop_all();
        if std::env::var_os("LIFEBOAT_KEEP_GARAGE").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping the garage cluster's directory {}", dir.keep().display());
        }
    }
}
