//! Unpacking a layer tar into a directory that overlayfs can stack, and extracting
//! a tar of an image layout.
//!
//! Every entry's path is checked component by component: absolute paths and `..`
//! are refused, and no entry is written through a symlink, so a layer cannot write
//! outside its directory whatever order its entries come in. Entries replace what
//! an earlier entry of the same tar put at their path, as `tar -x` does.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use tar::EntryType;

/// OCI's whiteout prefix: `.wh.name` deletes `name` from the layers below.
const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI's opaque whiteout: the directory holding it hides the layers' below.
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// pax records carrying extended attributes (GNU tar, Docker, BuildKit).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// overlayfs' own xattrs (opaque, redirect, metacopy, origin): only the store sets
/// them; a layer that brings its own could make overlayfs follow redirects or skip
/// data it never shipped.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// The decompressed content of a blob, its compression told from its first bytes
/// (media types lie more often than magic numbers do): gzip or none; zstd is refused.
pub fn decompress<'a, R: BufRead + 'a>(mut reader: R) -> Result<Box<dyn Read + 'a>, String> {
    let head = reader
        .fill_buf()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(
            "is zstd-compressed, which is not supported (re-export the image with gzip layers)"
                .into(),
        )
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that remembers whether its input ran out, so that a tar cut off at an
/// entry boundary (no end-of-archive blocks) is told from a complete one.
pub(crate) struct EofTracker<R> {
    pub(crate) inner: R,
    /// A read returned 0: the input is exhausted.
    reached_eof: bool,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.reached_eof = true;
        }
        Ok(n)
    }
}

/// The components of a tar entry's path, relative to the archive root; refuses
/// absolute paths and `..`. `./` prefixes are dropped.
pub(crate) fn relative_components(path: &Path) -> Result<Vec<OsString>, String> {
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => components.push(c.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry '{}' has an absolute path", path.display()));
            }
            Component::ParentDir => {
                return Err(format!(
                    "entry '{}' escapes the archive with '..'",
                    path.display()
                ));
            }
        }
    }
    Ok(components)
}

/// Makes sure every directory of `parents` exists under `root`, creating missing ones
/// (mode 0755, as tar does) and refusing to go through anything that is not a real
/// directory. Returns the path of the innermost one.
pub(crate) fn ensure_directories(
    root: &Path,
    parents: &[OsString],
    entry: &Path,
) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    for component in parents {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "entry '{}' would be written through the symlink '{}'",
                    entry.display(),
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "entry '{}' is under '{}', which is not a directory",
                    entry.display(),
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
        }
    }
    Ok(path)
}

/// Clears `path` for a new entry: an existing directory stays when the new entry is
/// one too (its contents are kept, as tar does); anything else is removed.
/// Returns whether a directory was kept.
pub(crate) fn clear_for(path: &Path, new_is_dir: bool) -> Result<bool, String> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if new_is_dir {
                return Ok(true);
            }
            fs::remove_dir_all(path)
                .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        }
        Ok(_) => {
            fs::remove_file(path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    Ok(false)
}

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path {} contains a NUL byte", path.display()))
}

fn last_os_error(what: &str, path: &Path) -> String {
    format!(
        "cannot {what} {}: {}",
        path.display(),
        io::Error::last_os_error()
    )
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) -> Result<(), String> {
    let c = c_path(path)?;
    let device = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path; mknod does not retain it.
    if unsafe { libc::mknod(c.as_ptr(), kind | (mode & 0o7777) as libc::mode_t, device) } != 0 {
        return Err(last_os_error("create the device node", path));
    }
    Ok(())
}

fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> Result<(), String> {
    let c = c_path(path)?;
    let name_c = CString::new(name).map_err(|_| "an xattr name contains a NUL byte".to_string())?;
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name_c.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot set xattr {} on {}: {}",
            String::from_utf8_lossy(name),
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Gives `path` (not following a symlink) the entry's owner; only root can, and
/// only root runs containers from the store, so others keep their own ids.
fn lchown(path: &Path, uid: u64, gid: u64) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(format!(
            "{} has an out-of-range owner {uid}:{gid}",
            path.display()
        ));
    };
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(last_os_error("change the owner of", path));
    }
    Ok(())
}

/// Sets `path`'s modification (and access) time without following a symlink.
pub(crate) fn set_mtime(path: &Path, mtime: u64) -> Result<(), String> {
    let c = c_path(path)?;
    let seconds = libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX);
    let time = libc::timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    let times = [time, time];
    // SAFETY: `c` is a valid path and `times` holds the two timespecs utimensat reads.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(last_os_error("set the modification time of", path));
    }
    Ok(())
}

pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

