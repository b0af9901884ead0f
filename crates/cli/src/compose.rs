//! The compose CLI runner and the compose file reader.
//!
//! Deployments go through the operator's own compose command (`docker-compose` or `docker compose`,
//! configured in `lifeboat.toml`) rather than the Engine API, so lifeboat creates containers exactly
//! as the operator's tooling would. Every command runs in the project directory with
//! `-p <project> -f <file>`; its stderr is captured and shown, indented, when it fails.
//!
//! Commands run on `tokio::process` and not `std::process`: a compose command can take minutes
//! (creating containers, waiting on `depends_on` conditions), and the executor that calls it is async,
//! so a blocking wait would hold a runtime worker for that long. `kill_on_drop` also means a run that
//! is cancelled (Ctrl-C, a timeout around the future) does not leave a compose process behind.
//!
//! The compose file is read only for `depends_on`, which compose v1 does not record on containers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// An error of the compose runner or the compose file reader.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The configured compose command is empty.
    #[error(
        "the compose command is empty; set project.compose_command in lifeboat.toml to \
         \"docker-compose\" or \"docker compose\""
    )]
    EmptyCommand,
    /// The compose program could not be started.
    #[error("cannot run '{command}': {source}; is it installed and on PATH?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The compose command ran and failed.
    #[error("'{command}' failed ({status}); its output:\n{}", indent(.stderr))]
    Failed { command: String, status: ExitStatus, stderr: String },
    /// The compose file could not be read.
    #[error("cannot read compose file {}: {source}; check project.compose_file in lifeboat.toml", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The compose file is not YAML, or not the shape of a compose file.
    #[error(
        "cannot parse compose file {}: {reason}; check it with 'docker-compose config'",
        .path.display()
    )]
    Parse { path: PathBuf, reason: String },
}

fn indent(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return "    (no output)".to_owned();
    }
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}

/// One compose project, and the command that manages it.
#[derive(Clone, Debug)]
pub struct Compose {
    /// The compose command split on whitespace: program first, then its own arguments
    /// (`["docker", "compose"]`).
    command: Vec<String>,
    project: String,
    file: PathBuf,
    dir: PathBuf,
}

impl Compose {
    /// A runner for project `project` whose compose file is `file` (relative to `dir` or absolute),
    /// run in `dir` with `command` (`"docker-compose"` or `"docker compose"`).
    pub fn new(
        command: &str,
        project: &str,
        file: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
    ) -> Result<Compose, ComposeError> {
        let command: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if command.is_empty() {
            return Err(ComposeError::EmptyCommand);
        }
        Ok(Compose { command, project: project.to_owned(), file: file.into(), dir: dir.into() })
    }

    /// The compose project name.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The compose file's path (joined to the project directory when relative).
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// `up -d [services...]`: creates and starts the services (all when `services` is empty).
    pub async fn up(&self, services: &[String]) -> Result<(), ComposeError> {
        let mut args = vec!["up", "-d"];
        args.extend(services.iter().map(String::as_str));
        self.run(&args).await.map(drop)
    }

    /// `stop [services...]`: stops the services (all when `services` is empty), keeping containers.
    pub async fn stop(&self, services: &[String]) -> Result<(), ComposeError> {
        let mut args = vec!["stop"];
        args.extend(services.iter().map(String::as_str));
        self.run(&args).await.map(drop)
    }

    /// `down`: stops and removes the project's containers and networks. Volumes are kept.
    pub async fn down(&self) -> Result<(), ComposeError> {
        self.run(&["down"]).await.map(drop)
    }

    /// `ps`: the compose command's own table of the project's containers.
    pub async fn ps(&self) -> Result<String, ComposeError> {
        self.run(&["ps"]).await
    }

