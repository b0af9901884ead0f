//! A Garage cluster for the tests of off-host copies: real S3-compatible distributed storage, not
//! a mock, so the S3 backend meets real signatures, multipart uploads, errors and node loss.
//!
//! [`GarageCluster::start`]`(3, 3)` starts three nodes on loopback, each in its own zone, with
//! replication factor 3: every object is on every node and a write needs a quorum of two, so a
//! test can kill one node during an upload and the copy must still complete, or stop all of them
//! and see the backend report the storage unavailable. Ports are picked free per cluster, so test
//! files and tests run in parallel; the nodes' data, configs and logs live in a temporary
//! directory removed on drop (kept with `LIFEBOAT_KEEP_GARAGE=1`, to read the logs).
//!
//! Synchronous (plain processes, no runtime): usable from `#[test]`s and `#[tokio::test]`s alike.
//! Include it with `#[path = ".../tests/support/garage.rs"] mod garage;` and call
//! [`garage_binary`] first: it fails in CI and skips elsewhere when Garage is not installed
//! (`scripts/setup-test-env` builds it). Nothing here reads `AWS_*` variables.
// Each test file uses only part of the helper.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The region that the S3 API expects in signatures.
pub const REGION: &str = "garage";
/// The bucket that [`GarageCluster::start`] creates.
pub const BUCKET: &str = "lifeboat-test";
/// How long a node may take to answer after it was started.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to report every node up and every partition fully replicated.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
/// Variables with which garage would override its config file (another host or secret for the
/// CLI, say); removed so that a developer's environment cannot point a test elsewhere.
const GARAGE_OVERRIDES: &[&str] = &[
    "GARAGE_CONFIG_FILE",
    "GARAGE_RPC_HOST",
    "GARAGE_RPC_SECRET",
    "GARAGE_RPC_SECRET_FILE",
    "GARAGE_ADMIN_TOKEN",
    "GARAGE_ADMIN_TOKEN_FILE",
    "GARAGE_METRICS_TOKEN",
    "GARAGE_METRICS_TOKEN_FILE",
    "GARAGE_ALLOW_WORLD_READABLE_SECRETS",
];

/// The garage binary: `$LIFEBOAT_GARAGE`, else `garage` on `PATH`, else `~/.cargo/bin/garage`
/// (where `scripts/setup-test-env` installs it). None found: a failure when `CI` is set (a test
/// that needs Garage must not pass by skipping), else a loud notice and `None`, so the test can
/// return early:
///
/// ```ignore
/// if garage::garage_binary().is_none() { return; }
/// ```
pub fn garage_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LIFEBOAT_GARAGE").map(PathBuf::from),
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("garage")).find(|p| p.is_file())),
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/garage")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set and no garage binary was found, so this test fails instead of skipping: run \
             scripts/setup-test-env (it builds garage 2.5.0) or set LIFEBOAT_GARAGE"
        );
    }
    eprintln!();
    eprintln!("=================================================================");
    eprintln!("SKIPPING a Garage test: no garage binary ($LIFEBOAT_GARAGE, PATH, ~/.cargo/bin)");
    eprintln!("(with CI set this is a failure; scripts/setup-test-env builds it)");
    eprintln!("=================================================================");
    eprintln!();
    None
}

/// What a test needs to reach the cluster's bucket.
#[derive(Debug, Clone)]
pub struct S3Access {
    /// Node 0's S3 API, `http://127.0.0.1:PORT` (path-style: the bucket goes in the path).
    pub endpoint: String,
    /// [`REGION`].
    pub region: String,
    /// [`BUCKET`].
    pub bucket: String,
    /// A key allowed to read, write and own the bucket.
    pub key_id: String,
    pub secret: String,
}

struct Node {
    config: PathBuf,
    /// The server's stdout and stderr, appended to across restarts.
    log: PathBuf,
    s3_port: u16,
    admin_port: u16,
    /// `None` while the node is down.
    child: Option<Child>,
    /// `<full id>@127.0.0.1:<rpc port>`, what `garage node connect` takes.
    address: String,
}

