//! Mesos' fetcher: a task's `CommandInfo.uris` are downloaded into the sandbox
//! before its command starts (after TASK_STARTING, as Mesos does).
//!
//! - Sources: `http://` (redirects followed, up to [`MAX_REDIRECTS`]), `file://`
//!   and absolute paths (copied). `https://` is refused: the agent carries no TLS
//!   stack.
//! - Name: `output_file` (a relative path; its directories are created) or the
//!   last component of the URI's path (query and fragment left out).
//! - `executable` makes the file mode 0755; `extract` unpacks `.tar`, `.tgz` and
//!   `.tar.gz` archives into the sandbox (keeping the archive) and decompresses
//!   `.gz` files next to it, under their name without `.gz`. bzip2, xz and zip
//!   archives are refused with a clear error; other files are kept as they are.
//!   The two flags exclude each other.
//! - `cache` is not supported: the URI is fetched directly and a line is logged.
//!
//! Each download is streamed to a temporary file beside its destination (never
//! held in memory), bounded by [`MAX_FETCH_BYTES`] and [`FETCH_TIMEOUT`], and
//! renamed into place once complete, so a failed fetch leaves nothing under the
//! name. Archive entries go through the image store's checked tar walk: absolute
//! paths, `..` and writing through symlinks are refused, so nothing lands outside
//! the sandbox. Device nodes and fifos in an archive are skipped, and set-id bits
//! are dropped.
//!
//! The fetcher runs as the executor's user and reads any local path that user
//! can: `file://` sources are not confined to a list of directories.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto as pb;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use slog::{Logger, info, warn};
use tar::EntryType;
use tokio::io::AsyncWriteExt;

use crate::images::unpack;

/// Largest file one URI may bring (and largest `.gz` decompression).
pub(super) const MAX_FETCH_BYTES: u64 = 4 << 30;
/// Longest one download (all its redirects included) may take.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Redirects followed before a download is given up.
pub(super) const MAX_REDIRECTS: usize = 5;
/// Longest wait for an HTTP server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Mode of a file fetched with `executable` set.
const EXECUTABLE_MODE: u32 = 0o755;
/// Mode of other fetched files (and of the `.gz`-decompressed ones).
const FILE_MODE: u32 = 0o644;

/// A URI that could not be fetched: `Failed to fetch '<uri>': <cause>`.
#[derive(Debug, thiserror::Error)]
#[error("Failed to fetch '{uri}': {cause}")]
pub struct FetchError {
    /// The URI as the task gave it.
    pub uri: String,
    /// What went wrong.
    pub cause: FetchCause,
}