    /// Runs `<command> -p <project> -f <file> <args...>` in the project directory and returns its
    /// stdout. A non-zero exit is an error that carries the command's stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String, ComposeError> {
        let file = self.file.to_string_lossy();
        let mut full: Vec<&str> = self.command.iter().map(String::as_str).collect();
        full.extend(["-p", &self.project, "-f", &file]);
        full.extend_from_slice(args);
        let shown = full.join(" ");
        let output = tokio::process::Command::new(full[0])
            .args(&full[1..])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| ComposeError::Spawn { command: shown.clone(), source })?;
        if !output.status.success() {
            return Err(ComposeError::Failed {
                command: shown,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The `depends_on` of every service in the compose file.
    pub fn dependencies(&self) -> Result<BTreeMap<String, BTreeSet<String>>, ComposeError> {
        read_dependencies(&self.file_path())
    }
}

/// Reads a compose file and returns, for every service, the services in its `depends_on`
/// (list form `[db]` or map form `{db: {condition: ...}}`); services without one map to an empty set.
pub fn read_dependencies(path: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, ComposeError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ComposeError::ReadFile { path: path.to_owned(), source })?;
    parse_dependencies(&text).map_err(|reason| ComposeError::Parse { path: path.to_owned(), reason })
}

#[derive(serde::Deserialize)]
struct ComposeFile {
    services: Option<BTreeMap<String, Option<Service>>>,
}

#[derive(serde::Deserialize)]
struct Service {
    depends_on: Option<DependsOn>,
    profiles: Option<Vec<String>>,
    image: Option<String>,
}

/// The image each service of a compose file (its text) names, for the services that name one
/// (a service with only `build:` has its image built, not pulled).
pub fn images(text: &str) -> Result<BTreeMap<String, String>, String> {
    let file: ComposeFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    Ok(file
        .services
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, service)| service.and_then(|s| s.image).map(|image| (name, image)))
        .collect())
}

/// The services a compose file starts by default: those without `profiles`.
pub fn default_services(path: &Path) -> Result<Vec<String>, ComposeError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ComposeError::ReadFile { path: path.to_owned(), source })?;
    let file: ComposeFile = serde_yaml_ng::from_str(&text)
        .map_err(|e| ComposeError::Parse { path: path.to_owned(), reason: e.to_string() })?;
    Ok(file
        .services
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.as_ref().and_then(|s| s.profiles.as_ref()).is_none_or(Vec::is_empty))
        .map(|(name, _)| name)
        .collect())
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, serde::de::IgnoredAny>),
}

fn parse_dependencies(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let file: ComposeFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let services = file.services.ok_or_else(|| "it has no 'services' section".to_owned())?;
    Ok(services
        .into_iter()
        .map(|(name, service)| {
            let needs = match service.and_then(|s| s.depends_on) {
                None => BTreeSet::new(),
                Some(DependsOn::List(list)) => list.into_iter().collect(),
                Some(DependsOn::Map(map)) => map.into_keys().collect(),
            };
            (name, needs)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn depends_on_in_list_and_map_form() {
        let deps = parse_dependencies(
            r#"
version: "2.4"
services:
  db:
    image: postgres
  cache:
    image: redis
    depends_on:
      db:
        condition: service_healthy
  app:
    image: app
    depends_on: [db, cache]
  bare:
"#,
        )
        .unwrap();
        assert_eq!(deps["db"], set(&[]));
        assert_eq!(deps["cache"], set(&["db"]));
        assert_eq!(deps["app"], set(&["cache", "db"]));
        assert_eq!(deps["bare"], set(&[]));
    }

    #[test]
    fn a_file_without_services_is_an_error() {
        let err = parse_dependencies("version: '2'\n").unwrap_err();
        assert_eq!(err, "it has no 'services' section");
        assert!(parse_dependencies("services: [").is_err());
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert!(matches!(Compose::new("  ", "p", "docker-compose.yml", "."), Err(ComposeError::EmptyCommand)));
    }

    #[tokio::test]
    async fn a_failing_command_shows_its_stderr_indented() {
        let compose = Compose::new("sh -c", "p", "f.yml", ".").unwrap();
        // `sh -c -p ...`: sh rejects the arguments and says so on stderr.
        let err = compose.run(&[]).await.unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("'sh -c -p p -f f.yml' failed ("), "{message}");
        assert!(message.contains("\n    "), "{message}");
    }
}