/// Writes a regular file entry's bytes to `path` (replaced beforehand, created
/// anew, never through a symlink, mode 0600 until the caller sets the entry's own);
/// an entry with fewer bytes than its header says is truncated.
pub(crate) fn write_regular<R: io::Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    entry_path: &Path,
) -> Result<(), String> {
    clear_for(path, false)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let expected = entry.size();
    let written = io::copy(entry, &mut file)
        .map_err(|e| format!("cannot unpack '{}': {e}", entry_path.display()))?;
    if written != expected {
        return Err(format!(
            "is truncated: entry '{}' has {written} of its {expected} bytes",
            entry_path.display()
        ));
    }
    Ok(())
}

/// The target of the link `entry` (a `kind`, for messages) at `entry_path`.
pub(crate) fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    entry_path: &Path,
    kind: &str,
) -> Result<PathBuf, String> {
    entry
        .link_name()
        .map_err(|e| {
            format!(
                "entry '{}' has a bad link target: {e}",
                entry_path.display()
            )
        })?
        .map(|target| target.into_owned())
        .ok_or_else(|| format!("{kind} '{}' has no target", entry_path.display()))
}

/// One entry of a tar being unpacked, its path checked.
pub(crate) struct CheckedEntry<'p> {
    /// The path as the tar names it (for messages).
    pub(crate) entry_path: &'p Path,
    /// The directory the entry goes in: under the root, and a real directory
    /// (no symlink on the way).
    pub(crate) parent: PathBuf,
    /// The entry's last path component.
    pub(crate) file_name: &'p OsStr,
}

