//! The README's quickstart, run as written against the example project (examples/demo) on the real
//! daemon, from the project directory: every `lifeboat ...` line of the Quickstart block must
//! succeed, the upgrade to the example's v2 package and the rollback included.

mod e2e;
mod support;

use e2e::{LIFEBOAT, describe};
use std::path::Path;
use std::process::Command;

/// The `lifeboat` command lines of the README's Quickstart block, comments dropped and `&&` chains
/// split.
fn quickstart_commands(readme: &str) -> Vec<Vec<String>> {
    let section = readme.split("## Quickstart").nth(1).expect("README has a Quickstart section");
    let block = section.split("```").nth(1).expect("the Quickstart has a code block");
    block
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or_default().split("&&").map(str::trim).collect::<Vec<_>>())
        .filter(|command| command.starts_with("lifeboat "))
        .map(|command| shell_words(command)[1..].to_vec())
        .collect()
}

/// Splits on spaces, keeping "double quoted" words whole (enough for the README).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

struct Down<'a> {
    dir: &'a Path,
    name: String,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.name, "down", "-v", "-t", "1"])
            .current_dir(self.dir)
            .output();
    }
}

#[test]
fn readme_quickstart_works_as_written_on_the_example_project() {
    if !support::docker_available() {
        return;
    }
    support::ensure_test_image();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = quickstart_commands(&readme);
    assert!(commands.len() >= 8, "the quickstart has its commands: {commands:?}");

    // The example project, with the test image (the demo script builds its own, same content).
    let dir = tempfile::tempdir().unwrap();
    let with_test_image = |path: &str| {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        text.replace("lifeboat-demo-busybox:1", support::TEST_IMAGE)
    };
    let compose = with_test_image("examples/demo/docker-compose.yml");
    std::fs::write(dir.path().join("docker-compose.yml"), &compose).unwrap();
    // The example's v2 package source, which the quickstart builds and upgrades to.
    std::fs::create_dir_all(dir.path().join("v2/deploy")).unwrap();
    std::fs::write(
        dir.path().join("v2/deploy/docker-compose.yml"),
        with_test_image("examples/demo/v2/deploy/docker-compose.yml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let name = format!("lbquick_{}", std::process::id());
    let _down = Down { dir: dir.path(), name: name.clone() };
    let up = Command::new("docker-compose").args(["-p", &name, "up", "-d"]).current_dir(dir.path()).output().unwrap();
    assert!(up.status.success(), "compose up: {}", describe(&up));

    for args in commands {
        let args: Vec<String> = args.into_iter().map(|a| if a == "app" { name.clone() } else { a }).collect();
        // Run from the project directory, as an operator who followed `cd` would.
        let output =
            Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(&args).current_dir(dir.path()).output().unwrap();
        assert!(output.status.success(), "lifeboat {}: {}", args.join(" "), describe(&output));
    }
    let list = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["--json", "list"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let kinds: Vec<&str> = list.as_array().unwrap().iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["manual", "auto", "pre-upgrade"], "{list}");
    let runs = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["--json", "journal", "list"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let ends: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert!(ends.contains(&("upgrade", "completed")), "{ends:?}");
    assert!(ends.contains(&("rollback", "completed")), "{ends:?}");
    // The rollback put v1's compose file back.
    assert_eq!(std::fs::read_to_string(dir.path().join("docker-compose.yml")).unwrap(), compose);
}
