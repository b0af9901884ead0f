//! The Garage test cluster itself (`tests/support/garage.rs`), before the tests of off-host copies
//! rely on it: three nodes on loopback start and report healthy, the layout keeps three copies of
//! every partition, the test key and bucket work for a real S3 client (rclone: put, list, get),
//! a write still succeeds with one node killed, the node restarted catches up, and the helper's
//! count of open multipart uploads follows S3's own listing.
//!
//! No S3 client crate: rclone, configured through its environment only (no config file), puts
//! and gets objects; curl signs the few requests rclone has no command for. Both reach nothing
//! but the cluster on loopback; `scripts/setup-test-env` installs them with Garage.

#[path = "support/garage.rs"]
mod garage;

use std::process::Command;
use std::time::{Duration, Instant};

use garage::{GarageCluster, S3Access, rclone};
use serde_json::Value;

/// Starts the cluster that the tests of off-host copies use, printing how long it took; `None`
/// (after garage_binary's notice) when Garage is not installed outside CI.
fn start_cluster() -> Option<GarageCluster> {
    garage::garage_binary()?;
    let started = Instant::now();
    let cluster = GarageCluster::start(3, 3);
    eprintln!("garage: 3 nodes, replication 3, healthy with key and bucket in {:.2?}", started.elapsed());
    Some(cluster)
}

/// Puts `data` at `object` in the test bucket through `endpoint`.
fn put(access: &S3Access, endpoint: &str, object: &str, data: &[u8]) {
    let target = format!("garage:{}/{object}", access.bucket);
    rclone(access, endpoint, &["rcat", &target], Some(data)).unwrap_or_else(|e| panic!("{e}"));
}

/// The bytes of `object` in the test bucket, read through `endpoint`.
fn get(access: &S3Access, endpoint: &str, object: &str) -> Vec<u8> {
    let source = format!("garage:{}/{object}", access.bucket);
    rclone(access, endpoint, &["cat", &source], None).unwrap_or_else(|e| panic!("{e}"))
}

/// `garage status` lists `count` nodes under HEALTHY NODES and none under FAILED NODES.
fn assert_status_healthy(cluster: &GarageCluster, count: usize) {
    let status = cluster.garage(&["status"]);
    let healthy_section =
        status.split("==== HEALTHY NODES ====").nth(1).expect("garage status has a HEALTHY NODES section");
    assert!(!status.contains("FAILED NODES"), "a node is listed as failed:\n{status}");
    for node in 0..count {
        let short_id = &cluster.node_id(node)[..16];
        assert!(healthy_section.contains(short_id), "node {node} ({short_id}) is not listed healthy:\n{status}");
    }
    let health = cluster.json_api("GetClusterHealth", None);
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["storageNodesUp"], count as u64, "{health}");
    assert_eq!(health["connectedNodes"], count as u64, "{health}");
}

#[test]
fn three_nodes_replicate_every_partition_three_times_and_serve_the_test_bucket() {
    let Some(cluster) = start_cluster() else { return };
    assert_status_healthy(&cluster, 3);

    // The layout holds no replication factor (it is in each node's config); what shows it is
    // that every node stores every partition: three copies of each, one per zone.
    let layout = cluster.json_api("GetClusterLayout", None);
    assert_eq!(layout["version"], 1, "{layout}");
    let roles = layout["roles"].as_array().unwrap_or_else(|| panic!("the layout has no roles: {layout}"));
    assert_eq!(roles.len(), 3, "{layout}");
    let mut zones: Vec<&str> = roles.iter().filter_map(|role| role["zone"].as_str()).collect();
    zones.sort();
    assert_eq!(zones, ["dc0", "dc1", "dc2"], "{layout}");
    for role in roles {
        assert_eq!(role["storedPartitions"], 256, "a node does not hold every partition: {layout}");
    }
    let health = cluster.json_api("GetClusterHealth", None);
    assert_eq!(health["partitions"], 256, "{health}");
    assert_eq!(health["partitionsAllOk"], 256, "not every partition has its three copies: {health}");

    // The key reads back with its secret and its rights on the bucket.
    let access = cluster.access().clone();
    let request = serde_json::json!({ "id": access.key_id, "showSecretKey": true }).to_string();
    let key = cluster.json_api("GetKeyInfo", Some(&request));
    assert_eq!(key["accessKeyId"], access.key_id.as_str(), "{key}");
    assert_eq!(key["secretAccessKey"], access.secret.as_str(), "{key}");
    let buckets = key["buckets"].as_array().unwrap_or_else(|| panic!("the key has no buckets: {key}"));
    let bucket = buckets
        .iter()
        .find(|b| {
            b["globalAliases"].as_array().is_some_and(|aliases| aliases.iter().any(|a| a == access.bucket.as_str()))
        })
        .unwrap_or_else(|| panic!("the key is not allowed on {}: {key}", access.bucket));
    assert_eq!(bucket["permissions"], serde_json::json!({ "owner": true, "read": true, "write": true }), "{key}");

    // An unsigned request is refused in S3's own words: the S3 API answers, and checks.
    let unsigned = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", &format!("{}/{}/", access.endpoint, access.bucket)])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&unsigned.stdout);
    assert!(body.contains("<Error>") && body.contains("AccessDenied"), "an unsigned request got: {body}");

    // A real S3 client puts through node 0 and reads back through every node.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    put(&access, &access.endpoint, "probe/object.bin", &data);
    let listing = rclone(&access, &access.endpoint, &["lsf", &format!("garage:{}/probe", access.bucket)], None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&listing).trim(), "object.bin");
    for node in 0..3 {
        assert!(
            get(&access, &cluster.s3_endpoint(node), "probe/object.bin") == data,
            "node {node} returned other bytes"
        );
    }

    // A second bucket works for the same key.
    cluster.create_bucket("lifeboat-second");
    let second = S3Access { bucket: "lifeboat-second".into(), ..access.clone() };
    put(&second, &second.endpoint, "x", b"second bucket");
    assert_eq!(get(&second, &cluster.s3_endpoint(2), "x"), b"second bucket");
}

