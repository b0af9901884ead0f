//! Fixtures shared by the end-to-end tests: a Docker check that fails in CI instead of skipping, a
//! tiny busybox image built `FROM scratch` (no registry is reachable), and a throw-away compose
//! [`Project`] with a writer, a database with a healthcheck, a cache that depends on it and an idle
//! service.
//!
//! Use it from a test file in `tests/` with `mod support;`. Every fixture is synchronous, so it works
//! from plain `#[test]`s and from `#[tokio::test]`s alike: the Docker calls run on a private runtime
//! in a helper thread (see [`block_on`]).
// Each test file uses only part of the fixtures.
#![allow(dead_code, unused_imports)]

mod image;
mod project;

use std::future::Future;

use lifeboat::docker::Docker;

pub use image::{TEST_IMAGE, ensure_test_image};
pub use project::{PAYLOAD, Project, check_records};

/// Whether a Docker daemon answers. When none does: panics if `CI` is set (tests that need Docker
/// must fail there, not skip), else prints a loud notice and returns false so the test can return
/// early. Call it first in every test that needs Docker:
///
/// ```ignore
/// if !support::docker_available() { return; }
/// ```
pub fn docker_available() -> bool {
    match block_on(Docker::connect()) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set and Docker is not available, so this test fails instead of skipping: {e}");
            }
            eprintln!();
            eprintln!("=================================================================");
            eprintln!("SKIPPING a Docker test: {e}");
            eprintln!("(with CI set this is a failure; start dockerd to run the test)");
            eprintln!("=================================================================");
            eprintln!();
            false
        }
    }
}

/// Connects to the daemon, panicking with the adapter's message when none answers.
pub fn docker() -> Docker {
    block_on(Docker::connect()).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `future` to completion on a fresh current-thread runtime in a helper thread, so it can be
/// called from synchronous code and from inside another tokio runtime (where `Runtime::block_on`
/// would panic). A panic in the future is resumed on the caller's thread.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime for a test fixture")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
