//! `agora image import` and `agora image list` through the real binary, with a real
//! busybox OCI image layout, as a directory and as a tar.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agora_agent::images::ImageStore;
use agora_tests::images::{APPLETS, BUSYBOX_IMAGE, busybox_layout, layout_tar, require_busybox};
use agora_tests::node_bin;

/// Runs `agora image <args>` with `AGORA_IMAGE_STORE` unset unless given.
fn agora_image(args: &[&str], env_store: Option<&Path>) -> Output {
    let mut command = Command::new(node_bin!());
    command
        .arg("image")
        .args(args)
        .env_remove("AGORA_IMAGE_STORE");
    if let Some(store) = env_store {
        command.env("AGORA_IMAGE_STORE", store);
    }
    command.output().expect("agora-node runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A busybox layout in a temporary directory, and a store path beside it (created
/// by the first import).
struct Scratch {
    /// Holds `layout` and `store`; removed on drop.
    dir: tempfile::TempDir,
    layout: PathBuf,
    store: PathBuf,
}

impl Scratch {
    /// `None` when busybox is missing and the test is skipped.
    fn new() -> Option<Self> {
        require_busybox()?;
        let dir = tempfile::tempdir().unwrap();
        let layout = busybox_layout(dir.path()).unwrap();
        let store = dir.path().join("store");
        Some(Self { dir, layout, store })
    }

    fn store_arg(&self) -> &str {
        self.store.to_str().unwrap()
    }

    /// `agora image import <source> <args> --store <store>`.
    fn import(&self, source: &Path, args: &[&str]) -> Output {
        let mut all = vec!["import", source.to_str().unwrap()];
        all.extend(args);
        all.extend(["--store", self.store_arg()]);
        agora_image(&all, None)
    }
}

fn succeeded(output: &Output) -> bool {
    if !output.status.success() {
        eprintln!("stdout: {}\nstderr: {}", stdout(output), stderr(output));
    }
    output.status.success()
}

#[test]
fn imports_a_layout_directory_and_a_tar_and_lists_them() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let Scratch { dir, layout, store } = &scratch;
    let store_arg = scratch.store_arg();

    // A directory, named by its index annotation.
    let output = scratch.import(layout, &[]);
    assert!(succeeded(&output));
    let out = stdout(&output);
    assert!(out.starts_with("imported busybox (sha256:"), "{out}");
    assert!(
        out.contains("1 layer, 1 unpacked, 0 already in the store"),
        "{out}"
    );

    // A tar of it, under another name, with the store from the environment.
    let tar = layout_tar(layout, &dir.path().join("busybox.tar")).unwrap();
    let output = agora_image(
        &[
            "import",
            tar.to_str().unwrap(),
            "--name",
            "library/busybox:1.36",
        ],
        Some(store),
    );
    assert!(succeeded(&output));
    let out = stdout(&output);
    assert!(out.contains("imported library/busybox:1.36"), "{out}");
    assert!(
        out.contains("0 unpacked, 1 already in the store"),
        "the layer is shared: {out}"
    );

    let output = agora_image(&["list", "--store", store_arg], None);
    assert!(succeeded(&output));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with(BUSYBOX_IMAGE), "{table}");
    assert!(lines[2].starts_with("library/busybox:1.36"), "{table}");

    let output = agora_image(&["list", "--json"], Some(store));
    assert!(succeeded(&output));
    let images: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(images[0]["name"], BUSYBOX_IMAGE);
    assert_eq!(images[0]["layers"], 1);
    assert_eq!(images[0]["manifest_digest"], images[1]["manifest_digest"]);

    // What an agent gets for it: one unpacked layer with busybox and its applets.
    let image = ImageStore::open(store)
        .unwrap()
        .resolve(BUSYBOX_IMAGE)
        .unwrap();
    let [root] = image.layers.as_slice() else {
        panic!("one layer expected: {:?}", image.layers);
    };
    assert!(root.join("bin/busybox").is_file());
    for applet in APPLETS {
        assert_eq!(
            fs::read_link(root.join("bin").join(applet)).unwrap(),
            Path::new("busybox")
        );
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534"), "{passwd}");
    assert_eq!(image.config.cmd, vec!["sh"]);
}

#[test]
fn bad_imports_fail_with_clear_errors_and_store_nothing() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let Scratch { dir, layout, store } = &scratch;
    let store_arg = scratch.store_arg();

    let missing = dir.path().join("no-such-image");
    let output = scratch.import(&missing, &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot import"),
        "{}",
        stderr(&output)
    );

    let output = scratch.import(layout, &["--name", "../etc"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("invalid image name '../etc'"),
        "{}",
        stderr(&output)
    );

    // Flip one byte of the layer blob: the digest no longer matches.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let mut bytes = fs::read(blob(layer_digest)).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x55;
    fs::write(blob(layer_digest), &bytes).unwrap();
    let output = scratch.import(layout, &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(layer_digest), "names the blob: {message}");
    assert!(
        message.contains("image 'busybox'"),
        "names the image: {message}"
    );

    let output = agora_image(&["list", "--store", store_arg], None);
    assert!(succeeded(&output));
    assert_eq!(
        stdout(&output).lines().count(),
        1,
        "only the header: {}",
        stdout(&output)
    );
    let layers = fs::read_dir(store.join("layers/sha256")).unwrap().count();
    assert_eq!(layers, 0, "nothing of the failed import was kept");
}
