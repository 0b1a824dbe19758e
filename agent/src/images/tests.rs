//! The image store against layouts built here, byte by byte: imports, sharing,
//! whiteouts, and every way a layout can be bad.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", layout::hex(&Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One entry of a test layer; paths are written raw, so that bad ones can be too.
enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Owned(&'a str, u32, u64, u64, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_600_000_000);
    header.set_uid(0);
    header.set_gid(0);
    // Raw bytes: `Header::set_path` would refuse the hostile paths some tests need.
    let name = &mut header.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    header
}

/// An uncompressed layer tar holding `entries`, in order.
fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (mut header, data): (tar::Header, &[u8]) = match *entry {
            Entry::Dir(path, mode) => (header(path, tar::EntryType::Directory, mode, 0), b""),
            Entry::File(path, mode, data) => (
                header(path, tar::EntryType::Regular, mode, data.len() as u64),
                data,
            ),
            Entry::Owned(path, mode, uid, gid, data) => {
                let mut h = header(path, tar::EntryType::Regular, mode, data.len() as u64);
                h.set_uid(uid);
                h.set_gid(gid);
                (h, data)
            }
            Entry::Symlink(path, target) => {
                let mut h = header(path, tar::EntryType::Symlink, 0o777, 0);
                h.set_link_name(target).unwrap();
                (h, b"")
            }
            Entry::Hardlink(path, target) => {
                let mut h = header(path, tar::EntryType::Link, 0o644, 0);
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                (h, b"")
            }
        };
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Writes `bytes` as a blob of the layout at `dir`; returns its descriptor JSON.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let digest = sha256(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Writes an image manifest (and its config) for `layers` (media type, blob bytes)
/// into the layout at `dir`; returns the manifest's descriptor.
fn manifest(dir: &Path, layers: &[(&str, Vec<u8>)]) -> serde_json::Value {
    let config = serde_json::json!({
        "architecture": layout::host_architecture(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hello"],
            "Entrypoint": null,
            "Cmd": ["sh"],
            "WorkingDir": "/work",
            "User": ""
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(media, bytes)| blob(dir, media, bytes))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layers,
    });
    blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    )
}

