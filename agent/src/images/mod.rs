//! The agent's local OCI image store: images imported from OCI image layouts, their
//! layers unpacked once and shared between images, ready to be stacked as overlayfs
//! lower directories.
//!
//! # Layout of a store directory
//! - `layers/sha256/<hex>/`: one unpacked layer, named by the sha256 digest of its
//!   (compressed) blob; OCI whiteouts are turned into overlayfs whiteouts (a 0/0
//!   character device, and `trusted.overlay.opaque=y` on opaque directories).
//! - `images/<name>.json`: one image record (name → manifest digest, layer digests,
//!   runtime config); `/` in a name is stored as `%2F`.
//! - `tmp/import-<pid>-<uuid>/`: imports in progress. An import verifies every blob
//!   and unpacks every new layer there first; only then do the layers and finally
//!   the record land in the store, each by an atomic rename. A failed import leaves
//!   nothing behind, and two imports racing each other are both fine (the second
//!   rename of a layer finds it in place and drops its own copy).
//!
//! # Modules
//! - `name`: which image names are accepted and the record file of each.
//! - `layout`: reading an OCI image layout, every blob checked against its digest.
//! - `unpack`: layer tars to directories, safely; tars of layouts.

mod layout;
mod name;
pub(crate) mod unpack;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use layout::{HashingReader, Layout};

pub use name::validate as validate_name;

/// Why an image could not be imported or resolved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image of that name was imported into the store at `store`.
    #[error(
        "image '{name}' is not in the store at {} (import it with: agora image import <dir|tar> --name {name} --store {})",
        store.display(),
        store.display()
    )]
    NotFound { name: String, store: PathBuf },
    /// The name is not one the store accepts (see [`validate_name`]).
    #[error("invalid image name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    /// The layout at `path` does not name its image and no name was given.
    #[error(
        "the image at {} has no name (its index.json has no {} annotation); name it with --name",
        path.display(),
        layout::REF_NAME_ANNOTATION
    )]
    NoName { path: PathBuf },
    /// `path` is not a readable OCI image layout (or tar of one).
    #[error("cannot import {}: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    /// A blob of `image` is missing, of the wrong size or digest, or not what its
    /// descriptor says it is.
    #[error("image '{image}': blob {digest} {reason}")]
    Blob {
        image: String,
        digest: String,
        reason: String,
    },
    /// A layer of `image` cannot be unpacked: truncated, corrupt, or an entry
    /// that would land outside the layer.
    #[error("image '{image}': layer {digest} {reason}")]
    Layer {
        image: String,
        digest: String,
        reason: String,
    },
    /// A record or layer in the store is damaged; re-importing the image repairs it.
    #[error("the image store entry {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The store's file system failed. `cause` is part of the message (not a
    /// `source`, which an error chain would print twice).
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

impl ImageError {
    fn io(context: impl Into<String>, cause: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            cause,
        }
    }
}

/// What an image's config says about how to run it (the OCI config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRuntimeConfig {
    /// `NAME=value` entries, in the image's order.
    pub env: Vec<String>,
    /// The entrypoint argv; empty when the image has none.
    pub entrypoint: Vec<String>,
    /// The default arguments (or command, without an entrypoint); may be empty.
    pub cmd: Vec<String>,
    /// The working directory inside the image; `None` (never empty) means `/`.
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image names it; `None`
    /// (never empty) means root.
    pub user: Option<String>,
}

/// An image ready to run: its unpacked layers and runtime config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The name it was imported under.
    pub name: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// Unpacked layer directories, lowest first; each existed when resolved.
    pub layers: Vec<PathBuf>,
    /// How the image asks to be run.
    pub config: ImageRuntimeConfig,
}

/// What one import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The name the image was stored under.
    pub name: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// The layers' blob digests (`sha256:<hex>`), lowest first.
    pub layer_digests: Vec<String>,
    /// How many distinct layers this import unpacked; the others were in the store.
    pub unpacked_layers: usize,
}

/// One stored image, for listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// The name it was imported under.
    pub name: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// Number of layers.
    pub layers: usize,
    /// Sum of the layers' compressed blob sizes, in bytes.
    pub size_bytes: u64,
}

/// The record of one layer in an image record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    /// `sha256:<hex>` of the layer blob; names its directory under `layers/sha256/`.
    digest: String,
    /// The blob's size in bytes.
    size: u64,
}

/// `images/<name>.json`: what the store knows of one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    /// The image's name; equals the name the record file is named for.
    name: String,
    /// `sha256:<hex>` of the image manifest.
    manifest_digest: String,
    /// `sha256:<hex>` of the image config.
    config_digest: String,
    /// The layers, lowest first; each is unpacked in the store.
    layers: Vec<LayerRecord>,
    /// The runtime part of the image config.
    config: ImageRuntimeConfig,
}