/// Why a URI could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchCause {
    #[error("https is not supported (use http://, file:// or an absolute path)")]
    HttpsUnsupported,
    #[error("the scheme '{0}' is not supported (use http://, file:// or an absolute path)")]
    UnsupportedScheme(String),
    #[error("not a valid URI: {0}")]
    InvalidUri(String),
    #[error("the URI names no file; set output_file")]
    NoFileName,
    #[error("invalid output_file '{0}': {1}")]
    InvalidOutputFile(String, String),
    #[error("executable and extract cannot both be set")]
    ExecutableAndExtract,
    /// A status other than success, e.g. `404 Not Found`.
    #[error("{0}")]
    HttpStatus(hyper::StatusCode),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("a redirect to '{0}' is not followed (only http:// is)")]
    BadRedirect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("it is larger than the {MAX_FETCH_BYTES}-byte limit")]
    TooLarge,
    #[error("not done within {FETCH_TIMEOUT:?}")]
    TimedOut,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("extracting {0} archives is not supported")]
    UnsupportedArchive(&'static str),
    #[error("cannot extract '{name}': {cause}")]
    Extract { name: String, cause: String },
    #[error("the agent named no sandbox to fetch into")]
    NoSandbox,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> FetchCause {
    let what = what.into();
    move |source| FetchCause::Io { what, source }
}

/// Where a URI's content comes from.
#[derive(Debug, PartialEq)]
pub(super) enum Source {
    Http(hyper::Uri),
    Local(PathBuf),
}

impl Source {
    /// Reads a URI's `value` (leading and trailing blanks ignored, as Mesos trims).
    pub(super) fn parse(value: &str) -> Result<Source, FetchCause> {
        let value = value.trim();
        if value.starts_with('/') {
            return Ok(Source::Local(PathBuf::from(value)));
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(FetchCause::InvalidUri(
                "neither a URI with a scheme nor an absolute path".into(),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => parse_http(value),
            "https" => Err(FetchCause::HttpsUnsupported),
            "file" => {
                // file:///path, or file://localhost/path (RFC 8089).
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(FetchCause::InvalidUri(
                        "a file URI names an absolute path on this host (file:///path)".into(),
                    ));
                }
                Ok(Source::Local(PathBuf::from(path)))
            }
            other => Err(FetchCause::UnsupportedScheme(other.to_string())),
        }
    }

    /// The path part the file name comes from.
    fn path(&self) -> &str {
        match self {
            Source::Http(uri) => uri.path(),
            Source::Local(path) => path.to_str().unwrap_or_default(),
        }
    }
}

fn parse_http(value: &str) -> Result<Source, FetchCause> {
    let uri: hyper::Uri = value
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| FetchCause::InvalidUri(e.to_string()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(FetchCause::InvalidUri("it names no host".into()));
    }
    Ok(Source::Http(uri))
}

/// The file name Mesos gives a URI without `output_file`: the last component of
/// its path.
pub(super) fn file_name(source: &Source) -> Result<String, FetchCause> {
    let path = source.path();
    let name = path.rsplit('/').next().unwrap_or_default();
    match name {
        "" | "." | ".." => Err(FetchCause::NoFileName),
        name => Ok(name.to_string()),
    }
}

/// The components of a relative `output_file`.
fn output_components(output_file: &str) -> Result<Vec<OsString>, FetchCause> {
    let invalid = |why: String| FetchCause::InvalidOutputFile(output_file.to_string(), why);
    if output_file.starts_with('/') {
        return Err(invalid("it must be relative to the sandbox".into()));
    }
    let components = unpack::relative_components(Path::new(output_file)).map_err(invalid)?;
    if components.is_empty() {
        return Err(invalid("it names no file".into()));
    }
    Ok(components)
}

/// How `extract` treats a file, told from its name as Mesos does.
#[derive(Debug, PartialEq)]
pub(super) enum ArchiveKind {
    /// A tar, plain or gzip-compressed.
    Tar,
    /// A single gzip-compressed file.
    Gzip,
    /// An archive this fetcher cannot unpack (named for the error).
    Unsupported(&'static str),
    /// Not an archive: kept as it is.
    None,
}

pub(super) fn archive_kind(name: &str) -> ArchiveKind {
    let name = name.to_ascii_lowercase();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if ends(&[".tar", ".tgz", ".tar.gz"]) {
        ArchiveKind::Tar
    } else if ends(&[".tar.bz2", ".tbz2"]) {
        ArchiveKind::Unsupported("bzip2-compressed tar")
    } else if ends(&[".tar.xz", ".txz"]) {
        ArchiveKind::Unsupported("xz-compressed tar")
    } else if ends(&[".zip"]) {
        ArchiveKind::Unsupported("zip")
    } else if ends(&[".gz"]) {
        ArchiveKind::Gzip
    } else {
        ArchiveKind::None
    }
}

/// Fetches every URI into `sandbox`, in order; the first failure stops it.
pub(super) async fn fetch_all(
    uris: &[pb::command_info::Uri],
    sandbox: Option<&Path>,
    logger: &Logger,
) -> Result<(), FetchError> {
    if uris.is_empty() {
        return Ok(());
    }
    let client = http_client();
    for uri in uris {
        let failed = |cause| FetchError {
            uri: uri.value.clone(),
            cause,
        };
        let sandbox = sandbox.ok_or_else(|| failed(FetchCause::NoSandbox))?;
        if uri.cache {
            info!(logger, "the fetcher cache is not supported; fetching directly";
                "uri" => &uri.value);
        }
        let fetched = fetch_one(uri, sandbox, &client, logger)
            .await
            .map_err(failed)?;
        info!(logger, "fetched"; "uri" => &uri.value, "path" => %fetched.display());
    }
    Ok(())
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Fetches one URI; returns the path it was stored at.
async fn fetch_one(
    uri: &pb::command_info::Uri,
    sandbox: &Path,
    client: &HttpClient,
    logger: &Logger,
) -> Result<PathBuf, FetchCause> {
    if uri.executable && uri.extract {
        return Err(FetchCause::ExecutableAndExtract);
    }
    let source = Source::parse(&uri.value)?;
    let components = if uri.output_file.is_empty() {
        vec![OsString::from(file_name(&source)?)]
    } else {
        output_components(&uri.output_file)?
    };
    let Some((name, parents)) = components.split_last() else {
        return Err(FetchCause::NoFileName);
    };
    // Refuses to create directories through a symlink the sandbox may hold.
    let directory = unpack::ensure_directories(sandbox, parents, Path::new(&uri.output_file))
        .map_err(|cause| FetchCause::InvalidOutputFile(uri.output_file.clone(), cause))?;
    let destination = directory.join(name);
    let partial = directory.join(format!(".fetching-{}", uuid::Uuid::new_v4()));
    let downloaded = tokio::time::timeout(FETCH_TIMEOUT, download(&source, &partial, client))
        .await
        .unwrap_or(Err(FetchCause::TimedOut));
    if let Err(cause) = downloaded {
        let _ = fs::remove_file(&partial);
        return Err(cause);
    }
    let mode = if uri.executable {
        EXECUTABLE_MODE
    } else {
        FILE_MODE
    };
    let placed = fs::set_permissions(&partial, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&partial, &destination));
    if let Err(e) = placed {
        let _ = fs::remove_file(&partial);
        return Err(io_error(format!(
            "cannot store it as {}",
            destination.display()
        ))(e));
    }
    if uri.extract {
        let name = name.to_string_lossy().into_owned();
        match archive_kind(&name) {
            ArchiveKind::None => {
                warn!(logger, "not extracting a file that does not look like an archive";
                    "uri" => &uri.value, "file" => &name);
            }
            ArchiveKind::Unsupported(kind) => return Err(FetchCause::UnsupportedArchive(kind)),
            kind => {
                let archive = destination.clone();
                let root = sandbox.to_path_buf();
                let extracted = tokio::task::spawn_blocking(move || match kind {
                    ArchiveKind::Gzip => gunzip(&archive, &root),
                    _ => extract_tar(&archive, &root),
                })
                .await
                .unwrap_or_else(|e| Err(format!("the extraction crashed: {e}")));
                extracted.map_err(|cause| FetchCause::Extract { name, cause })?;
            }
        }
    }
    Ok(destination)
}

/// Streams `source` into the new file `partial`, at most [`MAX_FETCH_BYTES`].
async fn download(source: &Source, partial: &Path, client: &HttpClient) -> Result<(), FetchCause> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial)
        .await
        .map_err(io_error(format!("cannot create {}", partial.display())))?;
    let write_failed = || io_error("cannot write to the sandbox");
    match source {
        Source::Local(path) => {
            let what = || format!("cannot read {}", path.display());
            let input = tokio::fs::File::open(path)
                .await
                .map_err(io_error(what()))?;
            let meta = input.metadata().await.map_err(io_error(what()))?;
            if !meta.is_file() {
                return Err(FetchCause::Io {
                    what: what(),
                    source: io::Error::other("not a regular file"),
                });
            }
            // One byte more than allowed tells a file over the limit.
            let mut limited = tokio::io::AsyncReadExt::take(input, MAX_FETCH_BYTES + 1);
            let copied = tokio::io::copy(&mut limited, &mut file)
                .await
                .map_err(io_error(format!("cannot copy {}", path.display())))?;
            if copied > MAX_FETCH_BYTES {
                return Err(FetchCause::TooLarge);
            }
        }
        Source::Http(uri) => {
            let mut uri = uri.clone();
            let mut redirects = 0;
            let response = loop {
                let response = client
                    .get(uri.clone())
                    .await
                    .map_err(|e| FetchCause::Request(error_chain(&e)))?;
                let status = response.status();
                let location = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok());
                match location {
                    Some(location) if status.is_redirection() => {
                        if redirects == MAX_REDIRECTS {
                            return Err(FetchCause::TooManyRedirects);
                        }
                        redirects += 1;
                        uri = redirect_target(&uri, location)?;
                    }
                    _ if status.is_success() => break response,
                    _ => return Err(FetchCause::HttpStatus(status)),
                }
            };
            let announced = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.parse::<u64>().ok());
            if announced.is_some_and(|length| length > MAX_FETCH_BYTES) {
                return Err(FetchCause::TooLarge);
            }
            let mut body = response.into_body();
            let mut received: u64 = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchCause::Request(error_chain(&e)))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > MAX_FETCH_BYTES {
                    return Err(FetchCause::TooLarge);
                }
                file.write_all(&data).await.map_err(write_failed())?;
            }
        }
    }
    file.flush().await.map_err(write_failed())?;
    file.sync_all().await.map_err(write_failed())?;
    Ok(())
}

