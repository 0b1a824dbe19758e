//! Durable files: whole files replaced atomically, and append-only record logs.
//!
//! A record log is a sequence of frames `[len: u32 LE][crc32: u32 LE][payload]`, each
//! appended with one write and made durable with fsync before anyone relies on it
//! (right away with [`RecordLog::append`], or for many records at once with
//! [`RecordLog::write`] then [`RecordLog::sync_data`], see `journal`). A
//! crash can leave the last frame half written, so a reader stops at the first frame
//! that is short or fails its checksum and reports where the valid prefix ends; the
//! writer cuts the file there before appending again, so a torn tail can never hide
//! records written after it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest payload a frame may carry; a longer length field is treated as corruption.
pub const MAX_RECORD_BYTES: usize = agora_core::limits::MAX_MESSAGE_BYTES;

const FRAME_HEADER_BYTES: usize = 8;

/// What [`read_records`] found in a log.
#[derive(Debug, Default, PartialEq)]
pub struct LogContents {
    /// Every intact record, in the order they were appended.
    pub records: Vec<Vec<u8>>,
    /// Length of the intact prefix; bytes after it are a torn or corrupt tail.
    pub valid_len: u64,
    /// True when bytes after `valid_len` were ignored.
    pub torn_tail: bool,
}

/// Reads every intact record of the log at `path`.
pub fn read_records(path: &Path) -> io::Result<LogContents> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut contents = LogContents::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let Some(header) = bytes.get(offset..offset + FRAME_HEADER_BYTES) else {
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES {
            break;
        }
        let start = offset + FRAME_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if crc32(payload) != checksum {
            break;
        }
        contents.records.push(payload.to_vec());
        offset = start + len;
    }
    contents.valid_len = offset as u64;
    contents.torn_tail = offset < bytes.len();
    Ok(contents)
}

/// An open record log, positioned at the end of its intact prefix.
#[derive(Debug)]
pub struct RecordLog {
    /// Opened for writing; every frame is appended at `len`.
    file: File,
    /// Where the log lives, for error messages.
    path: PathBuf,
    /// Bytes of intact frames in the file; a failed append is cut back to this.
    len: u64,
}

impl RecordLog {
    /// Creates an empty log (and its parent directories), replacing any old file,
    /// and makes it durable.
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let log = Self::create_unsynced(path)?;
        log.file.sync_all()?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(log)
    }

    /// Creates an empty log in an existing directory, replacing any old file. Not yet
    /// durable: the caller syncs the file ([`Self::sync_all`]) and its directory.
    pub fn create_unsynced(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: 0,
        })
    }

    /// Opens an existing log, returns its intact records and cuts off a torn tail.
    pub fn open(path: &Path) -> io::Result<(Self, LogContents)> {
        let contents = read_records(path)?;
        let file = OpenOptions::new().write(true).open(path)?;
        if contents.torn_tail {
            file.set_len(contents.valid_len)?;
            file.sync_all()?;
        }
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
                len: contents.valid_len,
            },
            contents,
        ))
    }

    /// Opens a log for appending after its last byte, without reading it: for a log
    /// that [`Self::open`] already read (and cut) when the agent started.
    pub fn open_for_append(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Appends one record and fsyncs it. On failure the file is cut back so the log
    /// stays readable.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write(payload)?;
        self.sync_data()
    }

    /// Appends one record without waiting for the disk: it is durable once
    /// [`Self::sync_data`] (or [`Self::sync_all`]) returns. On failure the file is cut
    /// back so the log stays readable.
    pub fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record of {} bytes exceeds the limit of {MAX_RECORD_BYTES}",
                    payload.len()
                ),
            ));
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let written = self.file.write_all_at(&frame, self.len);
        if written.is_err() {
            // Best effort: a half-written frame would otherwise hide later appends.
            let _ = self.file.set_len(self.len);
        }
        written?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Makes every record written so far durable.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes the records and the file's metadata durable (for a new file).
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Replaces `path` with `bytes` atomically: a reader sees the old or the new
/// contents, never a mix, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = parent.join(tmp_name);
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    sync_dir(parent)
}

/// Writes `bytes` to a new (or truncated) file at `path` and makes them durable;
/// the directory entry is not.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a directory's entries (new, renamed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// CRC-32 (IEEE 802.3), the checksum of every frame.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-checkpoint-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = temp_dir();
        let path = dir.join("log");
        let mut log = RecordLog::create(&path).unwrap();
        log.append(b"one").unwrap();
        log.append(b"two").unwrap();
        log.append(b"three").unwrap();
        drop(log);

        // A crash in the middle of the third append.
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 2]).unwrap();

        let (mut log, contents) = RecordLog::open(&path).unwrap();
        assert_eq!(contents.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(contents.torn_tail);
        log.append(b"four").unwrap();

        let contents = read_records(&path).unwrap();
        assert_eq!(
            contents.records,
            vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
        );
        assert!(!contents.torn_tail);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_frame_ends_the_log() {
        let dir = temp_dir();
        let path = dir.join("log");
        let mut log = RecordLog::create(&path).unwrap();
        log.append(b"good").unwrap();
        log.append(b"flipped").unwrap();
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let contents = read_records(&path).unwrap();
        assert_eq!(contents.records, vec![b"good".to_vec()]);
        assert!(contents.torn_tail);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = temp_dir();
        let path = dir.join("nested/agent_id");
        write_atomic(&path, b"a").unwrap();
        write_atomic(&path, b"b").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"b");
        fs::remove_dir_all(dir).unwrap();
    }
}
