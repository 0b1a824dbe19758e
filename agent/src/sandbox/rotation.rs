//! Size-based rotation of a sandbox's `stdout`/`stderr`, and reading them back as
//! one logical stream whose offsets survive rotation (what Mesos'
//! `LogrotateContainerLogger` and `/files/read` do together).
//!
//! A stream `NAME` in a directory is stored as:
//!
//! ```text
//! NAME            the newest bytes (at most max_size)
//! NAME.1 .. NAME.k  older bytes, NAME.1 the newest of them; k <= max_files
//! .NAME.offset    logical offset of NAME's first byte (absent: 0), replaced atomically
//! .NAME.lock      flock(2) target: exclusive while rotating, shared while a reader
//!                 opens the files, so a reader never sees a half-done rotation
//! ```
//!
//! The logical offset of a byte is its position in everything ever written to the
//! stream, so a reader that follows the stream keeps its place when files rotate;
//! bytes of files deleted by rotation are simply no longer available.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Mesos' `LogrotateContainerLogger` default: 10 MiB per file.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the current one.
pub const DEFAULT_MAX_FILES: u32 = 5;
/// Upper bound on the rotated files kept, so a reader's walk over them is bounded.
pub const MAX_FILES_LIMIT: u32 = 1000;
/// How long a reader waits for a rotation in progress before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How a stream rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// A file is rotated before it would grow past this many bytes. At least 1.
    pub max_size: u64,
    /// Rotated files kept (`NAME.1..NAME.max_files`); older bytes are deleted.
    /// 1..=[`MAX_FILES_LIMIT`].
    pub max_files: u32,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl RotationPolicy {
    /// A policy, or why it is unusable.
    pub fn new(max_size: u64, max_files: u32) -> Result<Self, String> {
        if max_size == 0 {
            return Err("the container log max size must be at least 1 byte".into());
        }
        if !(1..=MAX_FILES_LIMIT).contains(&max_files) {
            return Err(format!(
                "the container log max files must be between 1 and {MAX_FILES_LIMIT}, not {max_files}"
            ));
        }
        Ok(Self {
            max_size,
            max_files,
        })
    }
}

fn rotated_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    dir.join(format!("{name}.{index}"))
}

fn offset_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.offset"))
}

fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.lock"))
}

/// Holds an flock(2) until dropped (closing the file releases it).
struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn exclusive(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        // SAFETY: flock on a descriptor we own; blocks until granted.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(file))
    }

    /// A shared lock, waiting at most [`LOCK_WAIT`] for a writer to finish rotating.
    fn shared(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
                return Ok(Self(file));
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error);
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the log is being rotated; try again",
                ));
            }
            // Rotation is a few renames: it ends long before a scheduler tick.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `path` as a new regular file, replacing whatever entry was there
/// without following it: the sandbox is the task's to write, and a symlink it
/// planted must not make the executor overwrite a file outside.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // O_EXCL: fails on anything (a symlink included) created there meanwhile.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?
        .write_all(bytes)
}

/// Longest `.NAME.offset` read: a decimal u64 and a newline, with room to spare.
const OFFSET_FILE_MAX: u64 = 64;

/// Reads `.NAME.offset`; a missing file means nothing was rotated yet. Opened like
/// the stream files (no symlink, no FIFO) and read boundedly, so whatever the task
/// put there cannot hang or exhaust the reader.
fn read_start(dir: &Path, name: &str) -> io::Result<u64> {
    let path = offset_path(dir, name);
    let Some(file) = open_for_reading(&path)? else {
        return Ok(0);
    };
    let mut text = String::new();
    file.take(OFFSET_FILE_MAX)
        .read_to_string(&mut text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold an offset", path.display()),
        )
    })
}

/// The writing end of one rotated stream. One per stream per process: two writers
/// of the same stream would rotate under each other.
pub struct RotatingFile {
    /// Directory holding the stream's files.
    dir: PathBuf,
    /// `stdout` or `stderr` (one path component).
    name: String,
    policy: RotationPolicy,
    /// The current file, opened for appending.
    file: File,
    /// Bytes in `file`. Invariant: <= `policy.max_size` once anything was written
    /// through this writer (a larger file found at open is rotated first).
    size: u64,
    /// Logical offset of `file`'s first byte (as in `.NAME.offset`).
    start: u64,
}

