//! `[notify]` and `[metrics]` end to end on the real daemon (README, "Monitoring"): a webhook
//! receiver and a ping receiver on loopback started by the test, a notify command, and the
//! metrics file read back with a strict Prometheus text-format parser, prometheus-parse and
//! promtool, and compared with `status --json`.

mod e2e;
mod support;

use e2e::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOOK_TOKEN: &str = "hooktoken5f3e9a";
const PING_TOKEN: &str = "pingtoken77c1d0";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on loopback: it records every request and answers `200 OK`. Strict:
/// a request without a well-formed request line or `Content-Length` fails the test (recorded
/// as an `INVALID` request).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        // Serves until the test process exits; each connection is bounded by its read timeout.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let request = serve(stream).unwrap_or_else(|error| Request {
                    method: "INVALID".into(),
                    path: error,
                    body: Vec::new(),
                });
                seen.lock().unwrap().push(request);
            }
        });
        Receiver { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, after letting the last one land.
    fn take(&self) -> Vec<Request> {
        std::thread::sleep(Duration::from_millis(200));
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn serve(stream: TcpStream) -> Result<Request, String> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let parts: Vec<&str> = line.trim_end().split(' ').collect();
    let [method, path, version] = parts[..] else { return Err(format!("bad request line {line:?}")) };
    if version != "HTTP/1.1" {
        return Err(format!("not HTTP/1.1: {line:?}"));
    }
    let mut length = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).map_err(|e| e.to_string())?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| format!("bad header {header:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|e| e.to_string())?);
        }
    }
    let length = length.ok_or("no Content-Length")?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    Ok(Request { method: method.into(), path: path.into(), body })
}