/// A running cluster; dropping it kills every node and removes its directory.
pub struct GarageCluster {
    binary: PathBuf,
    /// `None` once kept (`LIFEBOAT_KEEP_GARAGE=1`) on drop.
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    admin_token: String,
    access: S3Access,
}

/// `count` distinct free loopback ports: all bound at once, so none is handed out twice, then
/// released for garage to bind. Port 0 lets the kernel choose, so parallel clusters do not clash.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound listener's address").port()).collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// One node's garage.toml (the keys of Garage 2.x). LMDB, the engine Garage recommends; the
/// `replication_factor` must be the same on every node and cannot change once data is written.
fn node_config(
    root: &Path,
    replication: usize,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    rpc_secret: &str,
    admin_token: &str,
) -> String {
    let root = root.display();
    format!(
        r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "lmdb"
replication_factor = {replication}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin_token}"
"#
    )
}

impl GarageCluster {
    /// Starts `nodes` servers in a fresh temporary directory, connects them, applies a layout
    /// (one zone per node, 1 GB each) with replication factor `replication`, waits until the
    /// cluster is healthy, and creates a key and [`BUCKET`], which the key may read, write and
    /// own. Panics with the nodes' logs on failure. Call [`garage_binary`] first.
    pub fn start(nodes: usize, replication: usize) -> GarageCluster {
        assert!(nodes >= 1 && replication <= nodes, "{nodes} nodes cannot hold {replication} copies");
        let binary = garage_binary().expect("no garage binary: check garage_binary() before starting a cluster");
        let dir = tempfile::Builder::new().prefix("lifeboat-garage-").tempdir().expect("create a temporary directory");
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(32);
        let ports = free_ports(3 * nodes);
        let mut cluster_nodes = Vec::new();
        for (i, ports) in ports.chunks(3).enumerate() {
            let (rpc_port, s3_port, admin_port) = (ports[0], ports[1], ports[2]);
            let root = dir.path().join(format!("node{i}"));
            for sub in ["meta", "data"] {
                std::fs::create_dir_all(root.join(sub))
                    .unwrap_or_else(|e| panic!("create {}: {e}", root.join(sub).display()));
            }
            let config = root.join("garage.toml");
            let text = node_config(&root, replication, rpc_port, s3_port, admin_port, &rpc_secret, &admin_token);
            std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            cluster_nodes.push(Node {
                config,
                log: root.join("garage.log"),
                s3_port,
                admin_port,
                child: None,
                address: String::new(),
            });
        }
        let access = S3Access {
            endpoint: format!("http://127.0.0.1:{}", cluster_nodes[0].s3_port),
            region: REGION.into(),
            bucket: BUCKET.into(),
            // The formats that `garage key import` accepts: GK + 12 bytes, and 32 bytes, in hex.
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
        };
        // Built before the first spawn, so that a panic below still kills what was started.
        let mut cluster = GarageCluster { binary, dir: Some(dir), nodes: cluster_nodes, admin_token, access };
        for i in 0..nodes {
            cluster.spawn(i);
        }
        for i in 0..nodes {
            cluster.wait_answering(i);
            let address = cluster.garage_on(i, &["node", "id", "--quiet"]).trim().to_string();
            assert!(address.contains('@'), "`garage node id` printed no <id>@<address>: {address:?}");
            cluster.nodes[i].address = address;
        }
        cluster.connect_all();
        for i in 0..nodes {
            let id = cluster.node_id(i).to_string();
            cluster.garage(&["layout", "assign", "--zone", &format!("dc{i}"), "--capacity", "1GB", &id]);
        }
        cluster.garage(&["layout", "apply", "--version", "1"]);
        cluster.wait_healthy();

        // Imported rather than created: the secret is known without parsing the CLI's tables.
        let (key_id, secret) = (cluster.access.key_id.clone(), cluster.access.secret.clone());
        cluster.garage(&["key", "import", "--yes", "-n", "lifeboat-test", &key_id, &secret]);
        cluster.create_bucket(BUCKET);
        cluster
    }