impl RotatingFile {
    /// Opens (creating) `dir/name` for appending, keeping what is already there.
    pub fn open(dir: &Path, name: &str, policy: RotationPolicy) -> io::Result<Self> {
        let file = open_current(&dir.join(name))?;
        let size = file.metadata()?.len();
        let start = read_start(dir, name)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            policy,
            file,
            size,
            start,
        })
    }

    /// The logical offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Appends `bytes`, rotating whenever the current file is full, so no file
    /// exceeds the maximum size.
    pub fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.size >= self.policy.max_size {
                self.rotate()?;
            }
            let room = usize::try_from(self.policy.max_size - self.size).unwrap_or(usize::MAX);
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.file.write_all(now)?;
            self.size += now.len() as u64;
            bytes = later;
        }
        Ok(())
    }

    /// NAME → NAME.1 → ... → NAME.max_files → deleted; then a new, empty NAME.
    fn rotate(&mut self) -> io::Result<()> {
        let _lock = FileLock::exclusive(&lock_path(&self.dir, &self.name))?;
        let oldest = rotated_path(&self.dir, &self.name, self.policy.max_files);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for index in (1..self.policy.max_files).rev() {
            let from = rotated_path(&self.dir, &self.name, index);
            match std::fs::rename(&from, rotated_path(&self.dir, &self.name, index + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let current = self.dir.join(&self.name);
        std::fs::rename(&current, rotated_path(&self.dir, &self.name, 1))?;
        let start = self.start + self.size;
        let staged = self.dir.join(format!(".{}.offset.new", self.name));
        write_new_file(&staged, format!("{start}\n").as_bytes())?;
        std::fs::rename(&staged, offset_path(&self.dir, &self.name))?;
        self.file = open_current(&current)?;
        self.start = start;
        self.size = 0;
        Ok(())
    }
}

fn open_current(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a stream file for reading without following a symlink: the sandbox is
/// writable by the task, which must not make the agent serve files outside it.
fn open_for_reading(path: &Path) -> io::Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is a symbolic link; not served", path.display()),
            ));
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a regular file; not served", path.display()),
        ));
    }
    Ok(Some(file))
}

/// Bytes of a stream read at a logical offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// Logical offset of `data[0]`: the offset asked for, moved up to
    /// `first_available` when older bytes were already deleted, or down to `end`.
    pub offset: u64,
    /// At most the length asked for.
    pub data: Vec<u8>,
    /// Logical offset of the oldest byte still stored.
    pub first_available: u64,
    /// Logical offset just past the newest byte (the stream's logical size).
    pub end: u64,
}