/// Writes `oci-layout` and `index.json` listing `manifests`.
fn index(dir: &Path, manifests: Vec<serde_json::Value>) {
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// A whole layout at `dir` of one image named `ref_name` (if any) with `layers`.
fn layout_with(dir: &Path, ref_name: Option<&str>, layers: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut descriptor = manifest(dir, layers);
    if let Some(name) = ref_name {
        descriptor["annotations"] = serde_json::json!({layout::REF_NAME_ANNOTATION: name});
    }
    index(dir, vec![descriptor]);
    dir.to_path_buf()
}

fn base_layer() -> Vec<u8> {
    gzip(&layer_tar(&[
        Entry::Dir("bin", 0o755),
        Entry::File("bin/tool", 0o4755, b"#!/bin/sh\necho tool\n"),
        Entry::Symlink("bin/alias", "tool"),
        Entry::Hardlink("bin/same", "bin/tool"),
        Entry::Dir("etc", 0o755),
        Entry::Owned("etc/owned", 0o640, 1000, 1001, b"mine"),
        Entry::Dir("gone", 0o755),
        Entry::File("gone/file", 0o644, b"x"),
        Entry::Dir("opaque", 0o755),
        Entry::File("opaque/lower", 0o644, b"lower"),
        Entry::File("./dotted", 0o600, b"dot"),
    ]))
}

fn top_layer() -> Vec<u8> {
    gzip(&layer_tar(&[
        Entry::File(".wh.gone", 0o644, b""),
        Entry::Dir("opaque", 0o755),
        Entry::File("opaque/.wh..wh..opq", 0o644, b""),
        Entry::File("opaque/upper", 0o644, b"upper"),
        Entry::File("etc/added", 0o644, b"added"),
    ]))
}

struct Fixture {
    /// Keeps the directories alive.
    _tmp: tempfile::TempDir,
    store: ImageStore,
    sources: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let sources = tmp.path().join("sources");
    fs::create_dir(&sources).unwrap();
    Fixture {
        _tmp: tmp,
        store,
        sources,
    }
}

impl Fixture {
    fn source(&self, name: &str) -> PathBuf {
        let dir = self.sources.join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Imports `source` as `name`, which must fail and leave the store empty;
    /// returns the error.
    fn refused_import(&self, source: &Path, name: &str) -> ImageError {
        let error = self.store.import(source, Some(name)).unwrap_err();
        self.assert_store_empty();
        error
    }

    /// Asserts that the store holds no image, no layer and no import in progress.
    fn assert_store_empty(&self) {
        for sub in ["images", "layers/sha256", "tmp"] {
            let dir = self.store.dir().join(sub);
            let left: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            assert!(
                left.is_empty(),
                "{} should be empty: {left:?}",
                dir.display()
            );
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn imports_a_layout_and_resolves_it() {
    let f = fixture();
    let source = layout_with(
        &f.source("app"),
        Some("app:1.0"),
        &[(LAYER_GZIP, base_layer())],
    );
    let imported = f.store.import(&source, None).unwrap();
    assert_eq!(imported.name, "app:1.0");
    assert_eq!(imported.unpacked_layers, 1);
    assert_eq!(imported.layer_digests.len(), 1);

    let image = f.store.resolve("app:1.0").unwrap();
    assert_eq!(image.manifest_digest, imported.manifest_digest);
    assert_eq!(image.config.env, vec!["PATH=/bin", "GREETING=hello"]);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert!(image.config.entrypoint.is_empty());
    assert_eq!(image.config.working_dir.as_deref(), Some("/work"));
    assert_eq!(image.config.user, None);
    let [root] = image.layers.as_slice() else {
        panic!("one layer expected: {:?}", image.layers);
    };
    assert!(root.starts_with(f.store.dir().join("layers/sha256")));

    let tool = fs::symlink_metadata(root.join("bin/tool")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o4755,
        "setuid bit kept"
    );
    assert_eq!(
        fs::read(root.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        fs::read_link(root.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    let same = fs::symlink_metadata(root.join("bin/same")).unwrap();
    assert_eq!(same.ino(), tool.ino(), "hard link shares the inode");
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert_eq!(fs::read(root.join("dotted")).unwrap(), b"dot");
    if is_root() {
        let owned = fs::metadata(root.join("etc/owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1000, 1001));
    }
    assert_eq!(
        f.store.list().unwrap(),
        vec![ImageSummary {
            name: "app:1.0".into(),
            manifest_digest: imported.manifest_digest,
            layers: 1,
            size_bytes: base_layer().len() as u64,
        }]
    );
    assert!(
        fs::read_dir(f.store.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn layers_are_unpacked_once_and_shared() {
    let f = fixture();
    let one = layout_with(&f.source("one"), None, &[(LAYER_GZIP, base_layer())]);
    let two = layout_with(
        &f.source("two"),
        None,
        &[(LAYER_GZIP, base_layer()), (LAYER_GZIP, top_layer())],
    );
    assert_eq!(
        f.store.import(&one, Some("one")).unwrap().unpacked_layers,
        1
    );
    let second = f.store.import(&two, Some("library/two:latest")).unwrap();
    assert_eq!(
        second.unpacked_layers, 1,
        "the base layer is already in the store"
    );
    let again = f.store.import(&two, Some("library/two:latest")).unwrap();
    assert_eq!(again.unpacked_layers, 0, "re-importing unpacks nothing");

    let one = f.store.resolve("one").unwrap();
    let two = f.store.resolve("library/two:latest").unwrap();
    assert_eq!(two.layers.len(), 2);
    assert_eq!(
        one.layers[0], two.layers[0],
        "the same directory serves both images"
    );
    let layer_count = fs::read_dir(f.store.dir().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(layer_count, 2);
    let names: Vec<String> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["library/two:latest", "one"]);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let f = fixture();
    let source = layout_with(
        &f.source("w"),
        None,
        &[(LAYER_GZIP, base_layer()), (LAYER_GZIP, top_layer())],
    );
    f.store.import(&source, Some("w")).unwrap();
    let image = f.store.resolve("w").unwrap();
    let top = &image.layers[1];
    let whiteout = fs::symlink_metadata(top.join("gone")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&whiteout.file_type()),
        "a whiteout is a character device"
    );
    assert_eq!(whiteout.rdev(), 0, "with device number 0/0");
    assert!(!top.join(".wh.gone").exists());
    assert!(!top.join("opaque/.wh..wh..opq").exists());
    let mut value = [0u8; 8];
    let path = std::ffi::CString::new(top.join("opaque").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(
        len,
        1,
        "opaque xattr set: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(value[0], b'y');

    // What overlayfs makes of it, where this process may mount.
    let merged = f.sources.join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = format!("lowerdir={}:{}", top.display(), image.layers[0].display());
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let target = c(merged.to_str().unwrap());
    // SAFETY: valid NUL-terminated strings; the mount is undone below.
    let mounted = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            c(&lower).as_ptr().cast(),
        )
    } == 0;
    if !mounted {
        println!(
            "overlay check skipped: cannot mount overlayfs here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let seen = (
        merged.join("gone").exists(),
        merged.join("opaque/lower").exists(),
        merged.join("opaque/upper").exists(),
        merged.join("bin/tool").exists(),
        merged.join("etc/added").exists(),
    );
    // SAFETY: `target` is the mount point mounted above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(seen, (false, false, true, true, true));
}

/// Imports a layout whose one layer holds `entries`; returns the error.
fn import_layer(f: &Fixture, entries: &[Entry]) -> ImageError {
    let source = layout_with(
        &f.source("bad"),
        None,
        &[(LAYER_GZIP, gzip(&layer_tar(entries)))],
    );
    f.store.import(&source, Some("bad")).unwrap_err()
}

#[test]
fn entries_escaping_the_layer_are_refused() {
    let f = fixture();
    let outside = f.sources.join("outside");
    fs::create_dir(&outside).unwrap();
    let symlink_target = outside.to_str().unwrap().to_string();
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![Entry::File("../evil", 0o644, b"x")], "escapes"),
        (vec![Entry::File("a/../../evil", 0o644, b"x")], "escapes"),
        (vec![Entry::File("/evil", 0o644, b"x")], "absolute"),
        (
            vec![
                Entry::Symlink("link", &symlink_target),
                Entry::File("link/evil", 0o644, b"x"),
            ],
            "symlink",
        ),
        (
            vec![
                Entry::Symlink("up", ".."),
                Entry::File("up/evil", 0o644, b"x"),
            ],
            "symlink",
        ),
        (vec![Entry::Hardlink("h", "../../etc/passwd")], "escapes"),
    ];
    for (entries, expected) in cases {
        let error = import_layer(&f, &entries);
        let message = error.to_string();
        assert!(matches!(error, ImageError::Layer { .. }), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("image 'bad'"), "{message}");
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing written outside"
        );
        assert!(!f.sources.join("evil").exists());
        f.assert_store_empty();
    }
}

#[test]
fn a_layer_cannot_set_overlay_xattrs_of_its_own() {
    if !is_root() {
        eprintln!("skipped: trusted.* xattrs need root");
        return;
    }
    let f = fixture();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
        .unwrap();
    let mut dir = header("redirected", tar::EntryType::Directory, 0o755, 0);
    dir.set_cksum();
    builder.append(&dir, &b""[..]).unwrap();
    let layer = gzip(&builder.into_inner().unwrap());
    let source = layout_with(&f.source("x"), None, &[(LAYER_GZIP, layer)]);
    f.store.import(&source, Some("x")).unwrap();
    let image = f.store.resolve("x").unwrap();
    let path = std::ffi::CString::new(
        image.layers[0]
            .join("redirected")
            .as_os_str()
            .as_encoded_bytes(),
    )
    .unwrap();
    let mut value = [0u8; 16];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.redirect".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(len, -1, "the layer's overlay redirect was not applied");
}

#[test]
fn a_layer_not_matching_its_digest_is_refused() {
    let f = fixture();
    let dir = f.source("tampered");
    let source = layout_with(
        &dir,
        None,
        &[(LAYER_GZIP, base_layer()), (LAYER_GZIP, top_layer())],
    );
    let image = f.store.import(&source, Some("ok")).unwrap();
    let digest = &image.layer_digests[1];
    let blob = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();

    let fresh = fixture();
    let error = fresh.store.import(&source, Some("tampered")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ImageError::Blob { .. }), "{message}");
    assert!(
        message.contains(digest.as_str()),
        "names the blob: {message}"
    );
    assert!(message.contains("'tampered'"), "names the image: {message}");
    assert!(message.contains("does not match its digest"), "{message}");
    fresh.assert_store_empty();
}

#[test]
fn a_missing_blob_is_refused() {
    let f = fixture();
    let dir = f.source("missing");
    let source = layout_with(&dir, None, &[(LAYER_GZIP, base_layer())]);
    let layer = sha256(&base_layer());
    fs::remove_file(dir.join("blobs/sha256").join(&layer["sha256:".len()..])).unwrap();
    let message = f.refused_import(&source, "missing").to_string();
    assert!(
        message.contains(&layer) && message.contains("missing"),
        "{message}"
    );
}

#[test]
fn truncated_layers_are_refused() {
    let f = fixture();
    // A blob shorter than its descriptor says.
    let dir = f.source("short");
    let source = layout_with(&dir, None, &[(LAYER_GZIP, base_layer())]);
    let layer = sha256(&base_layer());
    let path = dir.join("blobs/sha256").join(&layer["sha256:".len()..]);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let message = f.refused_import(&source, "short").to_string();
    assert!(message.contains("truncated"), "{message}");

    // A gzip stream cut short, described as it is (digest and size match).
    let full = base_layer();
    let cut = full[..full.len() / 2].to_vec();
    let source = layout_with(&f.source("cut-gzip"), None, &[(LAYER_GZIP, cut)]);
    let error = f.store.import(&source, Some("cut")).unwrap_err();
    assert!(matches!(error, ImageError::Layer { .. }), "{error}");
    f.assert_store_empty();

    // An uncompressed tar cut at an entry boundary, without its end-of-archive blocks.
    let tar = layer_tar(&[Entry::File("a", 0o644, b"a"), Entry::File("b", 0o644, b"b")]);
    let cut = tar[..1024].to_vec();
    let source = layout_with(&f.source("cut-tar"), None, &[(LAYER_TAR, cut)]);
    let message = f.refused_import(&source, "cut").to_string();
    assert!(message.contains("truncated"), "{message}");

    // A tar cut inside an entry's data.
    let cut = tar[..512 + 100].to_vec();
    let source = layout_with(&f.source("cut-entry"), None, &[(LAYER_TAR, cut)]);
    let message = f.refused_import(&source, "cut").to_string();
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn unknown_images_and_corrupt_records_give_clear_errors() {
    let f = fixture();
    let error = f.store.resolve("nope:1").unwrap_err();
    assert!(matches!(&error, ImageError::NotFound { name, .. } if name == "nope:1"));
    let message = error.to_string();
    assert!(
        message.contains("image 'nope:1' is not in the store at"),
        "{message}"
    );
    assert!(
        message.contains(&f.store.dir().display().to_string()),
        "{message}"
    );
    assert!(message.contains("agora image import"), "{message}");

    assert!(matches!(
        f.store.resolve("../x"),
        Err(ImageError::InvalidName { .. })
    ));

    fs::write(f.store.dir().join("images/broken.json"), b"{\"name\": 12").unwrap();
    let error = f.store.resolve("broken").unwrap_err();
    assert!(matches!(error, ImageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("broken.json"), "{error}");
    assert!(matches!(f.store.list(), Err(ImageError::Corrupt { .. })));

    // A record whose layer vanished from the store.
    let source = layout_with(&f.source("v"), None, &[(LAYER_GZIP, base_layer())]);
    let imported = f.store.import(&source, Some("vanished")).unwrap();
    let hex = &imported.layer_digests[0]["sha256:".len()..];
    fs::remove_dir_all(f.store.dir().join("layers/sha256").join(hex)).unwrap();
    let message = f.store.resolve("vanished").unwrap_err().to_string();
    assert!(
        message.contains("missing") && message.contains(hex),
        "{message}"
    );
}

#[test]
fn names_come_from_the_index_or_the_caller() {
    let f = fixture();
    let unnamed = layout_with(&f.source("unnamed"), None, &[(LAYER_GZIP, base_layer())]);
    let error = f.store.import(&unnamed, None).unwrap_err();
    assert!(matches!(error, ImageError::NoName { .. }), "{error}");
    assert!(error.to_string().contains("--name"), "{error}");

    let error = f.store.import(&unnamed, Some("../../etc")).unwrap_err();
    assert!(matches!(error, ImageError::InvalidName { .. }), "{error}");

    let hostile = layout_with(
        &f.source("hostile"),
        Some("../escape"),
        &[(LAYER_GZIP, base_layer())],
    );
    let error = f.store.import(&hostile, None).unwrap_err();
    assert!(matches!(error, ImageError::InvalidName { .. }), "{error}");
    f.assert_store_empty();

    let error = f
        .store
        .import(&f.sources.join("absent"), Some("x"))
        .unwrap_err();
    assert!(matches!(error, ImageError::Source { .. }), "{error}");
    let error = f
        .store
        .import(&f.source("empty-dir"), Some("x"))
        .unwrap_err();
    assert!(error.to_string().contains("no index.json"), "{error}");
}

#[test]
fn imports_a_tar_of_a_layout_and_a_multi_platform_index() {
    let f = fixture();
    let dir = f.source("multi");
    let ours = manifest(&dir, &[(LAYER_GZIP, base_layer())]);
    let theirs = manifest(&dir, &[(LAYER_GZIP, top_layer())]);
    let mut ours_entry = ours.clone();
    ours_entry["platform"] =
        serde_json::json!({"os": "linux", "architecture": layout::host_architecture()});
    let mut theirs_entry = theirs;
    theirs_entry["platform"] =
        serde_json::json!({"os": "linux", "architecture": "s390x-elsewhere"});
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [theirs_entry, ours_entry],
    });
    let mut nested = blob(
        &dir,
        "application/vnd.oci.image.index.v1+json",
        nested.to_string().as_bytes(),
    );
    nested["annotations"] = serde_json::json!({layout::REF_NAME_ANNOTATION: "multi:2"});
    index(&dir, vec![nested]);

    let tar_path = f.sources.join("multi.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tar_path).unwrap());
    builder.append_dir_all(".", &dir).unwrap();
    builder.into_inner().unwrap().sync_all().unwrap();

    let imported = f.store.import(&tar_path, None).unwrap();
    assert_eq!(imported.name, "multi:2");
    assert_eq!(imported.manifest_digest, ours["digest"].as_str().unwrap());
    assert_eq!(imported.layer_digests, vec![sha256(&base_layer())]);

    // The same tar, gzip-compressed, under another name.
    let gz_path = f.sources.join("multi.tar.gz");
    fs::write(&gz_path, gzip(&fs::read(&tar_path).unwrap())).unwrap();
    let imported = f.store.import(&gz_path, Some("again")).unwrap();
    assert_eq!(imported.unpacked_layers, 0);
    assert!(f.store.resolve("again").is_ok());

    // A truncated tar of a layout.
    let bytes = fs::read(&tar_path).unwrap();
    let cut = f.sources.join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).unwrap();
    let error = f.store.import(&cut, Some("cut")).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn imports_racing_each_other_both_succeed() {
    let f = fixture();
    let source = layout_with(
        &f.source("race"),
        None,
        &[(LAYER_GZIP, base_layer()), (LAYER_GZIP, top_layer())],
    );
    let results: Vec<Result<ImportedImage, ImageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["first", "second", "third"]
            .into_iter()
            .map(|name| {
                let (store, source) = (&f.store, &source);
                scope.spawn(move || store.import(source, Some(name)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in results {
        result.unwrap();
    }
    for name in ["first", "second", "third"] {
        assert_eq!(f.store.resolve(name).unwrap().layers.len(), 2);
    }
    let layers = fs::read_dir(f.store.dir().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(layers, 2, "one copy of each layer");
    assert!(
        fs::read_dir(f.store.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}