/// Walks the tar `reader` holds, calling `visit` with each entry whose path stays
/// under `root` (their parent directories created; the archive root itself is
/// skipped); any other path fails the walk. `subject` starts the messages about the
/// tar itself (`""` or `"it "`). Fails on a truncated tar; returns the tracker so
/// that the caller can read what follows the end-of-archive blocks.
pub(crate) fn walk_entries<R: Read>(
    reader: R,
    root: &Path,
    subject: &str,
    mut visit: impl FnMut(
        &mut tar::Entry<'_, &mut EofTracker<R>>,
        CheckedEntry<'_>,
    ) -> Result<(), String>,
) -> Result<EofTracker<R>, String> {
    let mut tracker = EofTracker {
        inner: reader,
        reached_eof: false,
    };
    let mut archive = tar::Archive::new(&mut tracker);
    let entries = archive
        .entries()
        .map_err(|e| format!("{subject}is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| format!("{subject}is truncated or not a valid tar archive: {e}"))?;
        let entry_path = entry
            .path()
            .map_err(|e| format!("{subject}has an entry with an unreadable path: {e}"))?
            .into_owned();
        let components = relative_components(&entry_path)?;
        let Some((file_name, parents)) = components.split_last() else {
            // The archive root itself (`./`): `root` stands for it.
            continue;
        };
        let parent = ensure_directories(root, parents, &entry_path)?;
        visit(
            &mut entry,
            CheckedEntry {
                entry_path: &entry_path,
                parent,
                file_name,
            },
        )?;
    }
    if tracker.reached_eof {
        return Err(format!(
            "{subject}is truncated: the tar ends without its end-of-archive blocks"
        ));
    }
    Ok(tracker)
}

/// Unpacks the layer tar `reader` (already decompressed) into the empty directory
/// `root`, turning OCI whiteouts into overlayfs ones. Fails on a truncated tar.
pub fn unpack_layer(reader: impl Read, root: &Path) -> Result<(), String> {
    // Directory times are set last: writing their entries would move them again.
    let mut directory_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut tracker = walk_entries(reader, root, "", |entry, checked| {
        let CheckedEntry {
            entry_path,
            parent,
            file_name,
        } = checked;
        let name_bytes = file_name.as_bytes();
        if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
            return lsetxattr(&parent, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y");
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            // `.wh..wh.*` other than the opaque marker are AUFS bookkeeping.
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) || hidden.is_empty() {
                return Ok(());
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            // A whiteout hides only lower layers: what this layer itself put there stays.
            if fs::symlink_metadata(&target).is_err() {
                mknod(&target, libc::S_IFCHR, 0, 0, 0)?;
            }
            return Ok(());
        }
        let path = parent.join(file_name);
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| format!("entry '{}' has a bad mode: {e}", entry_path.display()))?;
        let uid = header
            .uid()
            .map_err(|e| format!("entry '{}' has a bad uid: {e}", entry_path.display()))?;
        let gid = header
            .gid()
            .map_err(|e| format!("entry '{}' has a bad gid: {e}", entry_path.display()))?;
        let mtime = header.mtime().unwrap_or(0);
        let entry_type = header.entry_type();
        match entry_type {
            EntryType::Directory => {
                if !clear_for(&path, true)? {
                    fs::create_dir(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                }
                lchown(&path, uid, gid)?;
                chmod(&path, mode)?;
                directory_times.push((path.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                write_regular(entry, &path, entry_path)?;
                lchown(&path, uid, gid)?;
                chmod(&path, mode)?;
                set_mtime(&path, mtime)?;
            }
            EntryType::Symlink => {
                let target = link_target(entry, entry_path, "symlink")?;
                clear_for(&path, false)?;
                // The target is only ever read inside the container's root, so it
                // may point anywhere; nothing here follows it.
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| format!("cannot create the symlink {}: {e}", path.display()))?;
                lchown(&path, uid, gid)?;
                set_mtime(&path, mtime)?;
            }
            EntryType::Link => {
                let target = link_target(entry, entry_path, "hard link")?;
                let target_components = relative_components(&target)?;
                let Some((target_name, target_parents)) = target_components.split_last() else {
                    return Err(format!(
                        "hard link '{}' points at the layer root",
                        entry_path.display()
                    ));
                };
                let target_path =
                    ensure_directories(root, target_parents, &target)?.join(target_name);
                match fs::symlink_metadata(&target_path) {
                    Ok(meta) if !meta.is_dir() => {}
                    _ => {
                        return Err(format!(
                            "hard link '{}' points at '{}', which is not a file earlier in the layer",
                            entry_path.display(),
                            target.display()
                        ));
                    }
                }
                if target_path == path {
                    return Ok(());
                }
                clear_for(&path, false)?;
                fs::hard_link(&target_path, &path)
                    .map_err(|e| format!("cannot create the hard link {}: {e}", path.display()))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match entry_type {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                clear_for(&path, false)?;
                mknod(&path, kind, mode, major, minor)?;
                lchown(&path, uid, gid)?;
                chmod(&path, mode)?;
            }
            // pax and GNU long-name records are folded into the entries they
            // describe by the tar reader; anything else has no place in a layer.
            _ => return Ok(()),
        }
        if let Some(extensions) = entry
            .pax_extensions()
            .map_err(|e| format!("entry '{}' has bad pax records: {e}", entry_path.display()))?
        {
            for extension in extensions {
                let extension = extension.map_err(|e| {
                    format!("entry '{}' has a bad pax record: {e}", entry_path.display())
                })?;
                if let Some(name) = extension
                    .key_bytes()
                    .strip_prefix(PAX_XATTR_PREFIX.as_bytes())
                    && !name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes())
                {
                    lsetxattr(&path, name, extension.value_bytes())?;
                }
            }
        }
        Ok(())
    })?;
    for (path, mtime) in directory_times.iter().rev() {
        set_mtime(path, *mtime)?;
    }
    // What follows the end-of-archive blocks (padding, the gzip trailer) is read to
    // the end so the caller can check the blob's digest and the gzip checksum.
    io::copy(&mut tracker.inner, &mut io::sink())
        .map_err(|e| format!("is corrupt after its last entry: {e}"))?;
    Ok(())
}

/// Extracts a tar (optionally gzip-compressed) of an OCI image layout into the empty
/// directory `dest`: only directories and regular files, which is all a layout holds.
pub fn extract_layout_tar(source: &Path, dest: &Path) -> Result<(), String> {
    let file = fs::File::open(source).map_err(|e| format!("cannot open it: {e}"))?;
    let reader = decompress(BufReader::new(file))?;
    walk_entries(reader, dest, "it ", |entry, checked| {
        let path = checked.parent.join(checked.file_name);
        match entry.header().entry_type() {
            EntryType::Directory => {
                ensure_directories(
                    &checked.parent,
                    &[checked.file_name.to_os_string()],
                    checked.entry_path,
                )?;
            }
            EntryType::Regular | EntryType::Continuous => {
                clear_for(&path, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let expected = entry.size();
                let written = io::copy(entry, &mut file).map_err(|e| {
                    format!("cannot extract '{}': {e}", checked.entry_path.display())
                })?;
                if written != expected {
                    return Err(format!(
                        "it is truncated: '{}' has {written} of its {expected} bytes",
                        checked.entry_path.display()
                    ));
                }
            }
            // Legacy `docker save` files and links are not part of an OCI layout.
            _ => {}
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_inside() {
        assert_eq!(
            relative_components(Path::new("./bin/sh")).unwrap(),
            vec![OsString::from("bin"), OsString::from("sh")]
        );
        assert!(relative_components(Path::new("/etc/passwd")).is_err());
        assert!(relative_components(Path::new("bin/../../x")).is_err());
        assert!(relative_components(Path::new("./")).unwrap().is_empty());
    }
}