impl LogChunk {
    /// Where the next read should start.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// One stored file of a stream, opened.
struct Segment {
    file: File,
    /// Logical offset of its first byte.
    start: u64,
    len: u64,
}

/// Reads up to `length` bytes of stream `name` in `dir` from logical `offset`
/// (`None`: the end, as Mesos' `offset=-1`, to learn the size). A stream that was
/// never written reads as empty.
pub fn read(dir: &Path, name: &str, offset: Option<u64>, length: usize) -> io::Result<LogChunk> {
    let segments = {
        let _lock = FileLock::shared(&lock_path(dir, name))?;
        let start = read_start(dir, name)?;
        let mut newest_first = Vec::new();
        if let Some(file) = open_for_reading(&dir.join(name))? {
            let len = file.metadata()?.len();
            newest_first.push(Segment { file, start, len });
        }
        let mut next_start = start;
        for index in 1..=MAX_FILES_LIMIT {
            let Some(file) = open_for_reading(&rotated_path(dir, name, index))? else {
                break;
            };
            let len = file.metadata()?.len();
            next_start = next_start.saturating_sub(len);
            newest_first.push(Segment {
                file,
                start: next_start,
                len,
            });
        }
        newest_first.reverse();
        newest_first
    };
    let first_available = segments.first().map_or(0, |s| s.start);
    let end = segments.last().map_or(0, |s| s.start + s.len);
    let offset = offset.unwrap_or(end).clamp(first_available, end);
    let mut chunk = LogChunk {
        offset,
        data: Vec::new(),
        first_available,
        end,
    };
    let mut position = offset;
    for mut segment in segments {
        if chunk.data.len() >= length {
            break;
        }
        let segment_end = segment.start + segment.len;
        if position >= segment_end || position < segment.start {
            continue;
        }
        let want = (length - chunk.data.len()).min((segment_end - position) as usize);
        segment
            .file
            .seek(SeekFrom::Start(position - segment.start))?;
        let before = chunk.data.len();
        (&mut segment.file)
            .take(want as u64)
            .read_to_end(&mut chunk.data)?;
        let got = chunk.data.len() - before;
        position += got as u64;
        if got < want {
            // The file is shorter than it was a moment ago (truncated by hand):
            // stop rather than skip over the gap.
            break;
        }
    }
    chunk.end = chunk.end.max(chunk.next_offset());
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn policy(max_size: u64, max_files: u32) -> RotationPolicy {
        RotationPolicy::new(max_size, max_files).unwrap()
    }

    fn sizes(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn files_never_exceed_the_max_size_and_only_max_files_are_kept() {
        let dir = temp_dir();
        let mut writer = RotatingFile::open(dir.path(), "stdout", policy(10, 3)).unwrap();
        // 57 bytes in odd pieces: 5 full files and 7 bytes in the current one.
        for piece in [&b"abc"[..], &[b'x'; 23], b"0123456789", &[b'y'; 21]] {
            writer.write_all(piece).unwrap();
        }
        assert_eq!(writer.end(), 57);
        assert_eq!(
            sizes(dir.path()),
            vec![
                ("stdout".into(), 7),
                ("stdout.1".into(), 10),
                ("stdout.2".into(), 10),
                ("stdout.3".into(), 10),
            ]
        );
        // The two oldest files (bytes 0..20) are gone.
        let chunk = read(dir.path(), "stdout", Some(0), 1000).unwrap();
        assert_eq!(chunk.first_available, 20);
        assert_eq!(chunk.offset, 20);
        assert_eq!(chunk.end, 57);
        assert_eq!(chunk.data.len(), 37);
        let mut newest = b"0123456789".to_vec();
        newest.extend_from_slice(&[b'y'; 21]);
        assert!(chunk.data.ends_with(&newest));
    }

    #[test]
    fn offsets_are_stable_across_rotation() {
        let dir = temp_dir();
        let mut writer = RotatingFile::open(dir.path(), "stdout", policy(8, 2)).unwrap();
        let mut expected = Vec::new();
        let mut read_back = Vec::new();
        let mut offset = 0;
        for line in 0..40 {
            let text = format!("line {line}\n");
            writer.write_all(text.as_bytes()).unwrap();
            expected.extend_from_slice(text.as_bytes());
            // A follower reading small pieces after every write sees every byte once,
            // in order, although the files rotate under it many times.
            loop {
                let chunk = read(dir.path(), "stdout", Some(offset), 5).unwrap();
                assert_eq!(chunk.offset, offset, "no byte was skipped");
                if chunk.data.is_empty() {
                    break;
                }
                offset = chunk.next_offset();
                read_back.extend_from_slice(&chunk.data);
            }
        }
        assert_eq!(read_back, expected);
        // A writer reopened on the same files (another process) continues the offsets.
        drop(writer);
        let mut writer = RotatingFile::open(dir.path(), "stdout", policy(8, 2)).unwrap();
        assert_eq!(writer.end(), expected.len() as u64);
        writer.write_all(b"more").unwrap();
        let chunk = read(dir.path(), "stdout", Some(offset), 100).unwrap();
        assert_eq!(chunk.data, b"more");
    }

    #[test]
    fn the_end_offset_and_out_of_range_offsets() {
        let dir = temp_dir();
        // Nothing written yet: empty at 0.
        let chunk = read(dir.path(), "stderr", None, 10).unwrap();
        assert_eq!((chunk.offset, chunk.end, chunk.data.len()), (0, 0, 0));
        let mut writer = RotatingFile::open(dir.path(), "stderr", policy(4, 1)).unwrap();
        writer.write_all(b"0123456789").unwrap();
        let chunk = read(dir.path(), "stderr", None, 10).unwrap();
        assert_eq!((chunk.offset, chunk.end), (10, 10));
        assert!(chunk.data.is_empty());
        let chunk = read(dir.path(), "stderr", Some(1000), 10).unwrap();
        assert_eq!(chunk.offset, 10, "past the end reads at the end");
        let chunk = read(dir.path(), "stderr", Some(5), 2).unwrap();
        assert_eq!(chunk.data, b"56");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = temp_dir();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("stdout")).unwrap();
        let err = read(dir.path(), "stdout", Some(0), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(RotatingFile::open(dir.path(), "stdout", RotationPolicy::default()).is_err());
    }

    #[test]
    fn rotation_does_not_write_through_a_planted_symlink() {
        let dir = temp_dir();
        let outside = temp_dir();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".stdout.offset.new")).unwrap();
        let mut writer = RotatingFile::open(dir.path(), "stdout", policy(4, 1)).unwrap();
        writer.write_all(b"0123456789").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            read(dir.path(), "stdout", Some(0), 100).unwrap().data,
            b"456789"
        );
    }

    #[test]
    fn an_offset_file_that_is_no_regular_file_is_refused() {
        let dir = temp_dir();
        // A FIFO would block the reader forever, /dev/zero would never end.
        let fifo = std::ffi::CString::new(
            dir.path()
                .join(".stdout.offset")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = read(dir.path(), "stdout", Some(0), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        std::fs::remove_file(dir.path().join(".stdout.offset")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(".stderr.offset")).unwrap();
        let err = read(dir.path(), "stderr", Some(0), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(RotatingFile::open(dir.path(), "stderr", RotationPolicy::default()).is_err());
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(RotationPolicy::new(0, 5).is_err());
        assert!(RotationPolicy::new(10, 0).is_err());
        assert!(RotationPolicy::new(10, MAX_FILES_LIMIT + 1).is_err());
    }
}
