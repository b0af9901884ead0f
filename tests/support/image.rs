//! The test image: a static busybox in an otherwise empty image, built through the API.
//!
//! No registry is reachable from the test machines, so nothing can be pulled; Debian's
//! `busybox-static` gives a single static binary that runs in a `FROM scratch` image. The build uses
//! the classic builder (API 1.41 has no BuildKit session through bollard), whose `COPY rootfs/ /`
//! keeps the applet symlinks.

use std::sync::Mutex;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::block_on;

/// The tag of the test image. Bump the version when the image's content changes.
pub const TEST_IMAGE: &str = "lifeboat-test-busybox:1";

/// The static busybox the image is made of (Debian package `busybox-static`).
const BUSYBOX: &str = "/usr/bin/busybox";

const DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n";

/// Serialises builds within one test process; the image's presence is checked again under the lock.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds [`TEST_IMAGE`] unless the daemon already has it. Safe to call from many tests and many test
/// processes at once: within a process builds are serialised; across processes two concurrent
/// builds both succeed and the tag ends on one of two identical images. Panics when the image cannot
/// be built.
pub fn ensure_test_image() {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    block_on(async {
        let docker = super::docker();
        if docker.api().inspect_image(TEST_IMAGE).await.is_ok() {
            return;
        }
        let context = build_context();
        let options =
            BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(TEST_IMAGE).rm(true).forcerm(true).build();
        let mut output = String::new();
        let mut stream = docker.api().build_image(options, None, Some(bollard::body_full(context.into()))).boxed();
        while let Some(item) = stream.next().await {
            let info = item.unwrap_or_else(|e| panic!("building {TEST_IMAGE} failed: {e}\n{output}"));
            if let Some(detail) = info.error_detail {
                panic!("building {TEST_IMAGE} failed: {detail:?}\n{output}");
            }
            if let Some(line) = info.stream {
                output.push_str(&line);
            }
        }
        docker
            .api()
            .inspect_image(TEST_IMAGE)
            .await
            .unwrap_or_else(|e| panic!("{TEST_IMAGE} is missing after its build: {e}\n{output}"));
    });
}

/// The build context: the Dockerfile and `rootfs/` with `/bin/busybox`, a symlink per applet and a
/// world-writable `/tmp`.
fn build_context() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read {BUSYBOX} ({e}); install Debian's busybox-static to build the test image")
    });
    let applets = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("cannot run '{BUSYBOX} --list': {e}"));
    let applets = String::from_utf8(applets.stdout).expect("busybox lists applets in ASCII");

    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", 0o644, DOCKERFILE.as_bytes());
    append_dir(&mut tar, "rootfs/", 0o755);
    append_dir(&mut tar, "rootfs/bin/", 0o755);
    append_dir(&mut tar, "rootfs/tmp/", 0o1777);
    append_file(&mut tar, "rootfs/bin/busybox", 0o755, &busybox);
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, format!("rootfs/bin/{applet}"), "busybox")
            .expect("append a symlink to the build context");
    }
    tar.into_inner().expect("finish the build context")
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    tar.append_data(&mut header, path, data).expect("append a file to the build context");
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(mode);
    tar.append_data(&mut header, path, std::io::empty()).expect("append a directory to the build context");
}