    /// The bucket and key for the tests, through node 0.
    pub fn access(&self) -> &S3Access {
        &self.access
    }

    /// Node `node`'s S3 API, `http://127.0.0.1:PORT`.
    pub fn s3_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].s3_port)
    }

    /// Node `node`'s admin API (bearer token [`Self::admin_token`]), `http://127.0.0.1:PORT`.
    pub fn admin_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].admin_port)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The full hex id of node `node`.
    pub fn node_id(&self, node: usize) -> &str {
        self.nodes[node].address.split('@').next().unwrap_or_default()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `node` runs (it was not killed, or it was started again).
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// Where the cluster keeps its nodes' data, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory lives as long as the cluster").path()
    }

    /// SIGKILLs node `node` (no chance to flush or say goodbye) and waits for it to exit.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            // An error means it already exited; either way it is gone after wait.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `node` again (killing it first if it runs) on its config and data, and waits
    /// until it answers and the whole cluster is healthy again.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        self.wait_answering(node);
        self.wait_healthy();
    }

    /// The whole cluster down, every node SIGKILLed.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// Every node that is down started again; returns once the whole cluster is healthy.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                self.spawn(i);
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_answering(i);
        }
        self.connect_all();
        self.wait_healthy();
    }

    /// Another bucket, which the test key may read, write and own.
    pub fn create_bucket(&self, name: &str) {
        self.garage(&["bucket", "create", name]);
        self.garage(&["bucket", "allow", "--read", "--write", "--owner", name, "--key", &self.access.key_id]);
    }

    /// How many multipart uploads in `bucket` were neither completed nor aborted, from the admin
    /// API's bucket info (`unfinishedMultipartUploads`; Garage 2.5.0's CLI lists none, and only
    /// aborts old ones with `garage bucket cleanup-incomplete-uploads`). A counter Garage keeps
    /// per bucket, not a listing; tests/garage_cluster.rs checks that it matches S3's
    /// ListMultipartUploads right after each create and abort.
    pub fn list_multipart_uploads(&self, bucket: &str) -> usize {
        let request = serde_json::json!({ "globalAlias": bucket }).to_string();
        let info = self.json_api("GetBucketInfo", Some(&request));
        info["unfinishedMultipartUploads"]
            .as_u64()
            .unwrap_or_else(|| panic!("GetBucketInfo has no unfinishedMultipartUploads: {info}")) as usize
    }

    /// Runs the garage CLI against node 0 (or, while node 0 is down, the first node that runs)
    /// and returns its stdout; panics with its stderr and the node's log on failure.
    pub fn garage(&self, args: &[&str]) -> String {
        let node = (0..self.nodes.len()).find(|&i| self.is_running(i)).unwrap_or(0);
        self.garage_on(node, args)
    }

    /// An admin API call through the CLI (`garage json-api`, which goes over RPC, so no admin
    /// token is needed), parsed: e.g. `GetClusterHealth`, `GetClusterLayout`, `GetKeyInfo`.
    pub fn json_api(&self, endpoint: &str, request: Option<&str>) -> Value {
        let mut args = vec!["json-api", endpoint];
        args.extend(request);
        let out = self.garage(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("garage json-api {endpoint} printed no JSON ({e}): {out}"))
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", node.log.display()));
        let log_too = log.try_clone().unwrap_or_else(|e| panic!("duplicate the handle of {}: {e}", node.log.display()));
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&node.config).arg("server");
        for var in GARAGE_OVERRIDES {
            command.env_remove(var);
        }
        let child = command
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        node.child = Some(child);
    }

    /// Polls until node `i` answers the CLI (its RPC is up) and accepts connections on its S3
    /// port; panics, with its log, when it exited or did not answer in time.
    fn wait_answering(&mut self, i: usize) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.nodes[i].child = None;
                panic!("garage node {i} exited ({status}) while starting; its log:\n{}", self.log_tail(i));
            }
            match self.try_garage_on(i, &["status"]) {
                Ok(_) if TcpStream::connect(("127.0.0.1", self.nodes[i].s3_port)).is_ok() => return,
                Ok(_) => last_error = "its S3 port refuses connections".into(),
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "garage node {i} did not answer within {ANSWER_TIMEOUT:?} ({last_error}); its log:\n{}",
            self.log_tail(i)
        );
    }

    /// Polls until every running node reports the cluster healthy: all storage nodes up, every
    /// partition with all its copies. Checked on each node, not only node 0, so that a node just
    /// restarted also sees the others before a test writes through it.
    fn wait_healthy(&self) {
        let storage_nodes = self.nodes.len() as u64;
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let mut last = String::new();
        'poll: while Instant::now() < deadline {
            for i in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
                let health = match self.try_garage_on(i, &["json-api", "GetClusterHealth"]) {
                    Ok(out) => serde_json::from_str::<Value>(&out).unwrap_or_default(),
                    Err(e) => Value::String(e),
                };
                let healthy = health["status"] == "healthy" && health["storageNodesUp"] == storage_nodes;
                if !healthy {
                    last = format!("node {i}: {health}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue 'poll;
                }
            }
            return;
        }
        let logs: Vec<String> =
            (0..self.nodes.len()).map(|i| format!("node {i}'s log:\n{}", self.log_tail(i))).collect();
        panic!(
            "the garage cluster was not healthy within {HEALTHY_TIMEOUT:?}; last health {last}\n{}",
            logs.join("\n")
        );
    }

    /// Node 0 (or the first running node) connects to every other node. Peers also find each
    /// other through the peer lists they keep in their metadata, but only after a while when all
    /// of them restarted at once.
    fn connect_all(&self) {
        for node in &self.nodes[1..] {
            self.garage(&["node", "connect", &node.address]);
        }
    }

    fn garage_on(&self, node: usize, args: &[&str]) -> String {
        self.try_garage_on(node, args).unwrap_or_else(|e| panic!("{e}\nnode {node}'s log:\n{}", self.log_tail(node)))
    }

    fn try_garage_on(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&self.nodes[node].config).args(args);
        for var in GARAGE_OVERRIDES {
            command.env_remove(var);
        }
        let out = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The last 30 lines of node `node`'s log, for panic messages.
    fn log_tail(&self, node: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[node].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        self.stop_all();
        if std::env::var_os("LIFEBOAT_KEEP_GARAGE").is_some_and(|keep| keep == "1")
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping the garage cluster's directory {}", dir.keep().display());
        }
    }
}

/// rclone against `endpoint` with the test key, configured by environment variables alone (a
/// remote named `garage`), with every `AWS_*` and `RCLONE_*` variable of the caller removed.
pub fn rclone(access: &S3Access, endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut command = Command::new("rclone");
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("AWS_") || name.starts_with("RCLONE_") {
            command.env_remove(&var);
        }
    }
    command
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
        .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
        .env("RCLONE_CONFIG_GARAGE_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_GARAGE_REGION", &access.region)
        .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &access.key_id)
        .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &access.secret)
        .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true")
        // Fail fast rather than retry for minutes when something is wrong.
        .args(["--retries", "1", "--low-level-retries", "2", "--contimeout", "5s", "--timeout", "30s"])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        command.spawn().map_err(|e| format!("cannot run rclone (scripts/setup-test-env installs it): {e}"))?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("rclone's stdin is piped");
        pipe.write_all(data).map_err(|e| format!("write to rclone: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait for rclone: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("rclone {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}
