//! The README's quickstart, run as written against the example project (examples/demo) on the real
//! daemon: every `lifeboat ...` line of the Quickstart block must succeed.

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
    let compose = std::fs::read_to_string(root.join("examples/demo/docker-compose.yml")).unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        compose.replace("lifeboat-demo-busybox:1", support::TEST_IMAGE),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let name = format!("lbquick_{}", std::process::id());
    let _down = Down { dir: dir.path(), name: name.clone() };
    let up = Command::new("docker-compose").args(["-p", &name, "up", "-d"]).current_dir(dir.path()).output().unwrap();
    assert!(up.status.success(), "compose up: {}", describe(&up));

    for args in commands {
        let args: Vec<String> = args.into_iter().map(|a| if a == "app" { name.clone() } else { a }).collect();
        let output = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(&args).output().unwrap();
        assert!(output.status.success(), "lifeboat {}: {}", args.join(" "), describe(&output));
    }
    let list = Command::new(LIFEBOAT).arg("-C").arg(dir.path()).args(["--json", "list"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "the manual and the auto backup are listed: {list}");
}
