//! Real OCI image layouts for tests, built from the machine's static busybox: one
//! layer holding `/bin/busybox`, its applets as symlinks, and a minimal `/etc`.
//!
//! The layout is deterministic (fixed owners and times), so two calls produce the
//! same digests and a store shares their layer.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The applets linked to `/bin/busybox` in the image.
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "true", "false", "yes", "ls", "id", "env", "wget", "nc", "httpd",
    "dd", "head",
];

/// The name the layout's index is annotated with (`org.opencontainers.image.ref.name`).
pub const BUSYBOX_IMAGE: &str = "busybox";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
/// Every entry's modification time: fixed, so digests are reproducible.
const MTIME: u64 = 1_700_000_000;

/// Where the static busybox is: `AGORA_BUSYBOX`, else `/usr/bin/busybox` or
/// `/bin/busybox`; `None` when none exists.
pub fn busybox_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AGORA_BUSYBOX") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The static busybox, or `None` after printing why the calling test is skipped.
/// Under CI (env `CI` set) a missing busybox fails the test instead: CI installs
/// busybox-static, so its absence is a broken setup, not a reason to skip.
pub fn require_busybox() -> Option<PathBuf> {
    crate::requirements::required(
        busybox_path().ok_or_else(|| "busybox not installed (install busybox-static)".to_string()),
    )
}

/// Whether the ELF file `bytes` asks for a dynamic loader (has a PT_INTERP
/// program header); such a binary cannot run in an image without its libraries.
fn is_dynamically_linked(bytes: &[u8]) -> bool {
    let read_u16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let read_u32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let read_u64 = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // Only 64-bit little-endian ELF is inspected; anything else is taken as is.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        read_u32(at) == Some(3)
    })
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header
}

/// The uncompressed layer tar of the busybox image.
fn busybox_layer(busybox: &[u8]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("var", 0o755),
    ] {
        let mut header = tar_header(tar::EntryType::Directory, mode, 0);
        builder.append_data(&mut header, dir, io::empty())?;
    }
    let mut header = tar_header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    builder.append_data(&mut header, "bin/busybox", busybox)?;
    for applet in APPLETS {
        let mut header = tar_header(tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    for (path, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let mut header = tar_header(tar::EntryType::Regular, 0o644, content.len() as u64);
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    builder.into_inner()
}

/// Writes `bytes` as a blob of the layout at `layout`; returns its descriptor.
fn write_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> io::Result<serde_json::Value> {
    let digest = sha256_digest(bytes);
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(blobs.join(&digest["sha256:".len()..]), bytes)?;
    Ok(serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
}

/// Builds the OCI image layout of a busybox image in `dir/busybox-oci` (replacing
/// what was there) from the static busybox ([`busybox_path`]); returns the layout's
/// path. Its index names the image [`BUSYBOX_IMAGE`]; its config runs `sh` with
/// `PATH=/bin`.
pub fn busybox_layout(dir: &Path) -> io::Result<PathBuf> {
    let busybox_file = busybox_path()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "busybox is not installed"))?;
    let mut busybox = Vec::new();
    fs::File::open(&busybox_file)?.read_to_end(&mut busybox)?;
    if is_dynamically_linked(&busybox) {
        return Err(io::Error::other(format!(
            "{} is dynamically linked; a container image needs the static one (busybox-static)",
            busybox_file.display()
        )));
    }
    let layout = dir.join("busybox-oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    fs::create_dir_all(&layout)?;

    let layer = busybox_layer(&busybox)?;
    let diff_id = sha256_digest(&layer);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&layer)?;
    let compressed = encoder.finish()?;
    let layer = write_blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &compressed,
    )?;

    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = write_blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    )?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = write_blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    )?;
    manifest["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": BUSYBOX_IMAGE});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest],
    });
    fs::write(layout.join("index.json"), index.to_string())?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(layout)
}

/// Writes a tar of the layout directory `layout` at `tar_path`, its files at the
/// archive's root (as `skopeo`'s `oci-archive:` does); returns `tar_path`.
pub fn layout_tar(layout: &Path, tar_path: &Path) -> io::Result<PathBuf> {
    let mut builder = tar::Builder::new(fs::File::create(tar_path)?);
    builder.append_dir_all(".", layout)?;
    builder.into_inner()?.sync_all()?;
    Ok(tar_path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_binaries() {
        if let Some(busybox) = busybox_path() {
            let bytes = fs::read(busybox).unwrap();
            assert!(
                !is_dynamically_linked(&bytes),
                "busybox-static has no loader"
            );
        }
        let dynamic = fs::read("/proc/self/exe").unwrap();
        assert!(
            is_dynamically_linked(&dynamic),
            "test binaries are dynamically linked"
        );
    }
}
