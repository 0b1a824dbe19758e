//! Reading an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`): the
//! index, manifests and config, every blob checked against its descriptor's digest.
//! Docker's v2 manifest and manifest-list media types are read the same way (their
//! JSON has the same shape).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{ImageError, ImageRuntimeConfig};

/// The annotation naming an image in an OCI layout's index (`skopeo`, `oras`, …).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation `docker save` writes with the full reference (its `ref.name` is
/// only the tag).
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Indexes, manifests and configs larger than this are refused rather than read into
/// memory: real ones are a few KiB.
const MAX_JSON_BLOB: u64 = 4 << 20;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type; may be empty in hand-written layouts.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`, checked against the blob.
    pub digest: String,
    /// The blob's size in bytes, checked against the blob.
    pub size: u64,
    /// Free-form annotations (the image name lives here in an index).
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Which platform a manifest in an index is for.
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The image name the descriptor is annotated with, fullest form first.
    pub fn annotated_name(&self) -> Option<&str> {
        self.annotation(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| self.annotation(REF_NAME_ANNOTATION))
    }

    fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    fn matches_host(&self) -> bool {
        self.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == host_architecture())
    }
}

/// The platform of a manifest listed in an index.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// GOARCH spelling: `amd64`, `arm64`, …
    pub architecture: String,
    /// GOOS spelling: `linux`, …
    pub os: String,
}

/// An image index (`index.json`, or a nested multi-platform index).
#[derive(Debug, Deserialize)]
struct Index {
    /// The manifests (or nested indexes) the index lists.
    manifests: Vec<Descriptor>,
}

/// An image manifest: the config and the layers, lowest first.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, lowest first.
    pub layers: Vec<Descriptor>,
}

/// The part of an image config the store keeps.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    /// The runtime defaults; absent in configs of base layers built by hand.
    #[serde(default)]
    config: Option<ConfigSection>,
}

/// The image config's `config` object; Docker writes `null` for absent lists.
#[derive(Debug, Default, Deserialize)]
struct ConfigSection {
    /// `NAME=value` entries.
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    /// The entrypoint argv.
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    /// Default arguments (or the command, without an entrypoint).
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    /// Working directory inside the image; may be empty.
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    /// `user[:group]` or `uid[:gid]`; may be empty.
    #[serde(rename = "User", default)]
    user: Option<String>,
}

/// The OCI/GOARCH name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The hex part of a `sha256:<hex>` digest, which is all the store accepts; the
/// check also keeps a digest from naming a path outside `blobs/sha256/`.
pub fn sha256_hex(digest: &str) -> Result<&str, String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!(
            "digest '{digest}' is not a sha256 digest (only sha256 is supported)"
        ));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("digest '{digest}' is malformed"));
    }
    Ok(hex)
}

/// Lower-case hex of a finished sha256.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI image layout directory being imported as `image` (the name, for errors).
pub struct Layout<'a> {
    /// The layout's root (holding `index.json` and `blobs/`).
    pub dir: &'a Path,
    /// The image's name, or the source path while the name is not known yet.
    pub image: String,
}

impl Layout<'_> {
    fn blob_error(&self, digest: &str, reason: impl Into<String>) -> ImageError {
        ImageError::Blob {
            image: self.image.clone(),
            digest: digest.to_string(),
            reason: reason.into(),
        }
    }

    /// The path of `descriptor`'s blob, after checking that it exists with the size
    /// the descriptor gives.
    pub fn blob_path(&self, descriptor: &Descriptor) -> Result<PathBuf, ImageError> {
        let hex =
            sha256_hex(&descriptor.digest).map_err(|e| self.blob_error(&descriptor.digest, e))?;
        let path = self.dir.join("blobs").join("sha256").join(hex);
        let meta = std::fs::metadata(&path).map_err(|e| {
            let reason = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "is missing from the layout ({} does not exist)",
                    path.display()
                )
            } else {
                format!("cannot be read at {}: {e}", path.display())
            };
            self.blob_error(&descriptor.digest, reason)
        })?;
        if !meta.is_file() {
            return Err(self.blob_error(
                &descriptor.digest,
                format!("{} is not a regular file", path.display()),
            ));
        }
        if meta.len() != descriptor.size {
            return Err(self.blob_error(
                &descriptor.digest,
                format!(
                    "is {} bytes but its descriptor says {} (truncated or corrupt)",
                    meta.len(),
                    descriptor.size
                ),
            ));
        }
        Ok(path)
    }

    /// Opens `descriptor`'s blob for streaming; the caller checks the digest with a
    /// [`HashingReader`].
    pub fn open_blob(&self, descriptor: &Descriptor) -> Result<File, ImageError> {
        let path = self.blob_path(descriptor)?;
        File::open(&path).map_err(|e| {
            self.blob_error(
                &descriptor.digest,
                format!("cannot be opened at {}: {e}", path.display()),
            )
        })
    }

    /// Reads a small (JSON) blob whole, checking its digest.
    fn read_json_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if descriptor.size > MAX_JSON_BLOB {
            return Err(self.blob_error(
                &descriptor.digest,
                format!(
                    "is {} bytes, too large for a manifest or config",
                    descriptor.size
                ),
            ));
        }
        let file = self.open_blob(descriptor)?;
        let mut reader = HashingReader::new(file);
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| self.blob_error(&descriptor.digest, format!("cannot be read: {e}")))?;
        self.check_digest(descriptor, &reader)?;
        Ok(bytes)
    }

    /// Checks that what `reader` read was exactly `descriptor`'s blob.
    pub fn check_digest<R>(
        &self,
        descriptor: &Descriptor,
        reader: &HashingReader<R>,
    ) -> Result<(), ImageError> {
        let actual = format!("sha256:{}", hex(&reader.hasher.clone().finalize()));
        if actual != descriptor.digest {
            return Err(self.blob_error(
                &descriptor.digest,
                format!("does not match its digest (its content hashes to {actual})"),
            ));
        }
        if reader.bytes != descriptor.size {
            return Err(self.blob_error(
                &descriptor.digest,
                format!(
                    "is {} bytes but its descriptor says {}",
                    reader.bytes, descriptor.size
                ),
            ));
        }
        Ok(())
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<T, ImageError> {
        let bytes = self.read_json_blob(descriptor)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.blob_error(&descriptor.digest, format!("is not a valid {what}: {e}")))
    }

    /// The descriptors `index.json` lists.
    pub fn top_level_manifests(&self) -> Result<Vec<Descriptor>, ImageError> {
        let source_error = |reason: String| ImageError::Source {
            path: self.dir.to_path_buf(),
            reason,
        };
        let path = self.dir.join("index.json");
        let bytes = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_JSON_BLOB => {
                return Err(source_error(format!("{} is too large", path.display())));
            }
            Ok(_) => std::fs::read(&path)
                .map_err(|e| source_error(format!("cannot read {}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(source_error(
                    "it is not an OCI image layout: it has no index.json (export one with \
                     `skopeo copy docker://busybox oci-archive:busybox.tar:busybox` or Docker 25+'s `docker save`)"
                        .to_string(),
                ));
            }
            Err(e) => return Err(source_error(format!("cannot read {}: {e}", path.display()))),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            source_error(format!(
                "{} is not a valid image index: {e}",
                path.display()
            ))
        })?;
        if index.manifests.is_empty() {
            return Err(source_error("its index.json lists no image".to_string()));
        }
        Ok(index.manifests)
    }

    /// Follows `descriptor` (a manifest, or an index of per-platform manifests, to
    /// which this machine's linux platform is picked) to the image manifest.
    /// Returns the manifest's descriptor and the manifest.
    pub fn manifest(&self, descriptor: &Descriptor) -> Result<(Descriptor, Manifest), ImageError> {
        let mut descriptor = descriptor.clone();
        // An index of indexes is legal but unheard of; two levels bound the walk.
        for _ in 0..3 {
            if !descriptor.is_index() {
                if !descriptor.media_type.is_empty()
                    && descriptor.media_type != OCI_MANIFEST
                    && descriptor.media_type != DOCKER_MANIFEST
                {
                    return Err(self.blob_error(
                        &descriptor.digest,
                        format!(
                            "has media type '{}', which is not an image manifest",
                            descriptor.media_type
                        ),
                    ));
                }
                let manifest: Manifest = self.parse(&descriptor, "image manifest")?;
                return Ok((descriptor, manifest));
            }
            let index: Index = self.parse(&descriptor, "image index")?;
            descriptor = pick_platform(&index.manifests).ok_or_else(|| {
                let platforms: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| {
                        d.platform
                            .as_ref()
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                    })
                    .collect();
                self.blob_error(
                    &descriptor.digest,
                    format!(
                        "is an index with no linux/{} image (it has: {})",
                        host_architecture(),
                        platforms.join(", ")
                    ),
                )
            })?;
        }
        Err(self.blob_error(&descriptor.digest, "nests indexes too deeply"))
    }

    /// The runtime config of `manifest`'s image.
    pub fn runtime_config(&self, manifest: &Manifest) -> Result<ImageRuntimeConfig, ImageError> {
        let file: ConfigFile = self.parse(&manifest.config, "image config")?;
        let section = file.config.unwrap_or_default();
        Ok(ImageRuntimeConfig {
            env: section.env.unwrap_or_default(),
            entrypoint: section.entrypoint.unwrap_or_default(),
            cmd: section.cmd.unwrap_or_default(),
            working_dir: section.working_dir.filter(|w| !w.is_empty()),
            user: section.user.filter(|u| !u.is_empty()),
        })
    }
}