/// Where a redirect from `from` to `location` leads; only to http.
fn redirect_target(from: &hyper::Uri, location: &str) -> Result<hyper::Uri, FetchCause> {
    let authority = from.authority().map(|a| a.as_str()).unwrap_or_default();
    let absolute = if location.contains("://") {
        location.to_string()
    } else if location.starts_with("//") {
        format!("http:{location}")
    } else {
        // A path, absolute or relative to the directory of the current one.
        let (path, query) = match location.find(['?', '#']) {
            Some(i) => location.split_at(i),
            None => (location, ""),
        };
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            let current = from.path();
            format!(
                "{}{path}",
                &current[..current.rfind('/').map_or(0, |i| i + 1)]
            )
        };
        format!("http://{authority}{}{query}", remove_dot_segments(&joined))
    };
    match Source::parse(&absolute) {
        Ok(Source::Http(uri)) => Ok(uri),
        Err(FetchCause::HttpsUnsupported) => Err(FetchCause::HttpsUnsupported),
        _ => Err(FetchCause::BadRedirect(location.to_string())),
    }
}

/// `path` without its `.` and `..` segments (RFC 3986, 5.2.4); `..` stops at the
/// root.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    kept.pop();
                }
                // `a/..` and `a/.` name a directory: keep the trailing slash.
                if last {
                    kept.push("");
                }
            }
            segment => kept.push(segment),
        }
    }
    format!("/{}", kept.join("/"))
}