#[test]
fn a_write_reaches_quorum_with_one_node_killed_and_the_restarted_node_catches_up() {
    let Some(mut cluster) = start_cluster() else { return };
    let access = cluster.access().clone();

    cluster.kill(2);
    assert!(!cluster.is_running(2));
    // Two of three copies are a write quorum: the put succeeds, the cluster reports degraded.
    put(&access, &access.endpoint, "while-down", b"written with node 2 dead");
    assert_eq!(get(&access, &cluster.s3_endpoint(1), "while-down"), b"written with node 2 dead");
    let health = wait_for_health(&cluster, |health| health["storageNodesUp"] == 2);
    assert_eq!(health["status"], "degraded", "{health}");

    let restarted = Instant::now();
    cluster.restart(2);
    eprintln!("garage: node 2 restarted, cluster healthy again in {:.2?}", restarted.elapsed());
    assert_status_healthy(&cluster, 3);
    // The restarted node serves what was written without it: read repair or the resync.
    assert_eq!(get(&access, &cluster.s3_endpoint(2), "while-down"), b"written with node 2 dead");

    // The whole cluster down and back, as the tests of an unavailable remote do it.
    cluster.stop_all();
    assert!(rclone(&access, &access.endpoint, &["lsf", &format!("garage:{}", access.bucket)], None).is_err());
    let restarted = Instant::now();
    cluster.start_all();
    eprintln!("garage: whole cluster restarted and healthy in {:.2?}", restarted.elapsed());
    assert_status_healthy(&cluster, 3);
    assert_eq!(get(&access, &access.endpoint, "while-down"), b"written with node 2 dead");
}

/// Polls `GetClusterHealth` on the cluster until `ready` holds (10 s at most) and returns it.
fn wait_for_health(cluster: &GarageCluster, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = cluster.json_api("GetClusterHealth", None);
        if ready(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "the cluster's health did not change as expected: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One S3 request with an empty body, signed (SigV4) by curl: `path_and_query` is under the
/// test bucket; returns the XML answer. The content hash is that of the empty body, which curl
/// does not add by itself; a query key needs its `=` (`?uploads=`) for curl's signature to match.
fn signed_s3_request(access: &S3Access, method: &str, path_and_query: &str) -> String {
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--max-time", "10", "--request", method])
        .args(["--header", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
        .args(["--aws-sigv4", &format!("aws:amz:{}:s3", access.region)])
        .args(["--user", &format!("{}:{}", access.key_id, access.secret)])
        .arg(format!("{}/{}/{path_and_query}", access.endpoint, access.bucket))
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{method} {path_and_query}: {body} {}", String::from_utf8_lossy(&out.stderr));
    body
}

/// Open multipart uploads in the test bucket as S3's ListMultipartUploads lists them.
fn s3_open_uploads(access: &S3Access) -> usize {
    signed_s3_request(access, "GET", "?uploads=").matches("<Upload>").count()
}

#[test]
fn open_multipart_uploads_are_counted_until_aborted() {
    let Some(cluster) = start_cluster() else { return };
    let access = cluster.access().clone();
    assert_eq!(cluster.list_multipart_uploads(&access.bucket), 0);

    let mut upload_ids = Vec::new();
    for n in 1..=2 {
        let created = signed_s3_request(&access, "POST", &format!("open-{n}?uploads="));
        let upload_id = created
            .split_once("<UploadId>")
            .and_then(|(_, rest)| rest.split_once("</UploadId>"))
            .map(|(id, _)| id.to_string())
            .unwrap_or_else(|| panic!("CreateMultipartUpload answered no UploadId: {created}"));
        upload_ids.push(upload_id);
        assert_eq!(cluster.list_multipart_uploads(&access.bucket), n, "after creating upload {n}");
        assert_eq!(s3_open_uploads(&access), n);
    }
    for (n, upload_id) in upload_ids.iter().enumerate() {
        signed_s3_request(&access, "DELETE", &format!("open-{}?uploadId={upload_id}", n + 1));
    }
    assert_eq!(cluster.list_multipart_uploads(&access.bucket), 0, "after aborting both");
    assert_eq!(s3_open_uploads(&access), 0);
}