/// The fixture's `lifeboat.toml` with `extra` appended (a `[notify]` and a `[metrics]` section).
fn configure_monitoring(project: &support::Project, paths: &str, extra: &str) {
    configure(project);
    let path = project.dir().join("lifeboat.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("paths = [\"data\"]", &format!("paths = {paths}"));
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
}

fn notify_section(hook: &str, ping: &str, on_success: bool) -> String {
    format!(
        "[notify]\nwebhook = \"{hook}\"\nping_url = \"{ping}\"\ncommand = \"cat >> notes.jsonl; echo >> notes.jsonl\"\n\
         on_success = {on_success}\ntimeout_secs = 5\n\n[metrics]\nfile = \"metrics/lifeboat.prom\"\n"
    )
}

/// Checks a notification document's fields and types (docs/json.md, "The notification").
fn check_document(doc: &Value, project: &str, outcome: &str, exit_code: i64) {
    assert_eq!(doc["project"], project, "{doc}");
    assert_eq!(doc["kind"], "backup", "{doc}");
    assert_eq!(doc["outcome"], outcome, "{doc}");
    assert_eq!(doc["exit_code"], exit_code, "{doc}");
    assert!(doc["run_id"].as_u64().is_some(), "{doc}");
    assert!(!doc["host"].as_str().unwrap().is_empty(), "{doc}");
    assert!(doc["ended_at"].as_str().unwrap().ends_with('Z'), "{doc}");
    assert!(doc["duration_ms"].as_i64().unwrap() >= 0, "{doc}");
    for key in ["error", "downtime_ms", "archive_size_bytes", "archive_path", "started_at"] {
        assert!(doc.get(key).is_some(), "{key} is always present: {doc}");
    }
    if outcome == "completed" {
        assert!(doc["error"].is_null(), "{doc}");
    } else {
        assert!(!doc["error"].as_str().unwrap().is_empty(), "{doc}");
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn run_all(project: &support::Project, args: &[&str], outputs: &mut Vec<String>) -> Output {
    let output = run(project, args);
    outputs.push(describe(&output));
    output
}

#[test]
fn failures_reach_the_webhook_the_command_and_the_ping_and_successes_when_asked() {
    let Some((project, before)) = started_project() else { return };
    let receiver = Receiver::start();
    let hook = receiver.url(&format!("/hook/{HOOK_TOKEN}"));
    let ping = receiver.url(&format!("/ping/{PING_TOKEN}"));
    std::fs::create_dir(project.dir().join("metrics")).unwrap();
    let mut outputs = Vec::new();

    // 1. A successful backup, on_success off: the pings only.
    configure_monitoring(&project, "[\"data\"]", &notify_section(&hook, &ping, false));
    let first = {
        // The most verbose logs, the HTTP client's included, must not print a token either.
        let output = command(&project, &["--json", "-vv", "backup"]).env("RUST_LOG", "trace").output().unwrap();
        outputs.push(describe(&output));
        output
    };
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let requests = receiver.take();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [format!("/ping/{PING_TOKEN}/start"), format!("/ping/{PING_TOKEN}")], "{requests:?}");
    assert!(requests.iter().all(|r| r.method == "POST"), "{requests:?}");
    check_document(&json_of(&requests[1].body), project.name(), "completed", 0);
    assert!(!project.dir().join("notes.jsonl").exists(), "the command hears successes only with on_success");

    // 2. on_success: the webhook and the command hear the success too, with the report's figures.
    configure_monitoring(&project, "[\"data\"]", &notify_section(&hook, &ping, true));
    let second = run_all(&project, &["--json", "backup"], &mut outputs);
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    let report: Value = serde_json::from_slice(&second.stdout).unwrap();
    let requests = receiver.take();
    let hooks: Vec<&Request> = requests.iter().filter(|r| r.path == format!("/hook/{HOOK_TOKEN}")).collect();
    assert_eq!(hooks.len(), 1, "one document per run: {requests:?}");
    let doc = json_of(&hooks[0].body);
    check_document(&doc, project.name(), "completed", 0);
    assert_eq!(doc["run_id"], report["run_id"]);
    assert_eq!(doc["archive_size_bytes"], report["size_bytes"]);
    assert_eq!(doc["archive_path"], report["path"]);
    assert_eq!(doc["downtime_ms"], report["downtime_ms"]);
    let noted = std::fs::read_to_string(project.dir().join("notes.jsonl")).unwrap();
    let lines: Vec<&str> = noted.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{noted}");
    assert_eq!(json_of(lines[0].as_bytes()), doc, "the command gets the same document on stdin");

    // 3. A failing backup (a data path that does not exist): rolled back, exit 1, one document.
    configure_monitoring(&project, "[\"data\", \"missing\"]", &notify_section(&hook, &ping, false));
    let failed = run_all(&project, &["backup"], &mut outputs);
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    let requests = receiver.take();
    let hooks: Vec<&Request> = requests.iter().filter(|r| r.path.starts_with("/hook/")).collect();
    assert_eq!(hooks.len(), 1, "{requests:?}");
    let doc = json_of(&hooks[0].body);
    check_document(&doc, project.name(), "rolled_back", 1);
    assert!(doc["error"].as_str().unwrap().contains("missing"), "{doc}");
    assert!(requests.iter().any(|r| r.path == format!("/ping/{PING_TOKEN}/fail")), "{requests:?}");
    assert_invariants(&project, &before);

    // 4. Receivers down: the exit codes are those of the runs, the failure is logged.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let (dead_hook, dead_ping) = (format!("{dead}/hook/{HOOK_TOKEN}"), format!("{dead}/ping/{PING_TOKEN}"));
    configure_monitoring(&project, "[\"data\", \"missing\"]", &notify_section(&dead_hook, &dead_ping, true));
    let started = Instant::now();
    let down = run_all(&project, &["backup"], &mut outputs);
    assert_eq!(down.status.code(), Some(1), "the run's exit code is unchanged: {}", describe(&down));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("could not be delivered"), "{stderr}");
    assert!(stderr.contains(&format!("{dead}/…")), "the URL is shown redacted: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "retries are bounded");
    configure_monitoring(&project, "[\"data\"]", &notify_section(&dead_hook, &dead_ping, true));
    let ok = run_all(&project, &["backup"], &mut outputs);
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    assert!(receiver.take().is_empty());
    assert_invariants(&project, &before);

    // No token in any output, `journal show`, or the journal file itself.
    for id in 1..=5 {
        let shown = run_all(&project, &["journal", "show", &id.to_string()], &mut outputs);
        assert_eq!(shown.status.code(), Some(0));
    }
    run_all(&project, &["--json", "status"], &mut outputs);
    let journal = std::fs::read(project.dir().join(".lifeboat/journal.redb")).unwrap();
    for token in [HOOK_TOKEN, PING_TOKEN] {
        for output in &outputs {
            assert!(!output.contains(token), "token {token} printed:\n{output}");
        }
        assert!(!journal.windows(token.len()).any(|w| w == token.as_bytes()), "token {token} in the journal");
    }

    // The metrics file: strict text format, and the figures `status --json` reports.
    let text = std::fs::read_to_string(project.dir().join("metrics/lifeboat.prom")).unwrap();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // And a parser that is not ours reads the same gauges with the same values.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(scrape.samples.len(), samples.len(), "prometheus-parse read another number of samples:\n{text}");
    for read in &scrape.samples {
        let prometheus_parse::Value::Gauge(value) = read.value else {
            panic!("prometheus-parse did not read {} as a gauge: {:?}", read.metric, read.value)
        };
        let mut labels: Vec<(String, String)> = read.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.sort();
        assert_eq!(samples.get(&(read.metric.clone(), labels)), Some(&value), "{} differs", read.metric);
    }
    // And Prometheus's own checker (promtool, from Debian's prometheus package) accepts it,
    // lint included.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup-test-env installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool check metrics: {}\n{text}", describe(&checked));
    let status = run_json(&project, &["status"]);
    let figures = &status["metrics"];
    let name = project.name();
    let sample = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        let mut key: Vec<(String, String)> = vec![("project".into(), name.into())];
        key.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        key.sort();
        *samples.get(&(metric.to_owned(), key)).unwrap_or_else(|| panic!("no {metric} {labels:?} in\n{text}"))
    };
    let list = run_json(&project, &["list"]);
    assert_eq!(figures["backups"], list.as_array().unwrap().len());
    assert_eq!(sample("lifeboat_backups", &[]), 3.0);
    assert_eq!(sample("lifeboat_backups", &[]), figures["backups"].as_f64().unwrap());
    assert_eq!(sample("lifeboat_interrupted_runs", &[]), 0.0);
    assert_eq!(figures["interrupted_runs"], 0);
    assert_eq!(sample("lifeboat_last_archive_size_bytes", &[]), figures["last_archive_size_bytes"].as_f64().unwrap());
    assert_eq!(figures["last_archive_size_bytes"], status["last_backup"]["size_bytes"]);
    let last = &figures["last_run"];
    assert_eq!(last["run_id"], 5);
    assert_eq!(last["outcome"], "completed");
    assert_eq!(sample("lifeboat_last_run_success", &[]), 1.0);
    assert_eq!(sample("lifeboat_last_run_duration_seconds", &[]), last["duration_ms"].as_f64().unwrap() / 1000.0);
    assert_eq!(sample("lifeboat_last_run_downtime_seconds", &[]), last["downtime_ms"].as_f64().unwrap() / 1000.0);
    assert!(last["downtime_ms"].as_i64().unwrap() > 0);
    for (metric, key) in [
        ("lifeboat_last_success_timestamp_seconds", "last_success_at"),
        ("lifeboat_last_failure_timestamp_seconds", "last_failure_at"),
    ] {
        let at = figures[key]["backup"].as_str().unwrap_or_else(|| panic!("{key}: {figures}"));
        let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis() as f64 / 1000.0;
        assert_eq!(sample(metric, &[("kind", "backup")]), at, "{metric}");
    }
    let shown = run_json(&project, &["journal", "show", "4"]);
    let ended = shown["events"].as_array().unwrap().last().unwrap()["at"].as_str().unwrap().to_owned();
    assert_eq!(figures["last_failure_at"]["backup"], ended.as_str(), "the failure is run 4's end");
}

/// A strict parser of the Prometheus text format (0.0.4) as far as gauges go: every sample's
/// family has `# HELP` and `# TYPE gauge` before it, names and label names are valid, label values
/// are quoted with only `\\`, `\"` and `\n` escapes, values parse, no series repeats, and the
/// text ends with a newline. Returns the samples by (name, sorted labels).
type Series = (String, Vec<(String, String)>);
fn parse_prometheus(text: &str) -> Result<BTreeMap<Series, f64>, String> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    let (mut helped, mut typed) = (Vec::<String>::new(), Vec::<String>::new());
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_name(name) || helped.contains(&name.to_owned()) {
                return Err(format!("line {n}: bad or repeated HELP {line:?}"));
            }
            helped.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let parts: Vec<&str> = rest.split(' ').collect();
            if parts.len() != 2 || !valid_name(parts[0]) || parts[1] != "gauge" || typed.contains(&parts[0].to_owned())
            {
                return Err(format!("line {n}: bad TYPE {line:?}"));
            }
            typed.push(parts[0].to_owned());
        } else if line.starts_with('#') || line.is_empty() {
            return Err(format!("line {n}: unexpected {line:?}"));
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or(format!("line {n}: no value"))?;
            let value: f64 = value.parse().map_err(|_| format!("line {n}: bad value {value:?}"))?;
            let (name, mut labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => (name, parse_labels(rest).map_err(|e| format!("line {n}: {e}"))?),
            };
            if !valid_name(name) || !typed.contains(&name.to_owned()) || !helped.contains(&name.to_owned()) {
                return Err(format!("line {n}: sample of an undeclared family {name:?}"));
            }
            labels.sort();
            if samples.insert((name.to_owned(), labels), value).is_some() {
                return Err(format!("line {n}: repeated series"));
            }
        }
    }
    Ok(samples)
}

/// `a="x",b="y"}` into pairs.
fn parse_labels(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    loop {
        if let Some(tail) = rest.strip_prefix('}') {
            return if tail.is_empty() { Ok(labels) } else { Err(format!("text after the labels: {tail:?}")) };
        }
        let (name, tail) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &tail[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

#[test]
fn the_strict_parser_refuses_what_prometheus_refuses() {
    let good = "# HELP x_y A.\n# TYPE x_y gauge\nx_y{a=\"q\\\"\",b=\"2\"} 1.5\nx_y 3\n";
    assert_eq!(parse_prometheus(good).unwrap().len(), 2);
    for bad in [
        "x 1\n",
        "# HELP x A.\n# TYPE x gauge\nx 1",
        "# HELP x A.\n# TYPE x gauge\nx{a=\"1} 1\n",
        "# HELP x A.\n# TYPE x gauge\nx one\n",
        "# HELP x A.\n# TYPE x gauge\nx 1\nx 2\n",
        "# HELP x A.\n# TYPE x counter\nx 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}