/// An error and its causes, as one line (hyper's own message is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// Unpacks the tar (plain or gzip-compressed) at `archive` into `root`: directories,
/// regular files, symlinks and hard links, with their permission bits (set-id bits
/// dropped). Paths are checked by the image store's tar walk.
fn extract_tar(archive: &Path, root: &Path) -> Result<(), String> {
    let file = fs::File::open(archive).map_err(|e| format!("cannot open it: {e}"))?;
    let reader = unpack::decompress(BufReader::new(file))?;
    // Directory modes are set last: a read-only directory could not be filled.
    let mut directory_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut tracker = unpack::walk_entries(reader, root, "it ", |entry, checked| {
        let unpack::CheckedEntry {
            entry_path,
            parent,
            file_name,
        } = checked;
        let path = parent.join(file_name);
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| format!("entry '{}' has a bad mode: {e}", entry_path.display()))?
            & 0o777;
        let mtime = header.mtime().unwrap_or(0);
        match header.entry_type() {
            EntryType::Directory => {
                unpack::ensure_directories(&parent, &[file_name.to_os_string()], entry_path)?;
                directory_modes.push((path, mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                unpack::write_regular(entry, &path, entry_path)?;
                unpack::chmod(&path, mode)?;
                unpack::set_mtime(&path, mtime)?;
            }
            EntryType::Symlink => {
                let target = unpack::link_target(entry, entry_path, "symlink")?;
                unpack::clear_for(&path, false)?;
                // Nothing here follows it: later entries and fetches refuse to
                // write through a symlink.
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| format!("cannot create the symlink {}: {e}", path.display()))?;
            }
            EntryType::Link => {
                let target = unpack::link_target(entry, entry_path, "hard link")?;
                let components = unpack::relative_components(&target)?;
                let Some((target_name, target_parents)) = components.split_last() else {
                    return Err(format!(
                        "hard link '{}' points at the archive root",
                        entry_path.display()
                    ));
                };
                let target_path =
                    unpack::ensure_directories(root, target_parents, &target)?.join(target_name);
                match fs::symlink_metadata(&target_path) {
                    Ok(meta) if meta.is_file() => {}
                    _ => {
                        return Err(format!(
                            "hard link '{}' points at '{}', which is not a file extracted before it",
                            entry_path.display(),
                            target.display()
                        ));
                    }
                }
                if target_path != path {
                    unpack::clear_for(&path, false)?;
                    fs::hard_link(&target_path, &path).map_err(|e| {
                        format!("cannot create the hard link {}: {e}", path.display())
                    })?;
                }
            }
            // Devices and fifos have no place in a download; pax and GNU long-name
            // records are folded into their entries by the tar reader.
            _ => {}
        }
        Ok(())
    })?;
    for (path, mode) in directory_modes.iter().rev() {
        unpack::chmod(path, *mode)?;
    }
    // Read to the end so that the gzip trailer's checksum is verified.
    io::copy(&mut tracker.inner, &mut io::sink())
        .map_err(|e| format!("it is corrupt after its last entry: {e}"))?;
    Ok(())
}