/// A local image store rooted at one directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct ImageStore {
    /// The store's root directory; it, `layers/sha256/`, `images/` and `tmp/` exist
    /// once `open` returned.
    dir: PathBuf,
}

impl ImageStore {
    /// Opens the store at `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<ImageStore, ImageError> {
        for sub in ["layers/sha256", "images", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| {
                ImageError::io(
                    format!("cannot create the image store directory {}", path.display()),
                    e,
                )
            })?;
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory an unpacked layer with blob digest `sha256:<hex>` lives in.
    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.dir.join("layers").join("sha256").join(hex)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join("images").join(name::record_file_name(name))
    }

    /// Imports the OCI image layout at `source` (a directory, or a tar of one, maybe
    /// gzip-compressed) under `name`, or under the name its index is annotated with
    /// when `name` is `None`. Re-importing replaces the record of that name; layers
    /// already in the store are not unpacked again.
    pub fn import(&self, source: &Path, name: Option<&str>) -> Result<ImportedImage, ImageError> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        self.remove_abandoned_imports();
        let staging = self.dir.join("tmp").join(format!(
            "import-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        fs::create_dir(&staging)
            .map_err(|e| ImageError::io(format!("cannot create {}", staging.display()), e))?;
        let result = self.import_staged(source, name, &staging);
        // Best effort: what is left is removed by a later import (see
        // `remove_abandoned_imports`) once this process is gone.
        let _ = fs::remove_dir_all(&staging);
        result
    }

    fn import_staged(
        &self,
        source: &Path,
        name: Option<&str>,
        staging: &Path,
    ) -> Result<ImportedImage, ImageError> {
        let source_error = |reason: String| ImageError::Source {
            path: source.to_path_buf(),
            reason,
        };
        let meta = fs::metadata(source).map_err(|e| source_error(format!("{e}")))?;
        let layout_dir = if meta.is_dir() {
            source.to_path_buf()
        } else {
            let extracted = staging.join("layout");
            fs::create_dir(&extracted)
                .map_err(|e| ImageError::io(format!("cannot create {}", extracted.display()), e))?;
            unpack::extract_layout_tar(source, &extracted).map_err(source_error)?;
            single_wrapped_layout(&extracted)
        };
        let mut layout = Layout {
            dir: &layout_dir,
            image: name.map_or_else(|| source.display().to_string(), str::to_string),
        };
        let manifests = layout.top_level_manifests()?;
        let chosen = layout::choose_top_level(&manifests, name, source)?;
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                let annotated = chosen.annotated_name().ok_or_else(|| ImageError::NoName {
                    path: source.to_path_buf(),
                })?;
                validate_name(annotated)?;
                annotated.to_string()
            }
        };
        layout.image = name.clone();
        let (manifest_descriptor, manifest) = layout.manifest(&chosen)?;
        if manifest.layers.is_empty() {
            return Err(ImageError::Blob {
                image: name,
                digest: manifest_descriptor.digest,
                reason: "is a manifest with no layers: there is no file system to run".into(),
            });
        }
        let config = layout.runtime_config(&manifest)?;

        // Unpack every layer the store lacks, each verified, before any lands.
        let staged_layers = staging.join("layers");
        fs::create_dir(&staged_layers)
            .map_err(|e| ImageError::io(format!("cannot create {}", staged_layers.display()), e))?;
        let mut unpacked: Vec<(PathBuf, PathBuf)> = Vec::new();
        for descriptor in &manifest.layers {
            let layer_error = |reason: String| ImageError::Layer {
                image: name.clone(),
                digest: descriptor.digest.clone(),
                reason,
            };
            let hex = layout::sha256_hex(&descriptor.digest).map_err(layer_error)?;
            let final_dir = self.layer_dir(hex);
            let staged = staged_layers.join(hex);
            if final_dir.is_dir() || staged.exists() {
                continue;
            }
            fs::create_dir(&staged)
                .map_err(|e| ImageError::io(format!("cannot create {}", staged.display()), e))?;
            let mut reader = HashingReader::new(layout.open_blob(descriptor)?);
            let outcome = unpack::decompress(BufReader::new(&mut reader))
                .and_then(|decompressed| unpack::unpack_layer(decompressed, &staged));
            if let Err(reason) = outcome {
                // A blob that does not unpack may have been altered since its digest
                // was taken: say that rather than blame its content.
                let _ = io::copy(&mut reader, &mut io::sink());
                layout.check_digest(descriptor, &reader)?;
                return Err(layer_error(reason));
            }
            io::copy(&mut reader, &mut io::sink())
                .map_err(|e| layer_error(format!("cannot be read: {e}")))?;
            layout.check_digest(descriptor, &reader)?;
            unpacked.push((staged, final_dir));
        }

        // Everything checked: land the layers (durably), then the record.
        if !unpacked.is_empty() {
            sync_filesystem(staging)?;
        }
        for (staged, final_dir) in &unpacked {
            if let Err(e) = fs::rename(staged, final_dir) {
                // A concurrent import of the same layer won the race; its copy is
                // identical (same digest).
                if !final_dir.is_dir() {
                    return Err(ImageError::io(
                        format!("cannot move a layer into {}", final_dir.display()),
                        e,
                    ));
                }
            }
        }
        sync_directory(&self.dir.join("layers").join("sha256"))?;
        let record = ImageRecord {
            name: name.clone(),
            manifest_digest: manifest_descriptor.digest.clone(),
            config_digest: manifest.config.digest.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|d| LayerRecord {
                    digest: d.digest.clone(),
                    size: d.size,
                })
                .collect(),
            config,
        };
        self.write_record(&record, staging)?;
        Ok(ImportedImage {
            name,
            manifest_digest: record.manifest_digest,
            layer_digests: record.layers.into_iter().map(|l| l.digest).collect(),
            unpacked_layers: unpacked.len(),
        })
    }

    /// Writes `record` to a staging file, flushes it, and renames it into `images/`.
    fn write_record(&self, record: &ImageRecord, staging: &Path) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| ImageError::io("cannot encode the image record", io::Error::other(e)))?;
        let staged = staging.join("record.json");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&staged)
            .map_err(|e| ImageError::io(format!("cannot create {}", staged.display()), e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| ImageError::io(format!("cannot write {}", staged.display()), e))?;
        let path = self.record_path(&record.name);
        fs::rename(&staged, &path)
            .map_err(|e| ImageError::io(format!("cannot write {}", path.display()), e))?;
        sync_directory(&self.dir.join("images"))
    }

    /// Removes staging directories of imports whose process is gone (killed midway).
    fn remove_abandoned_imports(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(pid) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("import-"))
                .and_then(|n| n.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    fn read_record(&self, path: &Path) -> Result<ImageRecord, ImageError> {
        let corrupt = |reason: String| ImageError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = fs::read(path).map_err(|e| corrupt(format!("cannot be read: {e}")))?;
        let record: ImageRecord = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("{e} (import the image again)")))?;
        for layer in &record.layers {
            layout::sha256_hex(&layer.digest).map_err(corrupt)?;
        }
        Ok(record)
    }

    /// The stored image called `name`, with its unpacked layers.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage, ImageError> {
        validate_name(name)?;
        let path = self.record_path(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    name: name.to_string(),
                    store: self.dir.clone(),
                });
            }
            Err(e) => return Err(ImageError::io(format!("cannot read {}", path.display()), e)),
        }
        let record = self.read_record(&path)?;
        if record.name != name {
            return Err(ImageError::Corrupt {
                path,
                reason: format!("it records image '{}' (import '{name}' again)", record.name),
            });
        }
        let mut layers = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            let hex = layout::sha256_hex(&layer.digest).map_err(|reason| ImageError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            let dir = self.layer_dir(hex);
            if !dir.is_dir() {
                return Err(ImageError::Corrupt {
                    path: path.clone(),
                    reason: format!(
                        "its layer {} is missing from {} (import '{name}' again)",
                        layer.digest,
                        dir.display()
                    ),
                });
            }
            layers.push(dir);
        }
        Ok(ResolvedImage {
            name: record.name,
            manifest_digest: record.manifest_digest,
            layers,
            config: record.config,
        })
    }

    /// Every stored image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let dir = self.dir.join("images");
        let entries = fs::read_dir(&dir)
            .map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
        let mut images = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| ImageError::io(format!("cannot list {}", dir.display()), e))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record = self.read_record(&path)?;
            images.push(ImageSummary {
                name: record.name,
                manifest_digest: record.manifest_digest,
                layers: record.layers.len(),
                size_bytes: record.layers.iter().map(|l| l.size).sum(),
            });
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }
}

/// A tar made with `tar cf x.tar some-dir/` holds the layout one level down: use it.
fn single_wrapped_layout(extracted: &Path) -> PathBuf {
    if extracted.join("index.json").exists() {
        return extracted.to_path_buf();
    }
    let Ok(entries) = fs::read_dir(extracted) else {
        return extracted.to_path_buf();
    };
    let dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match dirs.as_slice() {
        [only] if only.join("index.json").exists() => only.clone(),
        _ => extracted.to_path_buf(),
    }
}

/// Flushes the file system holding `path` (one call for a whole unpacked layer
/// rather than an fsync per file), so a layer is complete on disk before it lands.
fn sync_filesystem(path: &Path) -> Result<(), ImageError> {
    let dir = fs::File::open(path)
        .map_err(|e| ImageError::io(format!("cannot open {}", path.display()), e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(ImageError::io(
            format!("cannot flush {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Makes the renames into `dir` durable.
fn sync_directory(dir: &Path) -> Result<(), ImageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(format!("cannot flush {}", dir.display()), e))
}