/// The one manifest of `manifests`, or the one for this machine's linux platform.
fn pick_platform(manifests: &[Descriptor]) -> Option<Descriptor> {
    if let [only] = manifests {
        return Some(only.clone());
    }
    manifests.iter().find(|d| d.matches_host()).cloned()
}

/// Chooses the image to import among `index.json`'s descriptors: the only one; else
/// the one annotated with `wanted` (whole name or its tag); else the one for this
/// machine's platform.
pub fn choose_top_level(
    manifests: &[Descriptor],
    wanted: Option<&str>,
    source: &Path,
) -> Result<Descriptor, ImageError> {
    if let [only] = manifests {
        return Ok(only.clone());
    }
    if let Some(wanted) = wanted {
        let tag = wanted.rsplit_once(':').map(|(_, tag)| tag);
        let named: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| {
                let names = [
                    d.annotation(CONTAINERD_NAME_ANNOTATION),
                    d.annotation(REF_NAME_ANNOTATION),
                ];
                names
                    .iter()
                    .flatten()
                    .any(|n| *n == wanted || Some(*n) == tag)
            })
            .collect();
        if let [only] = named.as_slice() {
            return Ok((*only).clone());
        }
    }
    if let Some(found) = pick_platform(manifests) {
        return Ok(found);
    }
    let names: Vec<&str> = manifests
        .iter()
        .map(|d| d.annotated_name().unwrap_or(d.digest.as_str()))
        .collect();
    Err(ImageError::Source {
        path: source.to_path_buf(),
        reason: format!(
            "its index.json lists {} images ({}); pick one with --name",
            manifests.len(),
            names.join(", ")
        ),
    })
}

/// A reader that hashes and counts what passes through it, to check a blob against
/// its descriptor while it is streamed.
pub struct HashingReader<R> {
    /// The reader underneath.
    inner: R,
    /// sha256 of every byte read so far.
    hasher: Sha256,
    /// How many bytes were read so far.
    pub bytes: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