/// Decompresses the `.gz` file `archive` into `root`, under its name without `.gz`
/// (as Mesos runs `gunzip -c` into the sandbox).
fn gunzip(archive: &Path, root: &Path) -> Result<(), String> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.get(..n.len().saturating_sub(3)))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or("its name without '.gz' is empty")?;
    let input = fs::File::open(archive).map_err(|e| format!("cannot open it: {e}"))?;
    let path = root.join(name);
    unpack::clear_for(&path, false)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(input));
    let written = io::copy(&mut decoder.take(MAX_FETCH_BYTES + 1), &mut output)
        .map_err(|e| format!("cannot decompress it: {e}"))?;
    if written > MAX_FETCH_BYTES {
        drop(output);
        let _ = fs::remove_file(&path);
        return Err(format!(
            "it decompresses to more than {MAX_FETCH_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(value: &str) -> Result<String, FetchCause> {
        file_name(&Source::parse(value)?)
    }

    #[test]
    fn the_file_name_is_the_last_component_of_the_uri_path() {
        assert_eq!(name_of("http://host/a/b/tool").unwrap(), "tool");
        assert_eq!(
            name_of("http://host:8080/x.tar.gz?token=1#f").unwrap(),
            "x.tar.gz"
        );
        assert_eq!(name_of("file:///opt/data/file.txt").unwrap(), "file.txt");
        assert_eq!(name_of("/opt/data/file.txt").unwrap(), "file.txt");
        for nameless in [
            "http://host",
            "http://host/",
            "http://host/dir/",
            "/opt/..",
            "/",
        ] {
            assert!(
                matches!(name_of(nameless), Err(FetchCause::NoFileName)),
                "{nameless}"
            );
        }
    }

    #[test]
    fn schemes_are_read_and_the_unsupported_ones_named() {
        assert!(matches!(
            Source::parse("http://127.0.0.1:80/f").unwrap(),
            Source::Http(uri) if uri.port_u16() == Some(80) && uri.path() == "/f"
        ));
        assert_eq!(
            Source::parse(" file:///tmp/f ").unwrap(),
            Source::Local(PathBuf::from("/tmp/f"))
        );
        assert_eq!(
            Source::parse("file://localhost/tmp/f").unwrap(),
            Source::Local(PathBuf::from("/tmp/f"))
        );
        let https = Source::parse("https://host/f").unwrap_err();
        assert_eq!(
            https.to_string(),
            "https is not supported (use http://, file:// or an absolute path)"
        );
        assert!(matches!(
            Source::parse("hdfs://nn/f"),
            Err(FetchCause::UnsupportedScheme(s)) if s == "hdfs"
        ));
        assert!(matches!(
            Source::parse("relative/f"),
            Err(FetchCause::InvalidUri(_))
        ));
        assert!(matches!(
            Source::parse("file://host/f"),
            Err(FetchCause::InvalidUri(_))
        ));
        assert!(matches!(
            Source::parse("http:///f"),
            Err(FetchCause::InvalidUri(_))
        ));
    }

    #[test]
    fn redirects_resolve_against_the_current_uri_and_stay_on_http() {
        let from: hyper::Uri = "http://h:1/a/b?q".parse().unwrap();
        let to = |l: &str| redirect_target(&from, l).map(|u| u.to_string());
        assert_eq!(to("/c").unwrap(), "http://h:1/c");
        assert_eq!(to("c").unwrap(), "http://h:1/a/c");
        assert_eq!(to("//other/d").unwrap(), "http://other/d");
        assert_eq!(to("../x/./y?z=1").unwrap(), "http://h:1/x/y?z=1");
        assert_eq!(to("/../../x").unwrap(), "http://h:1/x");
        assert_eq!(to("d/..").unwrap(), "http://h:1/a/");
        assert_eq!(to("http://x/y").unwrap(), "http://x/y");
        assert!(matches!(
            to("https://x/y"),
            Err(FetchCause::HttpsUnsupported)
        ));
        assert!(matches!(
            to("file:///etc/passwd"),
            Err(FetchCause::BadRedirect(_))
        ));
    }

    #[test]
    fn archives_are_told_from_their_names() {
        assert_eq!(archive_kind("a.tar"), ArchiveKind::Tar);
        assert_eq!(archive_kind("a.TGZ"), ArchiveKind::Tar);
        assert_eq!(archive_kind("a.tar.gz"), ArchiveKind::Tar);
        assert_eq!(archive_kind("a.gz"), ArchiveKind::Gzip);
        assert!(matches!(archive_kind("a.zip"), ArchiveKind::Unsupported(_)));
        assert!(matches!(
            archive_kind("a.tar.bz2"),
            ArchiveKind::Unsupported(_)
        ));
        assert_eq!(archive_kind("a.txt"), ArchiveKind::None);
    }

    #[test]
    fn output_files_stay_in_the_sandbox() {
        assert_eq!(output_components("./d/f").unwrap().len(), 2);
        for bad in ["/etc/passwd", "../f", "d/../../f", "", "."] {
            assert!(output_components(bad).is_err(), "{bad}");
        }
    }

    /// A tar entry for [`tar_with`]: name, type, content, link target.
    type TestEntry<'a> = (&'a str, EntryType, &'a [u8], Option<&'a str>);

    /// A tar of `entries`, their names written raw so that unsafe ones can be
    /// built.
    fn tar_with(entries: &[TestEntry<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn extract(bytes: &[u8]) -> (tempfile::TempDir, Result<(), String>) {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir(&sandbox).unwrap();
        let archive = dir.path().join("a.tar");
        fs::write(&archive, bytes).unwrap();
        let result = extract_tar(&archive, &sandbox);
        (dir, result)
    }

    #[test]
    fn a_safe_archive_is_extracted_with_its_modes() {
        let (dir, result) = extract(&tar_with(&[
            ("d/", EntryType::Directory, b"", None),
            ("d/run.sh", EntryType::Regular, b"echo hi", None),
            ("link", EntryType::Symlink, b"", Some("d/run.sh")),
            ("hard", EntryType::Link, b"", Some("d/run.sh")),
        ]));
        result.unwrap();
        let sandbox = dir.path().join("sandbox");
        let script = sandbox.join("d/run.sh");
        assert_eq!(fs::read(&script).unwrap(), b"echo hi");
        assert_eq!(
            fs::metadata(&script).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::read(sandbox.join("link")).unwrap(), b"echo hi");
        assert_eq!(fs::read(sandbox.join("hard")).unwrap(), b"echo hi");
    }

    #[test]
    fn unsafe_archives_are_refused() {
        let cases: [(&[TestEntry<'_>], &str); 4] = [
            (&[("../escape", EntryType::Regular, b"x", None)], "escapes"),
            (&[("/abs", EntryType::Regular, b"x", None)], "absolute"),
            (
                &[
                    ("out", EntryType::Symlink, b"", Some("..")),
                    ("out/escape", EntryType::Regular, b"x", None),
                ],
                "symlink",
            ),
            (
                &[("h", EntryType::Link, b"", Some("../../etc/passwd"))],
                "escapes",
            ),
        ];
        for (entries, expected) in cases {
            let (dir, result) = extract(&tar_with(entries));
            let error = result.expect_err(expected);
            assert!(error.contains(expected), "{error}");
            assert!(!dir.path().join("escape").exists());
        }
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let bytes = tar_with(&[("f", EntryType::Regular, &[7u8; 2048], None)]);
        let (_dir, result) = extract(&bytes[..1024]);
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn local_files_are_copied_renamed_and_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir(&sandbox).unwrap();
        let source = dir.path().join("tool");
        fs::write(&source, b"#!/bin/sh\n").unwrap();
        let logger = Logger::root(slog::Discard, slog::o!());
        let uris = [
            pb::command_info::Uri {
                value: source.display().to_string(),
                executable: true,
                ..Default::default()
            },
            pb::command_info::Uri {
                value: format!("file://{}", source.display()),
                output_file: "bin/renamed".into(),
                ..Default::default()
            },
        ];
        fetch_all(&uris, Some(&sandbox), &logger).await.unwrap();
        let mode = fs::metadata(sandbox.join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, EXECUTABLE_MODE);
        assert_eq!(
            fs::read(sandbox.join("bin/renamed")).unwrap(),
            b"#!/bin/sh\n"
        );
        // Nothing partial is left behind.
        let names: Vec<_> = fs::read_dir(&sandbox)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let missing = [pb::command_info::Uri {
            value: dir.path().join("missing").display().to_string(),
            ..Default::default()
        }];
        let error = fetch_all(&missing, Some(&sandbox), &logger)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("Failed to fetch '/"), "{error}");
        assert!(error.contains("No such file"), "{error}");

        let both = [pb::command_info::Uri {
            value: source.display().to_string(),
            executable: true,
            extract: true,
            ..Default::default()
        }];
        assert!(matches!(
            fetch_all(&both, Some(&sandbox), &logger).await,
            Err(FetchError {
                cause: FetchCause::ExecutableAndExtract,
                ..
            })
        ));
    }
}
